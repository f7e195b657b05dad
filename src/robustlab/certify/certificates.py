"""The certified robust accuracy of certified radii: at chosen radii (``cra_points``) and on
a dense grid (``dense_curve``), as the records of ``robustlab.records`` that certification
hands the run store and reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustlab.certify.margins import cra, cra_curve
from robustlab.records import CRACurve, CRAPoint, eps_label

CURVE_POINTS = 101  # radii of the dense CRA curve, from 0 to at least 1


def cra_points(radii: torch.Tensor, eps: Sequence[float]) -> list[CRAPoint]:
    """CRA at each radius of ``eps`` for points with certified ``radii``."""
    return [CRAPoint(e, eps_label(e), cra(radii, e)) for e in eps]


def dense_curve(radii: torch.Tensor, eps: Sequence[float]) -> CRACurve:
    """CRA at ``CURVE_POINTS`` radii from 0 to the largest of 1, ``eps`` and the radii."""
    top = max(1.0, *eps, radii.max().item())
    grid = torch.linspace(0, top, CURVE_POINTS).tolist()
    return CRACurve(grid, cra_curve(radii, grid))
