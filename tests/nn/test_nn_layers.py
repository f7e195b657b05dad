import copy

import pytest
import torch
import torch.nn.functional as F
from nn_helpers import REL_TOL, assert_one_lipschitz, dense_matrix, jacobian_norm, train_a_little
from torch import nn

from robustlab.nn.activations import GroupSort, MaxMin
from robustlab.nn.blocks import CenterInputs, FirstChannels, GlobalMaxPool, ZeroChannelConcatenation, ZeroPad
from robustlab.nn.lipschitz import (
    LAYER_FAMILIES,
    AOCConv2d,
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    BROConv2d,
    BROLinear,
    CayleyConv2d,
    CPLConv2d,
    CPLLinear,
    LOTConv2d,
    LOTLinear,
    OrthogonalLinear,
    SandwichConv2d,
    SandwichLinear,
    SLLConv2d,
    SLLLinear,
    SOCConv2d,
    cpl,
    residual,
)
from robustlab.nn.lipschitz.base import conv_fft_bound, top_eigenpair
from robustlab.nn.lipschitz.cpl import (
    ConvGram,
    column_circular_conv,
    column_period,
    column_shift_test,
    column_taps,
    shift_test,
)
from robustlab.nn.lipschitz.residual import conv2d_float64
from robustlab.registry import UnknownNameError

# (constructor, input shape): small enough for exact dense Jacobians
LAYERS = {
    "aol-conv": (lambda: AOLConv2d(4, 4), (4, 6, 6)),
    "aol-conv-wide-strided": (lambda: AOLConv2d(3, 6, 3, stride=2), (3, 6, 6)),
    "aol-conv-circular": (lambda: AOLConv2d(4, 4, padding_mode="circular"), (4, 5, 5)),
    "aol-linear": (lambda: AOLLinear(6, 6), (6,)),
    "aol-linear-narrow": (lambda: AOLLinear(8, 4), (8,)),
    "cpl-conv": (lambda: CPLConv2d(4, input_size=(5, 5)), (4, 5, 5)),
    "cpl-conv-hidden": (lambda: CPLConv2d(3, hidden_channels=6, input_size=(4, 4)), (3, 4, 4)),
    "cpl-linear": (lambda: CPLLinear(6, hidden_features=10), (6,)),
    "sll-conv": (lambda: SLLConv2d(4), (4, 5, 5)),
    "sll-linear": (lambda: SLLLinear(6, hidden_features=8), (6,)),
    "soc-conv": (lambda: SOCConv2d(4), (4, 5, 5)),
    "cayley-conv": (lambda: CayleyConv2d(4), (4, 4, 6)),
    "orthogonal-linear": (lambda: OrthogonalLinear(6, 4), (6,)),
    "orthogonal-linear-wide": (lambda: OrthogonalLinear(4, 6), (4,)),
    "bcop-conv": (lambda: BCOPConv2d(4, 4), (4, 5, 5)),
    "bcop-conv-zeros-wide": (lambda: BCOPConv2d(3, 6, padding_mode="zeros"), (3, 6, 6)),
    "bjorck-linear-narrow": (lambda: BjorckLinear(8, 4), (8,)),
    "aoc-conv": (lambda: AOCConv2d(4, 4), (4, 5, 5)),
    "aoc-conv-zeros-narrow-5x5": (lambda: AOCConv2d(6, 4, 5, padding_mode="zeros"), (6, 6, 6)),
    "lot-conv": (lambda: LOTConv2d(4), (4, 4, 6)),
    "lot-conv-zeros": (lambda: LOTConv2d(4, padding_mode="zeros"), (4, 5, 5)),
    "lot-linear-wide": (lambda: LOTLinear(4, 6), (4,)),
    "sandwich-conv": (lambda: SandwichConv2d(4, 4, input_size=(4, 5)), (4, 4, 5)),
    "sandwich-conv-wide": (lambda: SandwichConv2d(3, 5, input_size=(4, 4)), (3, 4, 4)),
    "sandwich-linear": (lambda: SandwichLinear(6, 4), (6,)),
    "bro-conv": (lambda: BROConv2d(4, 4, input_size=(5, 4)), (4, 5, 4)),
    "bro-conv-narrow": (lambda: BROConv2d(5, 3, input_size=(4, 4)), (5, 4, 4)),
    "bro-linear": (lambda: BROLinear(6, 6), (6,)),
    "bro-linear-wide": (lambda: BROLinear(4, 6, rank=5), (4,)),
}


def _scaled(make):
    """A layer with weights far from their initial, easy values."""
    layer = make()
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            # matrices and kernels; not biases or scalings (Sandwich's psi, alpha)
            if parameter.dim() >= 2 and "original" not in name:  # see OrthogonalLinear
                parameter.add_(torch.randn_like(parameter)).mul_(3)
    return layer


def _settle(layer: nn.Module, shape: tuple[int, ...]) -> None:
    """CPL and SOC estimate a norm with one power-iteration step per training forward; in
    training mode they are 1-Lipschitz once the stored vector has caught up with the
    weights (in real training it tracks weights that change slowly). Eval mode needs no help."""
    if layer.training and hasattr(layer, "u"):
        with torch.no_grad():
            for _ in range(300):
                layer(torch.randn(1, *shape))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_is_one_lipschitz_at_init_and_after_training(name, mode):
    make, shape = LAYERS[name]
    for layer in (make(), _scaled(make)):
        layer.train(mode == "train")
        _settle(layer, shape)
        assert_one_lipschitz(layer, shape)
    layer = _scaled(make)
    train_a_little(layer, shape)
    layer.train(mode == "train")
    _settle(layer, shape)
    assert_one_lipschitz(layer, shape)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_reset_parameters_reinitialises_a_trained_layer(name):
    make, shape = LAYERS[name]
    layer = _scaled(make)
    train_a_little(layer, shape, steps=2)
    trained = {key: value.clone() for key, value in layer.named_parameters()}
    layer.reset_parameters()
    changed = {key for key, value in layer.named_parameters() if not torch.equal(value, trained[key])}
    assert changed == set(trained)
    layer.eval()
    assert_one_lipschitz(layer, shape)


def test_cpl_training_mode_needs_a_converged_vector():
    """The documented caveat of _settle is real: a fresh vector underestimates sigma."""
    layer = _scaled(lambda: CPLConv2d(4, input_size=(5, 5)))
    norms = [jacobian_norm(layer, torch.randn(1, 4, 5, 5)) for _ in range(3)]
    assert max(norms) > 1 + 1e-3


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_state_dict_round_trip_gives_same_eval_outputs(name):
    make, shape = LAYERS[name]
    source = _scaled(make)
    train_a_little(source, shape, steps=2)
    target = make()
    target.load_state_dict(source.state_dict())
    source.eval(), target.eval()
    x = torch.randn(3, *shape)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer, shape", [(AOLLinear(5, 5), (5,)), (AOLConv2d(3, 3, 3), (3, 4, 4)), (AOLConv2d(3, 3, 5), (3, 6, 6))]
)
def test_square_aol_layers_start_as_the_identity(layer, shape):
    x = torch.randn(2, *shape)
    torch.testing.assert_close(layer(x), x, rtol=1e-5, atol=1e-5)


def test_aol_rescaling_matches_the_dense_formula_for_a_conv():
    """The conv rescaling equals the dense formula applied to the conv's matrix on a big image."""
    layer = _scaled(lambda: AOLConv2d(2, 3, 3, bias=False))
    size = 9  # large enough that the centre pixel sees every kernel offset
    matrix = torch.autograd.functional.jacobian(
        lambda v: torch.nn.functional.conv2d(v.view(1, 2, size, size), layer.weight, padding=1).flatten(),
        torch.zeros(2 * size * size),
    )
    row_sums = (matrix.t() @ matrix).abs().sum(dim=1).view(2, size, size)[:, size // 2, size // 2]
    torch.testing.assert_close(layer.rescaling(), (row_sums + 1e-6).rsqrt(), rtol=1e-4, atol=1e-6)


def _conv_operator_norm(layer: CPLConv2d, size: int) -> float:
    matrix = torch.autograd.functional.jacobian(
        lambda v: layer.down(v.view(1, layer.channels, size, size)).flatten(), torch.zeros(layer.channels * size * size)
    )
    return float(torch.linalg.matrix_norm(matrix.double(), ord=2))


def test_cpl_eval_sigma_is_a_tight_upper_estimate_of_the_spectral_norm():
    layer = _scaled(lambda: CPLConv2d(3, input_size=(6, 6))).eval()
    exact = _conv_operator_norm(layer, 6)
    sigma = float(layer.eval_sigma().detach())
    assert exact <= sigma <= exact * (1 + 2e-5)  # proved by the shift test at theta (1 + 1e-5)


@pytest.mark.parametrize("kernel_size, size", [(3, (4, 5)), (3, (16, 3)), (5, (19, 2)), (1, (3, 4))])
def test_cpl_gram_blocks_assemble_the_operators_gram(kernel_size, size):
    layer = _scaled(lambda: CPLConv2d(3, kernel_size, hidden_channels=5, input_size=size)).double()
    inputs = 3 * size[0] * size[1]
    operator = torch.autograd.functional.jacobian(
        lambda v: layer.down(v.view(1, 3, *size)).flatten(), torch.zeros(inputs, dtype=torch.float64)
    )
    # ConvGram orders pixel-major (channels inner); the Jacobian's columns are channel-major
    order = torch.arange(inputs).view(3, size[0] * size[1]).t().flatten()
    gram = ConvGram(layer.weight.detach(), size)
    torch.testing.assert_close(gram.matrix(), (operator.t() @ operator)[order][:, order], rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("kernel_size, size", [(3, (5, 5)), (3, (9, 4)), (5, (8, 3)), ((3, 1), (6, 2))])
def test_cpl_shift_test_proves_bounds_above_the_top_eigenvalue_and_only_those(kernel_size, size):
    """Block Cholesky of the banded Gram (``reach`` blocks either side, pruned as it goes)."""
    layer = _scaled(lambda: CPLConv2d(4, kernel_size, input_size=size)).double()
    kernel = layer.weight.detach()
    gram = ConvGram(kernel, size)
    assert gram.blocks > gram.reach + 1  # blocks beyond the band: the zero blocks are never formed
    top = float(torch.linalg.eigvalsh(gram.matrix())[-1])
    assert shift_test(gram, top * (1 + 1e-9), kernel)
    assert not shift_test(gram, top * (1 - 1e-9), kernel)


@pytest.mark.parametrize(
    "channels, kernel_size, size, ceiling",  # ceiling: the measured ||C|| / ||W||, rounded up
    [
        ((3, 2), (3, 3), (4, 5), 1.08),  # 1.0717
        ((2, 3), (5, 3), (6, 4), 1.08),  # 1.0791
        ((4, 4), (1, 1), (3, 3), 1.0 + 1e-12),  # 1x1 kernel: C = W
        ((3, 3), (3, 5), (2, 7), 1.11),  # 1.1096
        ((2, 2), (5, 5), (5, 3), 1.15),  # 1.1430
        ((3, 2), (1, 3), (4, 4), 1.02),  # 1.0159
        ((2, 2), (3, 1), (4, 2), 1.0 + 1e-12),  # 1-wide taps: C = W
        ((3, 3), (3, 3), (2, 2), 1.33),  # 1.3232: tiny images are why small layers take the exact test
    ],
)
def test_cpl_column_fourier_test_bounds_the_exact_norm_and_refuses_less_than_the_column_norm(
    channels, kernel_size, size, ceiling
):
    """The column-Fourier test proves ||C||^2 (1 + 1e-9) and refuses ||C||^2 (1 - 1e-9),
    where C is the column-circular operator (dense), and ||C|| >= ||W|| (dense SVD)."""
    torch.manual_seed(0)
    kernel = torch.randn(*channels, *kernel_size, dtype=torch.float64)
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    shape = (channels[1], *size)
    exact = float(torch.linalg.matrix_norm(dense_matrix(lambda x: F.conv2d(x, kernel, padding=padding), shape), ord=2))
    period = column_period(kernel_size, size)
    column_shape = (channels[1], size[0], period)
    column = dense_matrix(lambda x: column_circular_conv(x, kernel, padding), column_shape)
    column_norm = float(torch.linalg.matrix_norm(column, ord=2))
    taps, tap_error = column_taps(kernel, period)
    assert tap_error < 1e-11 * column_norm
    assert column_shift_test(taps, size[0], column_norm**2 * (1 + 1e-9))
    assert not column_shift_test(taps, size[0], column_norm**2 * (1 - 1e-9))
    assert exact * (1 - 1e-12) <= column_norm <= ceiling * exact


def test_cpl_column_taps_give_the_column_operators_per_frequency_blocks():
    """Each C_f's Gram, from the complex taps, has the eigenvalues of C^T C on frequency f:
    together (f and its conjugate -f) they are C^T C's spectrum."""
    torch.manual_seed(1)
    kernel = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    size, period = (3, 4), column_period((3, 3), (3, 4))
    column = dense_matrix(lambda x: column_circular_conv(x, kernel, (1, 1)), (3, size[0], period))
    expected = torch.linalg.eigvalsh(column.t() @ column)
    taps, _ = column_taps(kernel, period)
    spectra = [torch.linalg.eigvalsh(ConvGram(tap, (size[0], 1)).matrix()) for tap in taps]
    # frequencies 1..(P - 1) // 2 stand for their conjugates too; P // 2 is its own when P is even
    counted = [spectra[0]] + [
        spectrum for f, spectrum in enumerate(spectra[1:], 1) for _ in range(2 if 2 * f != period else 1)
    ]
    torch.testing.assert_close(torch.cat(counted).sort().values, expected, rtol=1e-10, atol=1e-10)


def test_cpl_eval_sigma_between_the_shift_test_costs_is_the_column_fourier_bound(monkeypatch):
    monkeypatch.setattr(cpl, "SHIFT_TEST_COST", 10)
    layer = _scaled(lambda: CPLConv2d(3, input_size=(6, 5))).eval()
    with torch.no_grad():
        sigma = float(layer.eval_sigma())
    kernel = layer.weight.detach().double()
    operator = dense_matrix(lambda x: F.conv2d(x, kernel, padding=1), (3, 6, 5))
    exact = float(torch.linalg.matrix_norm(operator, ord=2))
    period = column_period((3, 3), (6, 5))
    column = dense_matrix(lambda x: column_circular_conv(x, kernel, (1, 1)), (3, 6, period))
    column_norm = float(torch.linalg.matrix_norm(column, ord=2))
    assert exact <= column_norm <= sigma <= column_norm * (1 + 2e-5)
    assert sigma < conv_fft_bound(layer.weight, (6, 5))  # tighter than the fallback here
    assert_one_lipschitz(layer, (3, 6, 5))


def test_cpl_eval_sigma_above_the_shift_test_cost_is_the_per_frequency_bound(monkeypatch):
    monkeypatch.setattr(cpl, "SHIFT_TEST_COST", 10)
    monkeypatch.setattr(cpl, "COLUMN_TEST_COST", 10)
    layer = _scaled(lambda: CPLConv2d(3, input_size=(6, 6))).eval()
    exact = _conv_operator_norm(layer, 6)
    sigma = float(layer.eval_sigma())
    assert sigma == pytest.approx(conv_fft_bound(layer.weight, (6, 6)), rel=1e-6)
    assert exact <= sigma


def test_cpl_eval_sigma_stays_an_upper_bound_when_lanczos_is_cut_short():
    """One Lanczos step from a fresh vector is far below sigma; the layer must not use it."""
    layer = _scaled(lambda: CPLConv2d(3, input_size=(6, 6), eval_iterations=1)).eval()
    exact = _conv_operator_norm(layer, 6)
    with pytest.warns(UserWarning, match="did not converge"):
        sigma = float(layer.eval_sigma())
    assert exact <= sigma <= 1.5 * exact
    assert_one_lipschitz(layer, (3, 6, 6))


def test_cpl_eval_sigma_is_cached_until_an_optimizer_step():
    layer = _scaled(lambda: CPLConv2d(3, input_size=(5, 5)))
    x = torch.randn(2, 3, 5, 5)
    layer.eval()
    first = layer(x)
    cached = layer._cache.value
    torch.testing.assert_close(layer(x), first)
    assert layer._cache.value is cached  # not recomputed
    layer.train()
    train_a_little(layer, (3, 5, 5), steps=1)
    layer.eval()
    layer(x)
    assert layer._cache.value is not cached
    torch.testing.assert_close(layer._cache.value, layer.eval_sigma())


def test_cpl_cache_is_invalidated_by_load_state_dict():
    source, target = _scaled(lambda: CPLLinear(5)), CPLLinear(5)
    x = torch.randn(4, 5)
    target.eval()
    target(x)  # fills the cache with the old weights
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(x), source.eval()(x))


def test_aol_rescaling_is_cached_in_eval_and_recomputed_in_training():
    layer = _scaled(lambda: AOLConv2d(3, 3))
    layer.eval()
    layer(torch.randn(1, 3, 4, 4))
    cached = layer._cache.value
    layer(torch.randn(1, 3, 4, 4))
    assert layer._cache.value is cached
    with torch.no_grad():
        layer.weight.mul_(2)
    layer(torch.randn(1, 3, 4, 4))
    assert layer._cache.value is not cached


def test_cpl_training_forward_updates_the_power_iteration_buffer():
    layer = CPLConv2d(3, input_size=(4, 4))
    assert "u" in layer.state_dict()
    before = layer.u.clone()
    layer(torch.randn(2, 3, 4, 4))
    assert not torch.equal(layer.u, before)
    assert abs(float(layer.u.norm()) - 1) < 1e-5


def test_cpl_conv_takes_its_size_from_the_first_input_and_state_dicts():
    layer = CPLConv2d(2)
    layer(torch.randn(1, 2, 6, 5))
    assert layer.u.shape == (1, 2, 6, 5)
    with pytest.raises(ValueError, match="input_size"):
        layer(torch.randn(1, 2, 4, 4))
    fresh = CPLConv2d(2)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.u.shape == (1, 2, 6, 5)


def test_cpl_all_active_jacobian_is_the_worst_case_and_within_one():
    """With a huge positive bias every unit is active: the Jacobian is I - 2/sigma^2 W^T W."""
    layer = _scaled(lambda: CPLLinear(6)).eval()
    with torch.no_grad():
        layer.bias.fill_(1e4)
    x = torch.randn(1, 6)
    assert abs(jacobian_norm(layer, x) - 1) < REL_TOL  # the top singular direction reaches -1


def test_soc_is_orthogonal_to_float_precision_in_eval():
    layer = _scaled(lambda: SOCConv2d(3, bias=False)).eval()
    x = torch.randn(1, 3, 5, 5)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view_as(x)).flatten(), x.flatten())
    singular_values = torch.linalg.svdvals(jacobian.double())
    assert torch.allclose(singular_values, torch.ones_like(singular_values), atol=1e-5)


def test_soc_refuses_evaluation_terms_too_few_for_sound_certificates():
    with pytest.raises(ValueError, match="eval_terms >= 10"):
        SOCConv2d(3, eval_terms=4)
    with pytest.raises(ValueError, match="eval_terms >= 12"):
        SOCConv2d(3, eval_terms=11, correction=1.0)
    layer = _scaled(lambda: SOCConv2d(3, bias=False, eval_terms=10)).eval()
    assert_one_lipschitz(layer, (3, 5, 5))


def test_cayley_conv_preserves_norms():
    layer = _scaled(lambda: CayleyConv2d(3, bias=False))
    x = torch.randn(4, 3, 5, 7)
    torch.testing.assert_close(layer(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-5)


def test_lanczos_finds_the_top_eigenvalue_of_a_symmetric_matrix():
    basis = torch.linalg.qr(torch.randn(40, 40))[0]
    values = torch.linspace(0, 3, 40)
    matrix = basis @ torch.diag(values) @ basis.t()
    top, vector, _ = top_eigenpair(lambda v: matrix @ v, torch.randn(40))
    assert abs(float(top) - 3) < 1e-5
    assert abs(float((matrix @ vector).norm()) - 3) < 1e-4


def test_lanczos_handles_the_identity_without_blowing_up():
    top, _, _ = top_eigenpair(lambda v: v, torch.randn(1, 3, 4, 4))
    assert abs(float(top) - 1) < 1e-6


@pytest.mark.parametrize(
    "layer",
    [
        AOLConv2d(3, 3),
        CPLConv2d(3, input_size=(4, 4)),
        SLLConv2d(3),
        SOCConv2d(3),
        BCOPConv2d(3, 3, input_size=(4, 4)),
        AOCConv2d(3, 3, input_size=(4, 4)),
        LOTConv2d(3, input_size=(4, 4)),
        SandwichConv2d(3, 3, input_size=(4, 4)),
        BROConv2d(3, 3, input_size=(4, 4)),
    ],
)
def test_conv_layers_compile_without_graph_breaks_in_training(layer):
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 4, 4)
    expected = copy.deepcopy(layer)(x)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)


def test_layers_work_inside_sequential_and_report_bad_inputs():
    net = nn.Sequential(AOLConv2d(2, 4), MaxMin(), CPLConv2d(4, input_size=(3, 3)), FirstChannels(2))
    assert net(torch.randn(1, 2, 3, 3)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        net(torch.randn(1, 3, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        SLLConv2d(3, kernel_size=2)
    with pytest.raises(ValueError, match="padding_mode"):
        AOLConv2d(2, 2, padding_mode="reflect")


def _maxmin_by_separate_ops(x: torch.Tensor) -> torch.Tensor:
    """MaxMin as it was before the fused autograd node: torch.maximum and torch.minimum."""
    a, b = x.unflatten(1, (x.shape[1] // 2, 2)).unbind(2)
    return torch.stack((torch.maximum(a, b), torch.minimum(a, b)), 2).flatten(1, 2)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "dense"])
def test_maxmin_output_and_gradient_equal_the_separate_ops_bit_for_bit(layout):
    generator = torch.Generator().manual_seed(0)
    shape = (4, 6) if layout == "dense" else (3, 6, 4, 5)
    x = torch.randn(shape, generator=generator).round(decimals=1)  # many ties
    x.view(-1)[:3] = float("nan")  # an unordered pair, and a NaN against a number
    grad = torch.randn(shape, generator=generator)
    grad.view(-1)[3:9] = -0.0  # signed zeros: +0.0 and -0.0 gradients must come out as before
    if layout == "channels_last":
        x, grad = x.to(memory_format=torch.channels_last), grad.to(memory_format=torch.channels_last)
    results = []
    for function in (_maxmin_by_separate_ops, MaxMin()):
        leaf = x.clone().requires_grad_()
        out = function(leaf)
        out.backward(grad)
        assert leaf.grad is not None
        results.append((out.detach().contiguous(), leaf.grad.contiguous()))
    (old_out, old_grad), (new_out, new_grad) = results
    assert torch.equal(old_out.view(torch.int32), new_out.view(torch.int32))
    assert torch.equal(old_grad.view(torch.int32), new_grad.view(torch.int32))
    ties = (x.unflatten(1, (x.shape[1] // 2, 2)).diff(dim=2) == 0).sum()
    assert ties > 0  # the tie branch ran


def test_maxmin_sorts_adjacent_pairs_and_groupsort_larger_groups():
    x = torch.tensor([[-2.0, 1.0, 3.0, 0.5]])
    torch.testing.assert_close(MaxMin()(x), torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
    torch.testing.assert_close(GroupSort(4)(x), torch.tensor([[3.0, 1.0, 0.5, -2.0]]))
    # so the first half of the channels holds whole sorted pairs, as FirstChannels keeps them
    images = torch.randn(3, 8, 5, 5)
    torch.testing.assert_close(MaxMin()(images), GroupSort(2)(images))
    kept = FirstChannels(4)(MaxMin()(images))
    torch.testing.assert_close(kept.sort(dim=1).values, images[:, :4].sort(dim=1).values)
    channels_last = images.to(memory_format=torch.channels_last)
    assert MaxMin()(channels_last).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="MaxMin needs an even number of channels"):
        MaxMin()(torch.randn(2, 3))
    assert_one_lipschitz(MaxMin(), (6, 2, 2))
    assert_one_lipschitz(GroupSort(3), (6,))


def test_channel_blocks():
    x = torch.randn(2, 3, 4, 4)
    padded = ZeroChannelConcatenation(5)(x)
    assert padded.shape == (2, 5, 4, 4) and torch.equal(padded[:, :3], x) and not padded[:, 3:].any()
    assert torch.equal(FirstChannels(2)(x), x[:, :2])
    assert GlobalMaxPool()(x).shape == (2, 3, 1, 1)
    assert ZeroPad(6, 7)(x).shape == (2, 3, 6, 7)
    with pytest.raises(ValueError, match="more than the width"):
        ZeroChannelConcatenation(2)(x)
    with pytest.raises(ValueError, match="got only 3"):
        FirstChannels(4)(x)
    assert_one_lipschitz(GlobalMaxPool(), (2, 3, 3))


def test_center_inputs_subtracts_the_mean_and_checks_channels():
    layer = CenterInputs([0.5, 0.25])
    assert "mean" in layer.state_dict() and layer.mean.shape == (2, 1, 1)
    x = torch.ones(1, 2, 2, 2)
    torch.testing.assert_close(layer(x)[0, :, 0, 0], torch.tensor([0.5, 0.75]))
    with pytest.raises(ValueError, match=r"\(batch, 2, H, W\)"):
        layer(torch.ones(1, 3, 2, 2))


@pytest.mark.parametrize("family", LAYER_FAMILIES.names())
def test_every_family_builds_conv_and_rectangular_linear_layers(family):
    layers = LAYER_FAMILIES.get(family)
    conv = layers.conv(4, 3, input_size=(4, 4))
    assert conv(torch.randn(2, 4, 4, 4)).shape == (2, 4, 4, 4)
    for n_in, n_out in ((6, 4), (4, 6), (5, 5)):
        linear = layers.linear(n_in, n_out)
        assert linear(torch.randn(2, n_in)).shape == (2, n_out)
        assert_one_lipschitz(linear.eval(), (n_in,), points=1)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="aoc, aol, bcop, bro, cpl, lot, orthogonal, sandwich, sll, soc"):
        LAYER_FAMILIES.get("lipschitz")


def _self_convolution_rescaling(kernel):
    """The formula as written: the self-convolution of K^T (padding k-1), abs-summed."""
    kernel_t = kernel.transpose(0, 1)
    kh, kw = kernel.shape[-2:]
    gram = torch.nn.functional.conv2d(kernel_t, kernel_t, padding=(kh - 1, kw - 1))
    return (gram.abs().sum(dim=(1, 2, 3)) + 1e-6).rsqrt()


@pytest.mark.parametrize("shape", [(5, 3), (3, 8), (40, 40), (7, 45)])
def test_aol_dense_rescaling_gradient_is_autograds_with_one_product(shape, monkeypatch):
    """The custom backward (one product W (s * (g 1^T + 1 g^T))) equals autograd through W^T W,
    and the Gram from its upper block triangle (halved twice for 40 and 45 columns) W^T W."""
    from robustlab.nn.lipschitz import aol
    from robustlab.nn.lipschitz.aol import AOL_EPS, aol_dense_rescaling

    monkeypatch.setattr(aol, "GRAM_HALVING_MIN", 10)

    weight = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight.data[0, 0] = 0.0  # a zero column entry: |.|'s subgradient 0 either way
    expected = ((weight.t() @ weight).abs().sum(dim=1) + AOL_EPS).rsqrt()
    actual = aol_dense_rescaling(weight)
    torch.testing.assert_close(actual, expected, rtol=1e-14, atol=0)
    weights = torch.randn(shape[1], dtype=torch.float64)
    (expected_grad,) = torch.autograd.grad(expected @ weights, weight)
    (actual_grad,) = torch.autograd.grad(actual @ weights, weight)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("form", ["products", "convolution"])
@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (3, 7, 1, 1), (6, 4, 5, 5), (4, 6, 3, 5), (9, 2, 2, 2)])
def test_aol_conv_rescaling_equals_the_self_convolution(shape, form):
    from robustlab.nn.lipschitz.aol import AOL_EPS, conv_gram_row_sums

    kernel = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    expected = _self_convolution_rescaling(kernel)
    actual = (conv_gram_row_sums(kernel, form=form) + AOL_EPS).rsqrt()
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0)
    weights = torch.randn(shape[1], dtype=torch.float64)
    (expected_grad,) = torch.autograd.grad(expected @ weights, kernel)
    (actual_grad,) = torch.autograd.grad(actual @ weights, kernel)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_aol_rescaling_picks_the_self_convolution_for_small_kernels_on_the_cpu():
    from robustlab.nn.lipschitz.aol import conv_gram_row_sums, gram_row_sums_form

    assert gram_row_sums_form(torch.empty(16, 16, 3, 3)) == "convolution"
    assert gram_row_sums_form(torch.empty(256, 256, 3, 3)) == "products"
    assert gram_row_sums_form(torch.empty(64, 64, 1, 1)) == "products"  # a single product
    with pytest.raises(ValueError, match="form must be 'products' or 'convolution'"):
        conv_gram_row_sums(torch.randn(2, 2, 3, 3), form="fft")


def test_cpl_plans_the_tight_proofs_for_every_layer_of_lipconvnet_64():
    """The cpl-lcn preset's model: no layer is left to the loose per-frequency bound."""
    shapes = [(64, 32), (128, 16), (256, 8), (512, 4), (1024, 2)]
    planned = [cpl.planned_proof((3, 3), channels, (size, size)) for channels, size in shapes]
    assert planned == ["column", "column", "column", "exact", "exact"]
    assert cpl.planned_proof((1, 1), 64, (32, 32)) == "matrix"
    assert cpl.planned_proof((3, 3), 4096, (2, 2)) == "frequency"


@pytest.mark.parametrize(
    "kernel_size, size, bias",
    [
        ((3, 3), (2, 2), True),  # one GEMM over the batch (GEMM_CONV_PIXELS)
        ((3, 3), (1, 4), False),
        ((5, 5), (2, 1), True),
        ((1, 1), (2, 2), True),
        ((3, 3), (5, 7), True),  # row-tap GEMMs (row_tap_conv)
        ((5, 3), (6, 4), False),
        ((1, 5), (3, 9), True),
        ((3, 3), (16, 16), True),
    ],
)
@pytest.mark.parametrize("chunk_bytes", [4 * 2**20, 5000])  # one chunk of images, or one image a chunk
def test_conv2d_float64_equals_conv2d(kernel_size, size, bias, chunk_bytes, monkeypatch):
    monkeypatch.setattr(residual, "ROW_TAP_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    x = torch.randn(7, 6, *size, dtype=torch.float64)
    weight = torch.randn(5, 6, *kernel_size, dtype=torch.float64)
    offsets = torch.randn(5, dtype=torch.float64) if bias else None
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    expected = F.conv2d(x, weight, offsets, padding=padding)
    with torch.no_grad():
        torch.testing.assert_close(conv2d_float64(x, weight, offsets, padding), expected, rtol=1e-13, atol=1e-13)


def test_conv2d_float64_keeps_gradients_where_they_are_asked_for():
    """The row-tap path writes into its output: with gradients, conv2d's own kernel runs."""
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    conv2d_float64(x, weight, None, (1, 1)).square().sum().backward()
    expected = torch.autograd.grad(F.conv2d(x, weight, padding=1).square().sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)


def test_cpl_float64_on_tiny_images_is_the_layer_formula():
    """Certification's float64 path (one GEMM per convolution) computes x - 2/sigma^2 W^T relu(W x + b)."""
    layer = _scaled(lambda: CPLConv2d(4, hidden_channels=6, input_size=(2, 2))).double().eval()
    x = torch.randn(9, 4, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        sigma = layer.eval_sigma()
        hidden = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
        expected = x - 2 / sigma**2 * F.conv_transpose2d(hidden, layer.weight, padding=1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_cpl_proved_sigma_is_reused_by_a_copy_and_recomputed_when_a_weight_value_changes(monkeypatch):
    calls = []
    original = cpl.certified_conv_sigma
    monkeypatch.setattr(cpl, "certified_conv_sigma", lambda *args: calls.append(1) or original(*args))
    monkeypatch.setattr(cpl, "PROVED_SIGMAS", {})
    layer = _scaled(lambda: CPLConv2d(3, input_size=(5, 5))).eval()
    first = float(layer.eval_sigma())
    copied = copy.deepcopy(layer).double()  # what certification does: a fresh float64 copy
    assert float(copied.eval_sigma()) == pytest.approx(first, rel=1e-6) and len(calls) == 1
    with torch.no_grad():
        copied.weight.data[0, 0, 1, 1] += 5.0  # a write the version counter does not see
    changed = float(copied.eval_sigma())
    assert len(calls) == 2
    assert _conv_operator_norm(copied.float(), 5) <= changed * (1 + 1e-6)
