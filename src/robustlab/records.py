"""The records that pass from certification to the run store and reports, with their JSON:
``CRAPoint`` and ``CRACurve`` (certified robust accuracy at chosen radii and on a dense
grid), ``EvalResult`` (one certified evaluation, ``certify.evaluate.evaluate``),
``SmoothingParams`` and ``SmoothingResult`` (what a smoothing method runs with and returns),
and ``ARCHITECTURE_VERSION``, which results and weights carry.

Plain data, importing neither torch nor NumPy: the run store reads them to list, reindex
and match runs (a sweep's ``--status``), which must take a fraction of a second at 10,000
runs. CRA is a fraction in [0, 1] here and in every file; only reports show percentages.
The smoothing parameters head smoothing's resumable records file (``{"header": params}``)
and are spread into its summary, whose other keys follow ``EvalResult`` (``accuracy``,
``cra``, ``curve``), so smoothing and Lipschitz results read the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Saved with the weights and in results.json. Bumped when a layer starts to compute another
# function from the same weights (``robustlab.nn.models.ARCHITECTURE_CHANGES`` names each
# change); the store matches a finished run to a sweep point only at the current version.
ARCHITECTURE_VERSION = 3


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


METHODS = ("estimate", "certify", "predict")
ABSTAIN = -1  # the prediction of certify and predict when the vote is too close
GUARANTEES = {
    "estimate": "none: a Monte-Carlo ESTIMATE of the smoothed classifier's radius (Prach & Lampert), not a certificate",
    "certify": "certified: each radius holds with probability >= 1 - alpha (Cohen et al. 2019, CERTIFY)",
    "predict": "prediction only: wrong with probability <= alpha when not abstaining "
    "(Cohen et al. 2019, PREDICT); no radius",
}
PRECISIONS = ("float32", "bfloat16")


@dataclass
class SmoothingParams:
    """The settings of one smoothing method; ``None`` marks a setting the method has not.

    ``batch_size`` says only how the work is split: results do not depend on it, so a run
    may resume with another one, and summaries leave it out.
    """

    method: str  # one of METHODS
    sigma: float  # noise standard deviation
    n: int  # noisy copies per image (certify: to certify the selected class)
    batch_size: int = 10_000  # noisy images per forward pass
    seed: int = 0
    n0: int | None = None  # certify: copies that select the top class
    alpha: float | None = None  # certify, predict: failure probability
    clip: list[float] | None = None  # estimate: the frequencies' clipping range
    precision: str | None = None  # estimate: float32 or bfloat16 autocast
    model_hash: str | None = None  # the model's fingerprint, set when it runs

    def check(self) -> None:
        """Raise a ValueError that names the first setting out of its range."""
        if self.method not in METHODS:
            raise ValueError(f"unknown smoothing method '{self.method}'; choose one of: {', '.join(METHODS)}")
        if self.clip is not None and not 0 < self.clip[0] < self.clip[1] < 1:
            raise ValueError(f"clip must be two frequencies 0 < low < high < 1, got {tuple(self.clip)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got '{self.precision}'")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 (the noise standard deviation), got {self.sigma}")
        for key in ("n", "n0", "batch_size"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")

    def to_dict(self) -> dict[str, Any]:
        """The settings the method has, in the order the records files always had them."""
        order = ("method", "sigma", "n0", "n", "alpha", "clip", "batch_size", "seed", "precision", "model_hash")
        return {key: getattr(self, key) for key in order if getattr(self, key) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmoothingParams:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)


@dataclass
class SmoothingTiming:
    """Speed of one call: only the images it computed, not those a resume reused."""

    seconds: float
    images_computed: int
    samples_per_second: float | None  # None when nothing was computed


@dataclass
class SmoothingResult:
    """Accuracy, CRA and the CRA curve of a smoothed classifier, with per-image ``records``.

    Abstentions count as failures. ``cra`` and ``curve`` are None for ``predict`` (no
    radius), ``abstain_rate`` for ``estimate`` (it never abstains). CRA is a fraction.
    """

    params: SmoothingParams
    num_images: int
    accuracy: float
    abstain_rate: float | None = None
    cra: list[CRAPoint] | None = None
    curve: CRACurve | None = None
    timing: SmoothingTiming | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # one per image, keys by method

    @property
    def method(self) -> str:
        return self.params.method

    @property
    def guarantee(self) -> str:
        return GUARANTEES[self.params.method]

    def cra_at(self, eps: float) -> float | None:
        return None if self.cra is None else cra_at(self.cra, eps)

    def to_dict(self, records: bool = True) -> dict[str, Any]:
        settings = {k: v for k, v in self.params.to_dict().items() if k not in ("method", "batch_size")}
        data: dict[str, Any] = {"method": self.method, "guarantee": self.guarantee, **settings}
        data.update(num_images=self.num_images, accuracy=self.accuracy)
        if self.abstain_rate is not None:
            data["abstain_rate"] = self.abstain_rate
        if self.cra is not None:
            data["cra"] = [point.to_dict() for point in self.cra]
        if self.curve is not None:
            data["curve"] = self.curve.to_dict()
        if self.timing is not None:
            data["timing"] = asdict(self.timing)
        if records:
            data["records"] = self.records
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmoothingResult:
        return cls(
            params=SmoothingParams.from_dict(data),
            num_images=int(data["num_images"]),
            accuracy=float(data["accuracy"]),
            abstain_rate=data.get("abstain_rate"),
            cra=[CRAPoint.from_dict(point) for point in data["cra"]] if "cra" in data else None,
            curve=CRACurve.from_dict(data["curve"]) if "curve" in data else None,
            timing=SmoothingTiming(**data["timing"]) if "timing" in data else None,
            records=list(data.get("records", [])),
        )
