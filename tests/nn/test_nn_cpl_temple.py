"""CPL's proof of its norm by Temple's inequality: a rigorous bound on the second eigenvalue from
the torus, and the test itself, checked against dense eigenvalues; never a bound below the norm."""

import pytest
import torch
import torch.nn.functional as F
from nn_helpers import dense_matrix

from robustlab.nn.lipschitz import cpl
from robustlab.nn.lipschitz.cpl import CPLConv2d, temple_test, torus_second_eigenvalue

SHAPES = [  # (out, in) channels, kernel size, image size
    ((3, 3), (3, 3), (8, 8)),
    ((4, 2), (3, 3), (9, 7)),
    ((2, 3), (5, 5), (6, 10)),
    ((3, 3), (3, 1), (8, 5)),
    ((2, 2), (1, 3), (4, 9)),
]


def _spectrum(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eigenvalues of W^T W, W the zero-padded 'same' convolution (dense, descending)."""
    padding = (kernel.shape[2] // 2, kernel.shape[3] // 2)
    operator = dense_matrix(lambda x: F.conv2d(x, kernel, padding=padding), (kernel.shape[1], *size))
    return torch.linalg.eigvalsh(operator.t() @ operator).flip(0)


def _torus_spectrum(kernel: torch.Tensor, periods: tuple[int, int]) -> torch.Tensor:
    """Eigenvalues of C^T C, C the circular convolution on the periods' torus (dense)."""
    kh, kw = kernel.shape[2:]

    def circular(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="circular")
        return F.conv2d(padded, kernel)

    operator = dense_matrix(circular, (kernel.shape[1], *periods))
    return torch.linalg.eigvalsh(operator.t() @ operator).flip(0)


@pytest.mark.parametrize("channels, kernel_size, size", SHAPES)
@pytest.mark.parametrize("extra", [0, 1, 3])
def test_torus_second_eigenvalue_is_the_torus_one_and_bounds_the_convolutions(channels, kernel_size, size, extra):
    torch.manual_seed(sum(size) + extra)
    kernel = torch.randn(*channels, *kernel_size, dtype=torch.float64)
    periods = (size[0] + kernel_size[0] // 2 + extra, size[1] + kernel_size[1] // 2 + extra)
    second = torus_second_eigenvalue(kernel, periods)
    assert second == pytest.approx(float(_torus_spectrum(kernel, periods)[1]), rel=1e-9)
    assert float(_spectrum(kernel, size)[1]) <= second


@pytest.mark.parametrize("channels, kernel_size, size", SHAPES)
def test_temple_test_proves_the_top_eigenvalue_and_refuses_anything_below_it(channels, kernel_size, size):
    """With a valid lambda_2 bound (the exact one, then one a little above) and the exact top
    vector, Temple proves lambda_1 (1 + 1e-9) where lambda_1 is simple; with that vector or any
    other it never proves lambda_1 (1 - 1e-9): that would be a false certificate. (A 3x1
    kernel acts on each column alike: lambda_1 has multiplicity W, and Temple proves nothing.)"""
    torch.manual_seed(len(size) + size[0])
    kernel = torch.randn(*channels, *kernel_size, dtype=torch.float64)
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    operator = dense_matrix(lambda x: F.conv2d(x, kernel, padding=padding), (channels[1], *size))
    values, vectors = torch.linalg.eigh(operator.t() @ operator)
    top, second = float(values[-1]), float(values[-2])
    vector = vectors[:, -1].reshape(1, channels[1], *size)
    for bound_on_second in (second, second + 0.5 * (top - second)):
        assert temple_test(kernel, vector, bound_on_second, top * (1 + 1e-9)) == (top - second > 1e-6 * top)
        assert not temple_test(kernel, vector, bound_on_second, top * (1 - 1e-9))
        for trial in range(20):
            noisy = vector + 10.0 ** -(trial % 5) * torch.randn_like(vector)
            assert not temple_test(kernel, noisy, bound_on_second, top * (1 - 1e-9))


def test_temple_test_refuses_a_bound_at_or_below_the_second_eigenvalue_bound():
    torch.manual_seed(0)
    kernel = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    vector = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    assert not temple_test(kernel, vector, 5.0, 5.0)
    assert not temple_test(kernel, vector, 5.0, 4.0)
    assert not temple_test(kernel, torch.zeros_like(vector), 1.0, 1e9)


def _peaked_layer(channels: int, size: tuple[int, int]) -> CPLConv2d:
    """A layer whose operator's top eigenvalue stands apart, as on trained layers: a kernel
    close to a rank-one channel map times a blur (at initialisation, random kernels put the
    torus's second eigenvalue 1-8% above the norm, and Temple cannot apply)."""
    torch.manual_seed(size[0] * 31 + size[1])
    layer = CPLConv2d(channels, input_size=size).double().eval()
    blur = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    peaked = torch.randn(channels, 1, 1, 1, dtype=torch.float64) * torch.randn(1, channels, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(peaked * torch.outer(blur, blur) + 0.05 * torch.randn_like(layer.weight))
    return layer


def _norm(layer: CPLConv2d, size: tuple[int, int]) -> float:
    return float(torch.linalg.matrix_norm(dense_matrix(lambda x: layer.down(x), (layer.channels, *size)), ord=2))


@pytest.mark.parametrize("size", [(8, 8), (10, 9), (12, 16)])
def test_cpl_eval_sigma_on_images_from_temple_min_size_is_proved_by_temple_alone(size, monkeypatch):
    """The shift test is not run (it would fail the test); sigma is the norm within 5e-6,
    the same sigma as the shift test proves when Temple is switched off."""
    layer = _peaked_layer(3, size)
    monkeypatch.setattr(cpl, "PROVED_SIGMAS", {})
    with monkeypatch.context() as patched:
        patched.setattr(cpl, "shift_test", lambda *args: pytest.fail("the shift test ran"))
        by_temple = float(layer.eval_sigma())
    exact = _norm(layer, size)
    assert exact <= by_temple <= exact * (1 + 6e-6)
    monkeypatch.setattr(cpl, "TEMPLE_MIN_SIZE", 10**6)
    assert float(_peaked_layer(3, size).eval_sigma()) == by_temple


def test_cpl_eval_sigma_falls_back_to_the_shift_test_where_the_torus_bound_is_too_high(monkeypatch):
    """At initialisation the torus's second eigenvalue lies above the norm (8x8, 3 channels:
    by 8%): the shift test proves sigma."""
    monkeypatch.setattr(cpl, "PROVED_SIGMAS", {})
    calls = []
    original = cpl.shift_test
    monkeypatch.setattr(cpl, "shift_test", lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    layer = CPLConv2d(3, input_size=(8, 8)).double().eval()
    exact = _norm(layer, (8, 8))
    assert exact <= float(layer.eval_sigma()) <= exact * (1 + 6e-6)
    assert calls
