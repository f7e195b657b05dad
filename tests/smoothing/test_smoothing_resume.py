"""Resuming a smoothing run: an interrupted run, continued, equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from smoothing_helpers import SIGMA, linear_model, points_at

from robustlab.certify import smoothing

RADII = [0.3, -0.1, 0.0, 0.05, 0.2, -0.25, 0.1, 0.15]
LABELS = [1, 1, 0, 1, 1, 0, 0, 1]


class Interrupted(Exception):
    pass


def interrupt_after(model: torch.nn.Module, calls: int):
    """A forward hook that raises on forward pass number ``calls + 1``, like a Ctrl-C would."""
    seen = []

    def hook(module, inputs):
        seen.append(1)
        if len(seen) > calls:
            raise Interrupted

    return model.register_forward_pre_hook(hook)


def without_timing(result: smoothing.SmoothingResult) -> dict:
    return {k: v for k, v in result.to_dict().items() if k != "timing"}


@pytest.mark.parametrize("method", ["estimate", "certify", "predict"])
def test_interrupted_run_resumes_to_the_same_table(tmp_path, method):
    model = linear_model()
    x = points_at(model, RADII)
    run = getattr(smoothing, method)
    options = dict(n=2000, batch_size=4000, chunk_size=2)
    reference = run(model, x, LABELS, SIGMA, **options, output=tmp_path / "reference.jsonl")

    output = tmp_path / "resumed.jsonl"
    handle = interrupt_after(model, calls=3 if method != "certify" else 5)
    with pytest.raises(Interrupted):
        run(model, x, LABELS, SIGMA, **options, output=output)
    handle.remove()
    finished_before = len(output.read_text().splitlines()) - 1
    assert 0 < finished_before < len(RADII)

    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    resumed = run(model, x, LABELS, SIGMA, **options, output=output)
    assert without_timing(resumed) == without_timing(reference)
    assert output.read_text() == (tmp_path / "reference.jsonl").read_text()
    assert len(calls) < len(RADII) * (2 if method == "certify" else 1)  # finished images were skipped


CHILD = """
import sys, time, torch
sys.path.insert(0, {helpers!r})
from smoothing_helpers import SIGMA, linear_model, points_at
from robustlab.certify import smoothing

model = linear_model()
model.register_forward_pre_hook(lambda module, inputs: time.sleep(0.05))  # time to kill it
smoothing.estimate(model, points_at(model, {radii!r}), {labels!r}, SIGMA, n=1000, chunk_size=1,
                   output={output!r})
"""


def test_killed_process_resumes_to_the_same_table(tmp_path):
    output = tmp_path / "killed.jsonl"
    script = CHILD.format(helpers=str(Path(__file__).parent), radii=RADII, labels=LABELS, output=str(output))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 60
        while not (output.exists() and len(output.read_text().splitlines()) >= 3):
            assert child.poll() is None, "the child finished or failed before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(output.read_text().splitlines()) - 1 < len(RADII)

    model = linear_model()
    x = points_at(model, RADII)
    resumed = smoothing.estimate(model, x, LABELS, SIGMA, n=1000, output=output)
    uninterrupted = smoothing.estimate(model, x, LABELS, SIGMA, n=1000)
    assert without_timing(resumed) == without_timing(uninterrupted)


def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    model = linear_model()
    x = points_at(model, RADII[:3])
    output = tmp_path / "torn.jsonl"
    complete = smoothing.estimate(model, x, LABELS[:3], SIGMA, n=500, chunk_size=1, output=output)
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:-1]) + lines[-1][:17])  # the kill hit the last write
    resumed = smoothing.estimate(model, x, LABELS[:3], SIGMA, n=500, chunk_size=1, output=output)
    assert without_timing(resumed) == without_timing(complete)
    assert [json.loads(line) for line in output.read_text().splitlines()][1:] == complete.records


def test_more_images_later_extend_the_same_file(tmp_path):
    model = linear_model()
    x = points_at(model, RADII)
    output = tmp_path / "grow.jsonl"
    smoothing.estimate(model, x[:3], LABELS[:3], SIGMA, n=500, output=output)
    grown = smoothing.estimate(model, x, LABELS, SIGMA, n=500, output=output)
    assert without_timing(grown) == without_timing(smoothing.estimate(model, x, LABELS, SIGMA, n=500))


def test_resuming_with_other_settings_is_refused(tmp_path):
    model = linear_model()
    x = points_at(model, RADII[:2])
    output = tmp_path / "settings.jsonl"
    smoothing.estimate(model, x, LABELS[:2], SIGMA, n=500, output=output)
    with pytest.raises(ValueError, match=r"different settings \(sigma: 0.25 there, 0.5 now\)"):
        smoothing.estimate(model, x, LABELS[:2], 0.5, n=500, output=output)
    with pytest.raises(ValueError, match="method: 'estimate' there, 'certify' now"):
        smoothing.certify(model, x, LABELS[:2], SIGMA, n=500, output=output)
    with torch.no_grad():
        model.b += 1
    with pytest.raises(ValueError, match="model_hash: "):
        smoothing.estimate(model, x, LABELS[:2], SIGMA, n=500, output=output)


def test_a_batch_size_change_may_resume(tmp_path):
    model = linear_model()
    x = points_at(model, RADII)
    output = tmp_path / "batch.jsonl"
    first = smoothing.estimate(model, x[:4], LABELS[:4], SIGMA, n=1500, batch_size=10_000, output=output)
    resumed = smoothing.estimate(model, x, LABELS, SIGMA, n=1500, batch_size=700, output=output)
    assert resumed.records[:4] == first.records
    assert resumed.records == smoothing.estimate(model, x, LABELS, SIGMA, n=1500).records


def test_results_of_other_data_are_refused(tmp_path):
    model = linear_model()
    x = points_at(model, RADII[:2])
    output = tmp_path / "labels.jsonl"
    smoothing.estimate(model, x, [1, 1], SIGMA, n=500, output=output)
    with pytest.raises(ValueError, match="label 1 for image 0, but the data has 0"):
        smoothing.estimate(model, x, [0, 1], SIGMA, n=500, output=output)


def test_a_foreign_file_is_refused(tmp_path):
    output = tmp_path / "foreign.jsonl"
    output.write_text("hello\n")
    model = linear_model()
    with pytest.raises(ValueError, match="not a robustlab smoothing results file"):
        smoothing.estimate(model, points_at(model, [0.1]), [1], SIGMA, n=100, output=output)
