import json
import re

import pytest
import torch
import yaml
from train_helpers import tiny_config

from robustlab.certify.evaluate import evaluate
from robustlab.config import ConfigError
from robustlab.data.splits import prepare_data
from robustlab.files import safe_torch_load
from robustlab.nn.models import ARCHITECTURE_VERSION, architecture_change, create_model
from robustlab.runs.checkpoint import load_run_model
from robustlab.runs.store import Run, RunStore
from robustlab.train import step
from robustlab.train.loop import TrainingDivergedError, train
from robustlab.train.step import cpu_bf16_flags


def test_training_writes_a_complete_run(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = tiny_config("train.eval_every=1", "augment.crop_padding=1")
    run = train(config, run_dir=tmp_path / "runs" / "a", store=store, progress=False)

    results = run.load_results()
    assert results.steps == 24 and results.epochs == 2  # 1437 images in batches of 128
    assert results.accuracy > 0.3 and results.lipschitz_constant == 1.0  # chance 0.1; 24 steps
    assert [point.label for point in results.cra] == ["36/255", "72/255", "108/255", "1"]
    assert results.torch_version == torch.__version__ and results.device == "cpu"
    assert results.architecture_version == ARCHITECTURE_VERSION
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == [1, 2, 2]
    assert "test_cra_36/255" in metrics[0] and metrics[-1]["final"]
    assert metrics[-1]["test_accuracy"] == results.accuracy
    assert store.query(status="done")[0].results.accuracy == results.accuracy

    checkpoint = safe_torch_load(run.checkpoint_path)  # weights_only=True
    assert checkpoint["state"]["step"] == 24 and checkpoint["architecture"]["name"] == "lipmlp-aol"

    model, loaded_config = load_run_model(run.path)
    assert loaded_config == config and not model.training
    data = prepare_data(config.data)
    again = evaluate(model, data.x_eval, data.y_eval, config.eval.eps)
    assert again.accuracy == results.accuracy
    assert [point.cra for point in again.cra] == [point.cra for point in results.cra]


def test_subsets_train_for_the_same_number_of_images_and_epochs_may_be_fractional(tmp_path):
    scaled = train(tiny_config("data.subset_size=200", "train.epochs=0.5"), tmp_path / "s", progress=False)
    # the budget is images: 0.5 * 1437 = 718.5 of them, in full steps of 128 (the last batch of a pass filled)
    assert scaled.load_results().steps == 6
    fractional = train(tiny_config("train.epochs=1.5"), tmp_path / "f", progress=False)
    assert fractional.load_results().steps == 18  # 1.5 epochs of 12 batches
    assert [m["step"] for m in fractional.metrics() if not m.get("final")] == [12, 18]


def test_divergence_stops_with_advice_and_keeps_the_last_good_checkpoint(tmp_path):
    # a standard net at lr 100 survives the first epoch's warm-up, then blows up
    config = tiny_config("model.name=simpleconvnet", "model.kwargs={width: 4}", "train.epochs=6", "optim.lr=100")
    store = RunStore(tmp_path)
    with pytest.raises(
        TrainingDivergedError, match=r"NaN or infinite at step \d+ \(epoch \d+, lr [\d.]+\).*Lower optim.lr"
    ) as error:
        train(config, tmp_path / "nan", store=store, progress=False)
    diverged_epoch = int(re.search(r"epoch (\d+)", str(error.value)).group(1))
    run = Run(tmp_path / "nan")
    checkpoint = safe_torch_load(run.checkpoint_path)
    assert diverged_epoch >= 2 and checkpoint["state"]["epoch"] == diverged_epoch - 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    assert not run.model_path.exists() and not run.results_path.exists()
    (row,) = store.query()
    assert row.status == "failed" and row.error.startswith("TrainingDivergedError: the training loss became NaN")


def test_a_subset_logs_and_checkpoints_once_per_full_set_epoch_not_per_pass(tmp_path):
    # 48 images (one batch per pass) for 2 full-set epochs: 2 * 1437 / 48 = 59.9 -> 60 passes
    run = train(tiny_config("data.subset_size=48", "train.epochs=2"), tmp_path / "s", progress=False)
    records = [m for m in run.metrics() if not m.get("final")]
    assert [(m["epoch"], m["step"]) for m in records] == [(1, 30), (2, 60)]
    assert safe_torch_load(run.checkpoint_path)["state"]["epoch"] == 60  # loader passes done


def test_a_run_that_fails_before_training_leaves_no_run_behind(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="missing.npz"):
        train(tiny_config(f"data.name={tmp_path / 'missing.npz'}"), tmp_path / "bad", store=store, progress=False)
    with pytest.raises(ValueError, match="subset size"):
        train(tiny_config("data.subset_size=100000"), store=store, progress=False)
    assert store.query() == [] and [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_resume_refuses_a_different_config_and_a_finished_run(tmp_path):
    config = tiny_config("train.epochs=1")
    run = train(config, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="has finished"):
        train(None, run.path, resume=True, progress=False)
    run.results_path.unlink()
    with pytest.raises(ConfigError, match="different config"):
        train(tiny_config("train.epochs=3"), run.path, resume=True, progress=False)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(config, run.path, progress=False)


def test_weights_of_another_architecture_are_named(tmp_path):
    run = train(tiny_config("train.epochs=1"), tmp_path / "w", progress=False)
    saved = yaml.safe_load(run.config_path.read_text())
    saved["model"] = {"name": "lipconvnet-aol", "kwargs": {"width": 16}}
    run.config_path.write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match=r"'lipmlp-aol' model .*config.yaml describes 'lipconvnet-aol'"):
        load_run_model(run.path)


def test_weights_of_an_older_architecture_version_are_refused_where_they_changed(tmp_path):
    run = train(tiny_config("train.epochs=1"), tmp_path / "old", progress=False)  # lipmlp-aol: has MaxMin
    for path in (run.model_path, run.checkpoint_path):
        saved = safe_torch_load(path)
        assert saved["architecture"]["version"] == ARCHITECTURE_VERSION
        del saved["architecture"]["version"]  # as written before architectures had versions
        torch.save(saved, path)
    with pytest.raises(ValueError, match="since architecture version 2, MaxMin pairs adjacent channels"):
        load_run_model(run.path)
    run.results_path.unlink()  # as if killed before finishing: resuming reads checkpoint.pt
    with pytest.raises(ValueError, match="checkpoint.pt does not fit .* Train the run again"):
        train(None, run.path, resume=True, progress=False)
    # a model without the changed layer: the same weights still compute the same function
    assert architecture_change(create_model("simpleconvnet", (3, 8, 8), 10), saved_version=1) is None
    assert "newer robustlab" in architecture_change(
        create_model("simpleconvnet", (3, 8, 8), 10), saved_version=ARCHITECTURE_VERSION + 1
    )


def test_missing_weights_are_explained(tmp_path):
    run = RunStore(tmp_path).create(tiny_config())
    with pytest.raises(FileNotFoundError, match="neither model.pt nor checkpoint.pt"):
        load_run_model(run.path)


def test_cpu_bf16_flags_are_read_from_cpuinfo(tmp_path):
    xeon, old, arm = tmp_path / "xeon", tmp_path / "old", tmp_path / "arm"
    xeon.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n\n")
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: bf16\n\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n\n")
    assert cpu_bf16_flags(xeon) == {"avx512_bf16", "amx_bf16"}
    assert cpu_bf16_flags(old) == set()  # a flag named on another line does not count
    assert cpu_bf16_flags(arm) == {"bf16"}
    assert cpu_bf16_flags(tmp_path / "missing") == set()


def test_bfloat16_is_refused_on_a_cpu_without_bf16_arithmetic(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n\n")
    monkeypatch.setattr(step, "CPUINFO", cpuinfo)
    config = tiny_config("train.device=cpu", "train.epochs=1", "train.precision=bfloat16")
    with pytest.raises(ConfigError, match=r"needs native bfloat16 arithmetic .* use train.precision=float32"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.skipif(not cpu_bf16_flags(), reason="bfloat16 training on this CPU is refused (no bf16 arithmetic)")
def test_bfloat16_and_channels_last_train_while_certification_stays_float64(tmp_path):
    config = tiny_config(
        "model.name=lipconvnet-aol",
        "model.kwargs={width: 8, depth: 1}",
        "train.epochs=1",
        "train.precision=bfloat16",
        "train.channels_last=true",
    )
    run = train(config, tmp_path / "bf16", progress=False)
    results = run.load_results()
    model, _ = load_run_model(run.path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    data = prepare_data(config.data)
    assert evaluate(model, data.x_eval, data.y_eval).cra == results.cra
    assert json.loads(run.results_path.read_text())["steps"] == 12
