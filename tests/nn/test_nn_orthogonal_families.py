"""BCOP, AOC and LOT: the iterations, the pieces they are built from, and the evaluation-mode
bound that keeps their certificates sound whatever the iterations reached."""

import pytest
import torch
import torch.nn.functional as F
from nn_helpers import REL_TOL, assert_one_lipschitz, jacobian_norm
from torch import nn

from robustlab.certify.attacks import check_soundness
from robustlab.certify.evaluate import certify_points
from robustlab.data.datasets import load_dataset
from robustlab.nn.lipschitz import AOCConv2d, BCOPConv2d, BjorckLinear, LOTConv2d, LOTLinear
from robustlab.nn.lipschitz.fourier import (
    CHEAP_BOUND_SLACK,
    FourierConv2d,
    apply_response,
    kernel_response,
    spectral_norm_bound,
)
from robustlab.nn.lipschitz.lot import newton_schulz_polar
from robustlab.nn.lipschitz.orthogonal_kernels import bjorck, block_convolution, conv_norm_bound
from robustlab.nn.models import create_model
from robustlab.train.losses import OffsetCrossEntropy


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ill_conditioned(*shape: int, dtype=torch.float64) -> torch.Tensor:
    """Random matrices with singular values spread over four decades."""
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=_generator(), dtype=torch.float64), full_matrices=False)
    values = torch.logspace(0, -4, min(shape[-2:]), dtype=torch.float64) * 7
    return ((u * values.unsqueeze(-2)) @ vh).to(dtype)


def _polar(matrix: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh


def _max_singular_value(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2).max())


@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (4, 9), (3, 5, 3)])
def test_bjorck_iterates_never_exceed_one_and_converge_to_the_polar_factor(shape):
    matrix = _ill_conditioned(*shape)
    for iterations in range(8):
        assert _max_singular_value(bjorck(matrix, iterations)) <= 1 + 1e-12
    torch.testing.assert_close(bjorck(matrix, 60), _polar(matrix), rtol=0, atol=1e-10)


def _papers_newton_schulz(v: torch.Tensor, iterations: int) -> torch.Tensor:
    """LOT's iteration as the paper writes it, for square V: S = V^H V / ||V^H V||_F,
    Y = S, Z = I, T = (3I - ZY) / 2, Y <- YT, Z <- TZ; W = V Z / sqrt(||V^H V||_F)."""
    gram = v.mH @ v
    norm = torch.linalg.matrix_norm(gram)[..., None, None]
    y, z = gram / norm, torch.eye(v.shape[-1], dtype=v.dtype).expand_as(gram)
    for _ in range(iterations):
        t = (3 * torch.eye(v.shape[-1], dtype=v.dtype) - z @ y) / 2
        y, z = y @ t, t @ z
    return v @ z / norm.sqrt()


def test_newton_schulz_is_the_papers_iteration_never_exceeds_one_and_converges():
    v = torch.complex(_ill_conditioned(4, 5, 5), _ill_conditioned(4, 5, 5).flip(0))
    for iterations in (1, 2, 5, 10):
        truncated = newton_schulz_polar(v, iterations)
        torch.testing.assert_close(truncated, _papers_newton_schulz(v, iterations), rtol=0, atol=1e-12)
        assert _max_singular_value(truncated) <= 1 + 1e-12
    torch.testing.assert_close(newton_schulz_polar(v, 60), _polar(v), rtol=0, atol=1e-8)
    wide = _ill_conditioned(3, 7)  # (V V^T)^-1/2 V: orthonormal rows
    torch.testing.assert_close(newton_schulz_polar(wide, 60), _polar(wide), rtol=0, atol=1e-8)


def test_block_convolution_is_the_kernel_of_the_composed_convolutions():
    a = torch.randn(3, 4, 2, 3, generator=_generator(1), dtype=torch.float64)
    b = torch.randn(4, 5, 3, 1, generator=_generator(2), dtype=torch.float64)
    x = torch.randn(2, 5, 7, 6, generator=_generator(3), dtype=torch.float64)
    composed = F.conv2d(F.conv2d(x, b, padding=(2, 0)), a, padding=(1, 2))  # full padding, no crop
    torch.testing.assert_close(F.conv2d(x, block_convolution(a, b), padding=(3, 2)), composed)


@pytest.mark.parametrize("size", [(6, 7), (5, 4)])
def test_correlation_response_is_the_circular_padded_conv2d(size):
    kernel = torch.randn(3, 2, 3, 5, generator=_generator(), dtype=torch.float64)
    x = torch.randn(2, 2, *size, generator=_generator(1), dtype=torch.float64)
    expected = F.conv2d(F.pad(x, (2, 2, 1, 1), mode="circular"), kernel)
    torch.testing.assert_close(apply_response(kernel_response(kernel, size, correlation=True), x), expected)


def _conv_matrix(kernel: torch.Tensor, size: tuple[int, int], padding_mode: str) -> torch.Tensor:
    ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2

    def conv(v):
        v = v.view(1, kernel.shape[1], *size)
        if padding_mode == "circular":
            return F.conv2d(F.pad(v, (pw, pw, ph, ph), mode="circular"), kernel).flatten()
        return F.conv2d(v, kernel, padding=(ph, pw)).flatten()

    return torch.autograd.functional.jacobian(
        conv, torch.zeros(kernel.shape[1] * size[0] * size[1], dtype=kernel.dtype)
    )


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_conv_norm_bound_is_never_below_the_norm_and_exact_for_circular_padding(padding_mode, scale):
    kernel = torch.randn(3, 3, 3, 3, generator=_generator(), dtype=torch.float64)
    size = (5, 6)
    kernel = kernel * scale / float(conv_norm_bound(kernel, size, "circular"))  # exact norm `scale` (circular)
    exact = _max_singular_value(_conv_matrix(kernel, size, padding_mode))
    bound = float(conv_norm_bound(kernel, size, padding_mode))
    assert exact <= bound * (1 + 1e-12)
    if padding_mode == "circular" and scale > 1:
        assert bound == pytest.approx(exact, rel=1e-10)


def test_conv_norm_bound_of_an_orthogonal_kernel_is_one_without_the_image_size():
    layer = BCOPConv2d(4, 4, 5, iterations=40).double()
    kernel = layer.kernel().detach()
    assert float(conv_norm_bound(kernel, None, "zeros")) == pytest.approx(1, abs=1e-12)
    assert _max_singular_value(_conv_matrix(kernel, (6, 6), "circular")) == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("slack", [0.0, CHEAP_BOUND_SLACK])
@pytest.mark.parametrize("scale", [0.5, 1 + 1e-6, 2.0])
def test_spectral_norm_bound_is_never_below_the_norm(scale, slack):
    matrices = torch.complex(_ill_conditioned(3, 5, 4), _ill_conditioned(3, 5, 4).flip(0))
    matrices = matrices * scale / _max_singular_value(matrices)
    near_orthogonal = _polar(torch.randn(6, 6, generator=_generator(), dtype=torch.float64)) * scale
    for batch in (matrices, matrices.mH, near_orthogonal):
        exact = _max_singular_value(batch)
        bound = spectral_norm_bound(batch, slack)
        assert exact <= bound * (1 + 1e-12)
        assert bound <= max(exact, 1) * (1 + slack) * (1 + 1e-12)  # exact, or within the slack above 1


def _randomised(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name != "bias":
                parameter.copy_(torch.randn(parameter.shape, generator=_generator(5)) * 3)
    return layer


TRUNCATED = {
    "bcop": (lambda: BCOPConv2d(4, 4, iterations=1), (4, 5, 5)),
    "aoc": (lambda: AOCConv2d(4, 4, padding_mode="zeros", iterations=1), (4, 5, 5)),
    "lot": (lambda: LOTConv2d(4, iterations=1), (4, 4, 5)),
    "bjorck-linear": (lambda: BjorckLinear(6, 6, iterations=1), (6,)),
    "lot-linear": (lambda: LOTLinear(6, 4, iterations=1), (6,)),
}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_a_truncated_iteration_is_far_from_orthogonal_yet_one_lipschitz(name):
    make, shape = TRUNCATED[name]
    layer = _randomised(make())
    x = torch.randn(1, *shape, generator=_generator())
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view_as(x)).flatten(), x.flatten())
    assert float(torch.linalg.svdvals(jacobian.double()).min()) < 0.9  # the iteration is far from converged
    for mode in (True, False):
        assert_one_lipschitz(layer.train(mode), shape)


BROKEN_FACTOR = 1.7
BROKEN = {
    "bcop": (lambda: BCOPConv2d(3, 3, bias=False), "square_kernel", (3, 5, 5)),
    "aoc-zeros": (lambda: AOCConv2d(3, 3, padding_mode="zeros", bias=False), "square_kernel", (3, 5, 5)),
    "lot": (lambda: LOTConv2d(3, bias=False), "frequency_response", (3, 4, 5)),
    "lot-zeros": (lambda: LOTConv2d(3, padding_mode="zeros", bias=False), "frequency_response", (3, 4, 4)),
    "bjorck-linear": (lambda: BjorckLinear(5, 5, bias=False), "orthogonal_weight", (5,)),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_evaluation_mode_divides_an_operator_that_is_not_one_lipschitz_by_its_bound(name, monkeypatch):
    """Whatever the construction computes (here: scaled 1.7x up), the evaluated layer is 1-Lipschitz."""
    make, method, shape = BROKEN[name]
    layer = make()
    build = getattr(layer, method)
    monkeypatch.setattr(layer, method, lambda *args: BROKEN_FACTOR * build(*args))
    x = torch.randn(1, *shape, generator=_generator())
    assert jacobian_norm(layer.train(), x) == pytest.approx(BROKEN_FACTOR, rel=1e-4)  # the layer as built
    norm = jacobian_norm(layer.eval(), x)
    assert 0.95 < norm <= 1 + REL_TOL  # divided by a bound that is tight (exact, or nearly, on this size)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BCOPConv2d(4, 4, 1, bias=False, iterations=40),
        lambda: BCOPConv2d(4, 4, (3, 5), bias=False, iterations=40),
        lambda: AOCConv2d(4, 4, 1, bias=False, iterations=40),
        lambda: AOCConv2d(4, 4, 5, bias=False, iterations=40),
        lambda: LOTConv2d(4, bias=False, iterations=40),
    ],
)
def test_circular_layers_are_orthogonal(make):
    layer = _randomised(make()).double()
    x = torch.randn(3, 4, 6, 7, generator=_generator(), dtype=torch.float64)
    for mode in (True, False):
        y = layer.train(mode)(x)
        torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-8, atol=0)


def test_lot_and_aoc_shapes_and_settings_are_checked():
    with pytest.raises(ValueError, match="square"):
        AOCConv2d(4, 4, (3, 5))
    with pytest.raises(ValueError, match="padding_mode"):
        BCOPConv2d(4, 4, padding_mode="reflect")
    with pytest.raises(ValueError, match="odd"):
        LOTConv2d(4, 2)
    with pytest.raises(ValueError, match="iterations"):
        LOTLinear(4, 4, iterations=-1)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(LOTConv2d(4)(x), x, rtol=0, atol=1e-5)  # identity (Dirac) initialisation


@pytest.mark.parametrize("make", [lambda: BCOPConv2d(3, 3), lambda: LOTConv2d(3), lambda: BjorckLinear(3, 3)])
def test_evaluation_operators_are_cached_until_a_parameter_changes(make):
    layer = _randomised(make()).eval()
    x = torch.randn(2, 3, 4, 4) if not isinstance(layer, BjorckLinear) else torch.randn(2, 3)
    first = layer(x)
    cached = layer._cache.value
    torch.testing.assert_close(layer(x), first)
    assert layer._cache.value is cached
    with torch.no_grad():
        next(p for name, p in layer.named_parameters() if name != "bias").mul_(-1)
    layer(x)
    assert layer._cache.value is not cached


def test_lot_export_is_a_fourier_convolution_for_its_image_size():
    layer = _randomised(LOTConv2d(3, padding_mode="zeros", input_size=(5, 6))).eval()
    exported = layer.export()
    assert isinstance(exported, FourierConv2d) and not list(exported.parameters())
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(exported(x), layer(x), rtol=1e-5, atol=1e-6)  # the kernel round trip rounds
    torch.testing.assert_close(
        exported.double()(x.double()), layer(x).double(), rtol=1e-5, atol=1e-5
    )  # .double() works
    with pytest.raises(ValueError, match=r"exported for \(5, 6\) images"):
        exported(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="input_size"):
        LOTConv2d(3).export()
    pointwise = _randomised(LOTConv2d(3, 1)).eval()
    assert isinstance(pointwise.export(), nn.Conv2d)
    torch.testing.assert_close(pointwise.export()(x), pointwise(x))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bcop", "aoc", "lot"])
def test_pgd_finds_no_violation_on_any_certified_point_of_a_trained_digits_model(family):
    data = load_dataset("digits")
    images = torch.as_tensor(data.x_train).permute(0, 3, 1, 2).float() / 255
    labels = torch.as_tensor(data.y_train)
    model = create_model(f"lipconvnet-{family}", (1, 8, 8), 10, images.mean(dim=(0, 2, 3)), width=8, depth=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn, generator = OffsetCrossEntropy(0.2, 0.25), _generator()
    for _ in range(40):
        batch = torch.randint(len(images), (64,), generator=generator)
        loss = loss_fn(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    certificates = certify_points(model, data.x_test[:200], data.y_test[:200])
    report = check_soundness(model, data.x_test[:200], certificates, steps=10)
    assert certificates.correct.float().mean() > 0.6 and report["checked"] > 40  # a model worth attacking
    assert report["sound"], report["counterexamples"][:3]
    assert report["max_margin_drop_ratio"] <= 1 + 1e-6
