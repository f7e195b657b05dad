"""The recursive Cholesky behind the CPL shift test: LAPACK's factor, faster, never a false pass."""

import pytest
import torch

from robustlab.nn.lipschitz.cholesky import FACTOR_LEAF, PRODUCT_LEAF, factor_in_place, subtract_lower_product
from robustlab.nn.lipschitz.cpl import ConvGram, shift_test


def _hermitian(size: int, dtype: torch.dtype, smallest: float, seed: int = 0) -> torch.Tensor:
    """A random Hermitian matrix with eigenvalues from ``smallest`` to 1 + ``smallest``."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(size, size, dtype=dtype, generator=generator))
    values = smallest + torch.rand(size, dtype=torch.float64, generator=generator)
    values[0] = smallest
    return (basis * values.to(dtype)) @ basis.mH


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("size", [1, FACTOR_LEAF, FACTOR_LEAF + 1, 3 * FACTOR_LEAF + 5, 4 * PRODUCT_LEAF + 3])
def test_factor_in_place_is_lapacks_factor_and_reads_only_the_lower_triangle(size, dtype):
    matrix = _hermitian(size, dtype, smallest=1e-3)
    expected = torch.linalg.cholesky(matrix)
    work = matrix.clone()
    upper = torch.ones(size, size, dtype=torch.bool).triu(1)
    work[upper] = float("nan")
    assert factor_in_place(work)
    torch.testing.assert_close(work, expected, rtol=0, atol=1e-12)
    assert not work[upper].abs().any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("seed", range(4))
def test_factor_in_place_fails_on_a_matrix_with_a_negative_eigenvalue(dtype, seed):
    """-1e-8 against eigenvalues up to 1 (condition far beyond the rounding): LAPACK refuses
    it, and so must every recursion level, wherever the negative direction lies."""
    matrix = _hermitian(3 * FACTOR_LEAF + 17, dtype, smallest=-1e-8, seed=seed)
    assert int(torch.linalg.cholesky_ex(matrix).info)
    assert not factor_in_place(matrix.clone())


def test_factor_in_place_fails_when_only_the_last_pivot_is_negative():
    """A matrix positive definite except in its last coordinate: the failure is found in the
    bottom half's last leaf."""
    matrix = _hermitian(2 * FACTOR_LEAF + 9, torch.float64, smallest=1e-2)
    matrix[-1, -1] -= 10.0
    assert not factor_in_place(matrix.clone())


@pytest.mark.parametrize("size, columns", [(PRODUCT_LEAF, 7), (3 * PRODUCT_LEAF + 1, 2 * PRODUCT_LEAF)])
def test_subtract_lower_product_is_the_full_product_on_and_below_the_diagonal(size, columns):
    torch.manual_seed(0)
    target, rows = torch.randn(size, size, dtype=torch.float64), torch.randn(size, columns, dtype=torch.float64)
    expected = (target - rows @ rows.mT).tril()
    subtract_lower_product(target, rows)
    torch.testing.assert_close(target.tril(), expected, rtol=0, atol=1e-12)


def test_shift_test_with_blocks_larger_than_the_leaves_proves_the_top_eigenvalue_and_only_it():
    """Image rows of 12 x 16 = 192 unknowns: every diagonal block goes through the recursion
    (the other shift-test tests have blocks below ``FACTOR_LEAF``)."""
    torch.manual_seed(3)
    kernel = torch.randn(16, 16, 3, 3, dtype=torch.float64) / 12
    gram = ConvGram(kernel, (5, 12))
    assert gram.channels * gram.size[1] > 2 * FACTOR_LEAF
    top = float(torch.linalg.eigvalsh(gram.matrix())[-1])
    assert shift_test(gram, top * (1 + 1e-9), kernel)
    assert not shift_test(gram, top * (1 - 1e-9), kernel)
