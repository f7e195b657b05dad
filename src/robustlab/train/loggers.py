"""Optional mirrors of the metrics log: TensorBoard and Weights & Biases (offline).

Off by default (``train.log_to: []``); each is an optional extra (``robustlab[tensorboard]``,
``robustlab[wandb]``). The run folder's ``metrics.jsonl`` and the run index stay the record:
a mirror receives the numbers of each record written there, for the tool's dashboards.
TensorBoard events go to ``RUN/tensorboard/``; W&B runs offline into ``RUN/wandb/``
(``wandb sync`` uploads them later), so training never needs the network.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from robustlab.config import ConfigError, ExperimentConfig
from robustlab.runs.store import Run

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # log_to name -> the package it needs


def check_available(targets: Sequence[str]) -> None:
    """A ConfigError before training if a mirror's package is missing."""
    for target in targets:
        if importlib.util.find_spec(PACKAGES[target]) is None:
            raise ConfigError(
                f"train.log_to={target} needs the {PACKAGES[target]} package, which is not installed; "
                f"install it with `pip install 'robustlab[{target}]'`, or leave {target} out of train.log_to"
            )


class MetricWriter(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class MetricMirrors:
    """Writes every metrics record's numbers to the tools in ``targets`` (none: does nothing)."""

    def __init__(self, targets: Sequence[str], run: Run, config: ExperimentConfig):
        check_available(targets)
        self.writers: list[MetricWriter] = [_OPENERS[target](run, config) for target in targets]

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        scalars = {
            key: float(value)
            for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "time")
        }
        for writer in self.writers:
            writer.log(scalars, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


class _TensorBoard:
    def __init__(self, run: Run, config: ExperimentConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a killed run keeps what was logged, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run: Run, config: ExperimentConfig):
        import wandb

        self.run = wandb.init(
            mode="offline",
            dir=str(run.path),
            project="robustlab",
            name=run.id,
            config=config.to_dict(),
            reinit="create_new",  # a run per training run, also in one process (a sweep)
            settings=wandb.Settings(silent=True),  # its banners would interleave with the progress lines
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


_OPENERS: dict[str, Callable[[Run, ExperimentConfig], MetricWriter]] = {"tensorboard": _TensorBoard, "wandb": _WandB}
