"""What certification hands the next stage, and how it reads and writes its JSON.

``EvalResult`` is one certified evaluation (``certify.evaluate.evaluate``); ``CRAPoint`` and
``CRACurve`` are the certified robust accuracy at chosen radii and on a dense grid, shared
with randomized smoothing and the run store. CRA is a fraction in [0, 1] here and in every
file; only reports show percentages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.certify.margins import cra, cra_curve

CURVE_POINTS = 101  # radii of the dense CRA curve, from 0 to at least 1


def eps_label(eps: float) -> str:
    """``36/255`` for radii on the 1/255 grid (as the paper writes them), else the number."""
    steps = eps * 255
    if abs(steps - round(steps)) < 1e-6 and eps not in (0.0, 1.0):
        return f"{round(steps)}/255"
    return f"{eps:g}"


@dataclass
class CRAPoint:
    """Certified robust accuracy at one radius: the fraction of points certified at ``eps``."""

    eps: float
    label: str  # eps as the paper writes it, e.g. "36/255"
    cra: float

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "label": self.label, "cra": self.cra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CRAPoint:
        return cls(float(data["eps"]), str(data["label"]), float(data["cra"]))


def cra_points(radii: torch.Tensor, eps: Sequence[float]) -> list[CRAPoint]:
    """CRA at each radius of ``eps`` for points with certified ``radii``."""
    return [CRAPoint(e, eps_label(e), cra(radii, e)) for e in eps]


def cra_at(points: Sequence[CRAPoint], eps: float) -> float | None:
    """The CRA at radius ``eps`` among ``points``, or None if it was not certified there."""
    for point in points:
        if math.isclose(point.eps, eps, rel_tol=1e-9, abs_tol=1e-12):
            return point.cra
    return None


@dataclass
class CRACurve:
    """CRA on a grid of radii."""

    eps: list[float]
    cra: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "cra": self.cra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CRACurve:
        return cls(list(data["eps"]), list(data["cra"]))


def dense_curve(radii: torch.Tensor, eps: Sequence[float]) -> CRACurve:
    """CRA at ``CURVE_POINTS`` radii from 0 to the largest of 1, ``eps`` and the radii."""
    top = max(1.0, *eps, radii.max().item())
    grid = torch.linspace(0, top, CURVE_POINTS).tolist()
    return CRACurve(grid, cra_curve(radii, grid))


@dataclass
class ClassResult:
    """Accuracy (and CRA at the evaluation's radii, for Lipschitz nets) of one class."""

    label: int  # the class, written as "class"
    n: int
    accuracy: float | None  # None when the class has no points
    cra: list[float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class": self.label, "n": self.n, "accuracy": self.accuracy}
        if self.cra is not None:
            data["cra"] = self.cra
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassResult:
        return cls(int(data["class"]), int(data["n"]), data["accuracy"], data.get("cra"))


@dataclass
class EvalResult:
    """Accuracy and certified robust accuracy of a model on a set of images.

    ``cra`` is empty and ``curve`` and ``median_radius`` are None for standard networks
    (``lipschitz_constant is None``), which certify nothing.
    """

    n: int
    accuracy: float
    lipschitz_constant: float | None
    cra: list[CRAPoint]
    curve: CRACurve | None
    per_class: list[ClassResult]
    median_radius: float | None = None
    time_s: float | None = None  # certification time

    def cra_at(self, eps: float) -> float | None:
        return cra_at(self.cra, eps)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "n": self.n,
            "accuracy": self.accuracy,
            "lipschitz_constant": self.lipschitz_constant,
            "cra": [point.to_dict() for point in self.cra],
            "curve": None if self.curve is None else self.curve.to_dict(),
        }
        if self.median_radius is not None:
            data["median_radius"] = self.median_radius
        data["per_class"] = [entry.to_dict() for entry in self.per_class]
        if self.time_s is not None:
            data["time_s"] = self.time_s
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            n=int(data["n"]),
            accuracy=float(data["accuracy"]),
            lipschitz_constant=data["lipschitz_constant"],
            cra=[CRAPoint.from_dict(point) for point in data.get("cra") or []],
            curve=CRACurve.from_dict(data["curve"]) if data.get("curve") else None,
            per_class=[ClassResult.from_dict(entry) for entry in data.get("per_class") or []],
            median_radius=data.get("median_radius"),
            time_s=data.get("time_s"),
        )
