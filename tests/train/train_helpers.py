"""Tiny real training configs shared by the training tests (digits data, small 1-Lipschitz MLP)."""

from robustlab.config import load_config

TINY = [
    "model.kwargs={width: 16, depth: 1}",
    "train.batch_size=128",
    "train.epochs=2",
    "train.device=cpu",
]


def tiny_config(*overrides: str):
    return load_config("digits", TINY + list(overrides))


def tiny_overrides(*overrides: str) -> list[str]:
    return TINY + list(overrides)
