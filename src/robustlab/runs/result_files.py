"""The result files of a run folder, typed: ``results.json`` (``RunResults``, written by
training) and ``certify.json`` (``CertifyReport``, written by ``robustlab certify``).

Each reads the JSON every robustlab version wrote and writes the same keys in the same order,
so old run folders load and new files read as before. Keys a reader does not know are
ignored; keys added since a file was written take the defaults that describe the old files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustlab.records import CRAPoint, EvalResult, SmoothingResult, cra_at

CERTIFY_FILE = "certify.json"  # in a run folder, written by `robustlab certify`
TRAIN_METRICS = ("train_loss", "train_accuracy", "train_cra")  # the last epoch's, over its augmented batches


@dataclass
class RunResults:
    """What a finished training run measured (``results.json``)."""

    accuracy: float  # on the evaluation split
    cra: list[CRAPoint]  # at the config's eval.eps; empty for standard networks
    eval_split: str  # "val" or "test"
    n_eval: int  # images evaluated
    n_train: int  # training images (subset and extra data included)
    lipschitz_constant: float | None  # None: a standard network
    epochs: float  # passes over the training set, may be fractional
    steps: int
    train_time_s: float
    time_per_epoch_s: float
    eval_time_s: float
    device: str
    world_size: int
    torch_version: str
    train_loss: float | None = None
    train_accuracy: float | None = None
    train_cra: float | None = None  # at PAPER_EPS, Lipschitz networks only
    architecture_version: int = 1  # files from before architecture versions hold version-1 weights
    warnings: list[str] = field(default_factory=list)  # what the summary must say plainly (chance accuracy)
    train_eval: EvalResult | None = None  # eval.train_set: the training images, certified, no augmentation
    smoothing: SmoothingResult | None = None  # eval.smoothing_samples: the paper's estimate (no records)

    def cra_at(self, eps: float) -> float | None:
        return cra_at(self.cra, eps)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "accuracy": self.accuracy,
            "cra": [point.to_dict() for point in self.cra],
            "eval_split": self.eval_split,
            "n_eval": self.n_eval,
            "n_train": self.n_train,
            "lipschitz_constant": self.lipschitz_constant,
            "epochs": self.epochs,
            "steps": self.steps,
        }
        data.update({key: getattr(self, key) for key in TRAIN_METRICS if getattr(self, key) is not None})
        data.update(
            train_time_s=self.train_time_s,
            time_per_epoch_s=self.time_per_epoch_s,
            eval_time_s=self.eval_time_s,
            device=self.device,
            world_size=self.world_size,
            torch_version=self.torch_version,
            architecture_version=self.architecture_version,
        )
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.train_eval is not None:
            data["train_eval"] = self.train_eval.to_dict()
        if self.smoothing is not None:
            data["smoothing"] = self.smoothing.to_dict(records=False)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        return cls(
            accuracy=float(data["accuracy"]),
            cra=[CRAPoint.from_dict(point) for point in data.get("cra") or []],
            eval_split=str(data["eval_split"]),
            n_eval=int(data["n_eval"]),
            n_train=int(data["n_train"]),
            lipschitz_constant=data["lipschitz_constant"],
            epochs=float(data["epochs"]),
            steps=int(data["steps"]),
            train_time_s=float(data["train_time_s"]),
            time_per_epoch_s=float(data["time_per_epoch_s"]),
            eval_time_s=float(data["eval_time_s"]),
            device=str(data["device"]),
            world_size=int(data["world_size"]),
            torch_version=str(data["torch_version"]),
            **{key: data[key] for key in TRAIN_METRICS if key in data},
            architecture_version=int(data.get("architecture_version", 1)),
            warnings=[str(warning) for warning in data.get("warnings", [])],
            train_eval=EvalResult.from_dict(data["train_eval"]) if data.get("train_eval") else None,
            smoothing=SmoothingResult.from_dict(data["smoothing"]) if data.get("smoothing") else None,
        )


@dataclass
class CertifyReport:
    """``robustlab certify``'s result of a run (``certify.json``): the evaluation of a split,
    and the attacks' soundness check when it was asked for."""

    run_dir: str
    split: str
    model: str  # the model's registry name
    evaluation: EvalResult
    soundness: dict[str, Any] | None = None  # certify.attacks.check_soundness's result

    def to_dict(self) -> dict[str, Any]:
        data = {"run_dir": self.run_dir, "split": self.split, "model": self.model, **self.evaluation.to_dict()}
        if self.soundness is not None:
            data["soundness"] = self.soundness
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertifyReport:
        return cls(
            str(data["run_dir"]),
            str(data["split"]),
            str(data["model"]),
            EvalResult.from_dict(data),
            data.get("soundness"),
        )
