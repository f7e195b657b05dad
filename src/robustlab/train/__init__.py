"""Training: losses, optimizer and schedule, one step, and the loop from a config to a run folder."""

from robustlab.train.loop import TrainingDivergedError, train
from robustlab.train.losses import LOSSES, OffsetCrossEntropy, build_loss
from robustlab.train.optim import build_optimizer, build_schedule
from robustlab.train.step import TrainStep

__all__ = [
    "LOSSES",
    "OffsetCrossEntropy",
    "TrainStep",
    "TrainingDivergedError",
    "build_loss",
    "build_optimizer",
    "build_schedule",
    "train",
]
