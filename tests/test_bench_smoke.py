"""benchmarks/bench.py end to end in its smoke size, on the CPU.

The benchmark runs as users run it (a real subprocess training real, tiny networks on
synthetic data). No timing is asserted: the numbers depend on the machine. What is
checked: every row is there with positive, finite measurements, the JSON parses and
the appended markdown holds the same table under the header (command, commit, torch
version, hardware, data). Bad input is checked in-process: it fails before any work.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench.py"
MODELS = ("simpleconvnet", "lipconvnet-cpl", "lipconvnet-aol", "lipmlp-aol")


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(BENCH),
        "--size",
        "smoke",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--work-dir",
        str(tmp_path),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def load_bench():
    spec = importlib.util.spec_from_file_location("robustlab_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def assert_measured(row: dict) -> None:
    assert row["seconds"] > 0 and math.isfinite(row["seconds"]), row
    assert row["rate"] > 0 and math.isfinite(row["rate"]), row
    assert row["meets"] == "-", row  # CPU figures are never compared with the GPU targets
    assert row["peak_gib"] is None, row  # GPU memory only


@pytest.mark.slow
def test_smoke_run_has_every_row_as_json_and_markdown(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n")
    report = json.loads(run_bench(tmp_path, "--json", "--append", str(results)).stdout)

    rows = {(r["job"], r["model"], r["setting"]): r for r in report["rows"]}
    expected = [("train", m, "float32") for m in MODELS] + [("certify", "simpleconvnet", "float32")]
    expected += [("certify", m, "float64") for m in MODELS[1:]]
    expected += [("smoothing", "simpleconvnet", p) for p in ("float32", "bfloat16", "bfloat16 channels_last")]
    assert sorted(rows) == sorted(expected)
    for row in rows.values():
        assert_measured(row)
    assert rows[("train", "lipconvnet-cpl", "float32")]["images"] == 128  # the smoke size's training set
    assert rows[("train", "lipconvnet-cpl", "float32")]["target"] == "<= 2.5 s/epoch"
    assert rows[("smoothing", "simpleconvnet", "bfloat16")]["images"] == "4x50"

    meta = report["meta"]
    assert meta["command"].startswith("python benchmarks/bench.py --size smoke")
    assert meta["torch"] == torch.__version__ and meta["device"] == "cpu"
    assert meta["data"].startswith("synthetic") and meta["hardware"].startswith("CPU ")

    text = results.read_text()
    assert text.startswith("# earlier results\n")  # appended, not overwritten
    for key in ("command", "git", "torch", "hardware", "data"):
        assert f"\n{key}: {meta[key]}\n" in text
    table = [line.split() for line in text.splitlines() if line.split()[:1] in (["train"], ["certify"], ["smoothing"])]
    assert sorted((cells[0], cells[1]) for cells in table) == sorted((job, model) for job, model, _ in expected)


@pytest.mark.slow
def test_fast_path_options_train_and_accuracy_rows(tmp_path):
    """bf16 autocast and channels_last run real training steps; certification stays float64."""
    args = [
        "--jobs",
        "train,accuracy",
        "--models",
        "lipconvnet-cpl,lipmlp-aol",
        "--set",
        "train.precision=bfloat16",
        "--set",
        "train.channels_last=true",
    ]
    report = json.loads(run_bench(tmp_path, "--json", *args).stdout)
    by_job: dict[str, list[dict]] = {}
    for row in report["rows"]:
        by_job.setdefault(row["job"], []).append(row)
    assert sorted(r["model"] for r in by_job["train"]) == ["lipconvnet-cpl", "lipmlp-aol"]
    assert {r["setting"] for r in by_job["train"]} == {"bfloat16 channels_last"}
    assert {r["setting"] for r in by_job["certify"]} == {"float64"}
    assert [r["model"] for r in by_job["accuracy"]] == ["lipconvnet-cpl", "lipmlp-aol"]
    for row in by_job["accuracy"]:
        assert row["result"].startswith("val acc ") and "CRA(36/255)" in row["result"], row
        assert row["setting"].startswith("bfloat16 channels_last, 1 ep"), row
    for row in report["rows"]:
        assert_measured(row)
    assert report["meta"]["overrides"] == ["train.precision=bfloat16", "train.channels_last=true"]


@pytest.mark.slow
def test_smoothing_of_a_trained_base_net_compares_predictions_across_settings(tmp_path):
    args = ["--jobs", "smoothing", "--smoothing", "float32,bfloat16", "--smoothing-train-epochs", "1"]
    rows = json.loads(run_bench(tmp_path, "--json", *args).stdout)["rows"]
    assert [r["setting"] for r in rows] == ["float32", "bfloat16"]
    for row in rows:
        assert_measured(row)
        assert "CRA(36/255) " in row["result"], row
    assert "same predictions as float32" in rows[1]["result"] and "same predictions" not in rows[0]["result"]


@pytest.mark.slow
def test_profile_step_times_the_loaders_and_the_steps(tmp_path):
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "profile_step.py"),
        "--device",
        "cpu",
        "--images",
        "256",
        "--presets",
        "aol-mlp,simpleconvnet",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--set",
        "train.batch_size=64",
        "--set",
        "model.kwargs={width: 16}",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [line.split()[1] for line in lines] == ["aol-mlp", "simpleconvnet"]
    for line in lines:
        assert "float32, batch 64" in line and "per epoch of 4 steps" in line, line


@pytest.mark.skipif(
    os.environ.get("ROBUSTLAB_TEST_COMPILE") != "1",
    reason="torch.compile's first compilation takes 20-40 s on a CPU; set ROBUSTLAB_TEST_COMPILE=1",
)
def test_compiled_training_steps(tmp_path):
    args = ["--jobs", "train", "--models", "lipmlp-aol", "--set", "train.compile=true"]
    report = json.loads(run_bench(tmp_path, "--json", *args).stdout)
    assert [(r["job"], r["setting"]) for r in report["rows"]] == [("train", "float32 compile"), ("certify", "float64")]
    for row in report["rows"]:
        assert_measured(row)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "train,fly"], "unknown job 'fly'; choose from: train, smoothing, syncs, accuracy"),
        (["--models", "resnet"], "unknown model 'resnet'"),
        (["--jobs", "syncs"], "counts CUDA synchronisations: run it with --device cuda"),
        (["--set", "train.precision=fp8"], "train.precision: 'fp8' is not a valid choice"),
        (["--data-dir", "{tmp}/empty"], "holds no CIFAR-10: expected cifar10.npz"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    bench = load_bench()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    threads = torch.get_num_threads()
    try:
        status = bench.main(["--size", "smoke", "--device", "cpu", "--quiet", "--work-dir", str(tmp_path), *args])
    finally:
        torch.set_num_threads(threads)
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("bench.py: error: ") and message in error, error


def test_accuracy_job_refuses_synthetic_data_at_full_size(tmp_path, capsys):
    status = load_bench().main(["--size", "full", "--device", "cpu", "--jobs", "accuracy", "--work-dir", str(tmp_path)])
    assert status == 2
    assert "needs real CIFAR-10: give --data-dir" in capsys.readouterr().err
