"""Cholesky factorisation at matrix-multiply speed, for the CPL shift test (``cpl.shift_test``).

On one core of this project's Xeon, float64: LAPACK's potrf through ``torch.linalg.cholesky_ex``
runs at 14-20 GFLOP/s on 512-2048 matrices, where a GEMM runs at 40-70. Recursion in halves
puts most of the flops into GEMMs and triangular solves (512: 17, 1024: 31, 2048: 35 GFLOP/s),
and a symmetric product A A^H computed only on and below the diagonal costs half a GEMM
(1.35-1.65x the speed of the full product). ``benchmarks/certify_speed.py`` gives the effect
on a certification.

Every entry is still the textbook l_ij = (a_ij - sum_k l_ik conj(l_jk)) / l_jj, its inner
product grouped in another order, so Demmel's bound for a completed floating-point Cholesky
(any order of the inner products; ``cpl.shift_test``) holds unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

FACTOR_LEAF = 64  # at most this size, LAPACK factors (measured best of 64, 128, 256 at 512-2048)
PRODUCT_LEAF = 128  # at most this many rows, a symmetric product is one full GEMM (of 128, 256, 512)


def factor_in_place(matrix: Tensor) -> bool:
    """Overwrite the Hermitian ``matrix`` (only its lower triangle is read) with its lower
    Cholesky factor, zeros above the diagonal; False where a pivot is not positive (the
    matrix is then left part-factored)."""
    size = matrix.shape[-1]
    if size <= FACTOR_LEAF:
        factor, info = torch.linalg.cholesky_ex(matrix.tril() + matrix.tril(-1).mH)
        matrix.copy_(factor)
        return not int(info)
    half = size // 2
    top, corner, bottom = matrix[:half, :half], matrix[half:, :half], matrix[half:, half:]
    if not factor_in_place(top):
        return False
    corner.copy_(torch.linalg.solve_triangular(top, corner.mH, upper=False).mH)  # A21 L11^-H
    subtract_lower_product(bottom, corner)
    matrix[:half, half:].zero_()
    return factor_in_place(bottom)


def subtract_lower_product(target: Tensor, rows: Tensor) -> None:
    """target -= rows rows^H on and below the diagonal (above it, where the recursion stops
    at a full product, target changes too: the caller reads only the lower triangle)."""
    size = target.shape[-1]
    if size <= PRODUCT_LEAF:
        target.addmm_(rows, rows.mH, alpha=-1)
        return
    half = size // 2
    subtract_lower_product(target[:half, :half], rows[:half])
    target[half:, :half].addmm_(rows[half:], rows[:half].mH, alpha=-1)
    subtract_lower_product(target[half:, half:], rows[half:])
