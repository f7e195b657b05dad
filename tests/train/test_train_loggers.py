"""train.log_to mirrors the metrics log to TensorBoard / W&B; off by default, a clear error when missing."""

import importlib.util

import pytest
from train_helpers import tiny_config

from robustlab.config import ConfigError
from robustlab.train.loop import train


def test_no_mirror_by_default_and_a_missing_package_is_named_before_training(tmp_path):
    run = train(tiny_config("train.epochs=1"), run_dir=tmp_path / "plain", progress=False)
    assert not (run.path / "tensorboard").exists() and not (run.path / "wandb").exists()
    for target in ("tensorboard", "wandb"):
        if importlib.util.find_spec(target) is None:
            with pytest.raises(
                ConfigError, match=rf"train.log_to={target} needs the {target} package.*robustlab\[{target}\]"
            ):
                train(tiny_config(f"train.log_to=[{target}]"), run_dir=tmp_path / target)
            assert not (tmp_path / target).exists()


def test_tensorboard_receives_the_logged_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny_config("train.epochs=2", "train.log_to=tensorboard"), run_dir=tmp_path / "run", progress=False)
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    logged = [r for r in run.metrics() if "train_loss" in r]
    losses = [(e.step, e.value) for e in events.Scalars("train_loss")]
    assert losses == [(r["step"], pytest.approx(r["train_loss"], rel=1e-6)) for r in logged]
    assert "test_accuracy" in events.Tags()["scalars"]  # the final evaluation too


@pytest.mark.slow
def test_wandb_writes_an_offline_run_with_the_metrics(tmp_path, capfd):
    pytest.importorskip("wandb")
    run = train(tiny_config("train.epochs=1", "train.log_to=[wandb]"), run_dir=tmp_path / "run", progress=False)
    (offline,) = (run.path / "wandb").glob("offline-run-*/run-*.wandb")  # `wandb sync` uploads it
    data = offline.read_bytes()
    assert b"train_loss" in data and b"test_accuracy" in data
    assert "wandb" not in capfd.readouterr().err  # silent
