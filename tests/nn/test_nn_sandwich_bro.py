"""Sandwich and BRO layers: their algebra, the eval-mode bound, export, and a trained model
whose certificates survive PGD. (The shared layer checks, 1-Lipschitz at init and after
training in both modes and the state-dict round trip, are in test_nn_layers.py.)"""

import pytest
import torch
from nn_helpers import REL_TOL, assert_one_lipschitz, jacobian_norm, train_a_little

from robustlab.certify.attacks import check_soundness
from robustlab.certify.evaluate import certify_points
from robustlab.nn.lipschitz import BROConv2d, BROLinear, SandwichConv2d, SandwichLinear
from robustlab.nn.lipschitz.bro import block_reflector
from robustlab.nn.lipschitz.fourier import FourierConv2d, spectral_norm_bound
from robustlab.nn.lipschitz.sandwich import sandwich_factors

CONVS = {
    "sandwich": lambda size: SandwichConv2d(4, 4, input_size=size),
    "bro": lambda size: BROConv2d(4, 4, input_size=size),
}


def _randomised(layer: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        layer.weight.normal_()
    return layer


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_sandwich_factors_are_a_coisometry(dtype):
    weight = torch.randn(5, 3, 7, dtype=dtype)  # a batch of X = [X_A X_B], m = 3, n = 4
    factors = sandwich_factors(weight)
    a, b = factors[..., :3], factors[..., 3:]
    gram = a @ a.mH + b @ b.mH
    torch.testing.assert_close(gram, torch.eye(3, dtype=dtype).expand_as(gram), rtol=0, atol=1e-12)


def test_block_reflector_has_r_eigenvalues_minus_one_and_the_rest_one():
    v = torch.randn(8, 3, dtype=torch.float64)
    w = block_reflector(v)
    torch.testing.assert_close(w, w.t(), rtol=0, atol=1e-12)
    values = torch.linalg.eigvalsh(w)
    # the 1e-5 Gram regularisation pulls the -1 eigenvalues in by about 2e-5 relative
    torch.testing.assert_close(values[:3], -torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-3)
    torch.testing.assert_close(values[3:], torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert values.abs().max() <= 1 + 1e-12
    torch.testing.assert_close(block_reflector(torch.zeros(4, 2)), torch.eye(4))  # V = 0 stays finite


def test_bro_dense_starts_as_a_channel_sign_flip_and_conv_mixes_channels():
    x = torch.randn(2, 6, 5, 5)
    expected = torch.cat((-x[:, :3], x[:, 3:]), dim=1)  # up to the 2e-5 of the Gram regularisation
    torch.testing.assert_close(BROLinear(6, 6)(x[:, :, 0, 0]), expected[:, :, 0, 0], rtol=1e-4, atol=1e-5)
    one_channel = torch.zeros(1, 6, 5, 5)
    one_channel[:, 0] = torch.randn(5, 5)  # a grey image after ZeroChannelConcatenation
    spread = BROConv2d(6, 6)(one_channel)[:, 1:].norm() / one_channel.norm()
    assert spread > 0.3  # the Dirac V kept it in channel 0, where training found no gradient


def test_bro_conv_trains_with_the_low_rank_form_and_evaluates_the_formed_reflector():
    layer = _randomised(BROConv2d(5, 3, rank=2, input_size=(6, 4)))
    x = torch.randn(2, 5, 6, 4)
    trained = layer(x)
    torch.testing.assert_close(layer.eval()(x), trained, rtol=1e-4, atol=1e-5)


class _RoundsHigh(torch.nn.Module):
    """Test-only: a transform whose result is 1% too large, as an inexact solve might be."""

    def _compute_factors(self, size):
        return 1.01 * super()._compute_factors(size)

    def _compute_matrix(self, size):
        return 1.01 * super()._compute_matrix(size)


@pytest.mark.parametrize(
    "base, args, shape, lipschitz_factor",
    [
        (SandwichLinear, (5, 5), (5,), 1.01**2),  # the layer is ||[A B]||^2-Lipschitz
        (SandwichConv2d, (3, 3, 3, True, (4, 4)), (3, 4, 4), 1.01**2),
        (BROLinear, (5, 5), (5,), 1.01),  # (BROConv2d trains without forming W; it evaluates as BROLinear)
    ],
)
def test_evaluation_divides_by_the_exact_bound_instead_of_trusting_the_transform(base, args, shape, lipschitz_factor):
    layer = _randomised(type("Inexact", (_RoundsHigh, base), {})(*args))
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.fill_(100.0)  # every unit of a sandwich layer active: its Jacobian is linear in [A B]
    x = torch.randn(1, *shape)
    inexact = jacobian_norm(layer, x)  # training mode computes the inexact transform
    layer.eval()
    # float32: the float64 layer's operator (norm <= 1, what certification uses) rounded once
    assert layer.lipschitz_bound() == 1.0 and 1 - 1e-5 < layer.exact_bound() <= 1 + 4 * torch.finfo().eps
    assert inexact == pytest.approx(lipschitz_factor * jacobian_norm(layer, x), rel=1e-4)
    assert_one_lipschitz(layer, shape)


@pytest.mark.parametrize("family", sorted(CONVS))
def test_the_bound_is_above_the_exact_norm_and_one_in_float64(family):
    layer = _randomised(CONVS[family]((5, 5))).double().eval()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    bound = layer.exact_bound()
    assert 0.99 < bound <= 1.0 + 1e-12
    assert jacobian_norm(layer, x) <= bound * (1 + 1e-12)
    raw = layer._compute_factors((5, 5)) if family == "sandwich" else layer._compute_matrix((5, 5))
    assert abs(spectral_norm_bound(raw) - 1) < 1e-12  # float64 leaves nothing to normalise


def _power_iteration(layer: torch.nn.Module, x: torch.Tensor, steps: int = 100) -> float:
    """sqrt of the largest eigenvalue of J^T J at ``x``, by power iteration through jvp/vjp."""
    _, vjp = torch.func.vjp(layer, x)
    v = torch.randn_like(x)
    for _ in range(steps):
        v = v / v.norm()
        _, jv = torch.func.jvp(layer, (x,), (v,))
        v = vjp(jv)[0]
    return float(v.detach().norm().sqrt())


@pytest.mark.parametrize("family", sorted(CONVS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_power_iteration_on_a_trained_layer_at_a_larger_size(family, mode):
    layer = _randomised(CONVS[family]((12, 12)))
    train_a_little(layer, (4, 12, 12), steps=3)
    layer.train(mode == "train")
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        if getattr(layer, "bias", None) is not None:
            layer.bias.fill_(5.0)
    assert _power_iteration(layer, x) <= 1 + REL_TOL


@pytest.mark.parametrize("family", sorted(CONVS))
def test_fourier_layers_export_to_fixed_kernels_with_identical_outputs(family):
    layer = _randomised(CONVS[family]((5, 6)))
    train_a_little(layer, (4, 5, 6), steps=2)
    x = torch.randn(3, 4, 5, 6)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        layer = layer.to(dtype)
        exported = layer.export()
        assert not list(exported.parameters())
        assert any(isinstance(m, FourierConv2d) for m in exported.modules())
        torch.testing.assert_close(exported(x.to(dtype)), layer.eval()(x.to(dtype)), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("family", sorted(CONVS))
def test_kernels_larger_than_the_image_and_other_sizes(family):
    layer = _randomised(CONVS[family]((1, 1)))
    assert_one_lipschitz(layer, (4, 1, 1))
    with pytest.raises(ValueError, match=r"built for \(1, 1\) images, got \(2, 2\)"):
        layer(torch.randn(1, 4, 2, 2))
    fresh = CONVS[family](None)
    fresh(torch.randn(1, 4, 3, 2))
    assert fresh.input_size == (3, 2)


def test_bro_refuses_a_rank_that_makes_the_reflector_trivial():
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\]"):
        BROLinear(6, 6, rank=6)
    with pytest.raises(ValueError, match="rank"):
        BROConv2d(4, 4, rank=0)


@pytest.mark.parametrize("make, shape", [(lambda: SandwichLinear(4, 4), (4,)), (lambda: BROConv2d(3, 3), (3, 4, 4))])
def test_eval_cache_is_kept_until_an_optimizer_step(make, shape):
    layer = _randomised(make()).eval()
    x = torch.randn(2, *shape)
    before = layer(x)
    cached = layer._cache.value
    layer(x)
    assert layer._cache.value is cached
    layer.train()
    train_a_little(layer, shape, steps=1)
    after = layer.eval()(x)
    assert layer._cache.value is not cached and not torch.allclose(after, before)


@pytest.mark.parametrize("family", ["sandwich", "bro"])
def test_pgd_finds_no_violation_of_a_trained_digits_models_certificates(family, tmp_path):
    from robustlab.config import load_config
    from robustlab.data.splits import prepare_data
    from robustlab.runs.checkpoint import load_run_model
    from robustlab.train.loop import train

    overrides = [f"model.name=lipconvnet-{family}", "model.kwargs={width: 8, depth: 1}", "train.epochs=1"]
    config = load_config("digits", [*overrides, "optim.lr=0.1", "train.device=cpu"])
    run = train(config, run_dir=tmp_path / "run", progress=False)
    model, _ = load_run_model(run.path)
    data = prepare_data(config.data)
    images, labels = data.x_eval[:100], data.y_eval[:100]
    certificates = certify_points(model, images, labels)
    assert int((certificates.radii > 0).sum()) >= 20  # enough certified points to check
    report = check_soundness(model, images, certificates, steps=10, restarts=2)
    assert report["sound"], report["counterexamples"][:3]
    assert report["max_margin_drop_ratio"] <= 1 + 1e-6
