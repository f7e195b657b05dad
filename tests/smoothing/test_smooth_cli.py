"""`robustlab smooth` on real trained runs (tiny nets on the built-in digits, trained here)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.runs.store import Run
from robustlab.train.loop import train

QUICK = ["--n", "200", "--batch-size", "2000", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A noise-trained SimpleConvNet (the smoothing base net) and a 1-Lipschitz net, one epoch each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared, busy 2-core machine are far slower
    root = tmp_path_factory.mktemp("runs")
    try:
        base = load_config(
            "digits",
            [
                "name=base",
                "model.name=simpleconvnet",
                "model.kwargs={width: 4}",
                "augment.noise_std=1/8",
                "loss.name=ce",
                "loss.temperature=8",
                "train.epochs=1",
                "train.device=cpu",
            ],
        )
        lipschitz = load_config(
            "digits",
            [
                "name=lipschitz",
                "model.name=lipmlp-aol",
                "model.kwargs={depth: 2}",
                "train.epochs=1",
                "train.device=cpu",
            ],
        )
        return {
            "base": train(base, run_dir=root / "base", progress=False).path,
            "lipschitz": train(lipschitz, run_dir=root / "lipschitz", progress=False).path,
        }
    finally:
        torch.set_num_threads(threads)


def smooth(capsys, *argv) -> tuple[int, str, str]:
    status = main(["smooth", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def smooth_json(capsys, *argv) -> dict:
    status, out, err = smooth(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def test_estimate_writes_results_and_resumes(runs, capsys):
    run_dir = runs["base"]
    first = smooth_json(capsys, run_dir, "--limit", 12, "--restart", *QUICK)
    assert first["sigma"] == 0.125  # the noise the base net was trained with
    assert "not a certificate" in first["guarantee"]
    assert (first["num_images"], first["split"], first["timing"]["images_computed"]) == (12, "test", 12)
    lines = (run_dir / "smoothing-estimate.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert [r["index"] for r in records] == list(range(12))
    assert first["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 12)
    assert json.loads((run_dir / "smoothing-estimate.json").read_text()) == first

    again = smooth_json(capsys, run_dir, "--limit", 12, *QUICK)
    assert again["timing"]["images_computed"] == 0
    assert again["cra"] == first["cra"] and again["accuracy"] == first["accuracy"]

    more = smooth_json(capsys, run_dir, "--limit", 20, *QUICK)
    assert more["timing"]["images_computed"] == 8 and more["num_images"] == 20


def test_skip_selects_every_kth_image(runs, capsys):
    result = smooth_json(capsys, runs["base"], "--method", "predict", "--skip", 5, "--limit", 4, "--restart", *QUICK)
    records = (runs["base"] / "smoothing-predict.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["index"] for line in records] == [0, 5, 10, 15]
    assert result["skip"] == 5 and "abstain_rate" in result and "cra" not in result


def test_certify_prints_a_table_with_its_guarantee(runs, capsys):
    status, out, _ = smooth(capsys, runs["base"], "--method", "certify", "--n0", 20, "--limit", 5, *QUICK)
    assert status == 0
    assert "36/255" in out and "abstained" in out
    assert "guarantee: certified" in out
    summary = json.loads((runs["base"] / "smoothing-certify.json").read_text())
    assert summary["n0"] == 20 and summary["alpha"] == 0.001 and summary["num_images"] == 5


def test_other_settings_on_an_existing_file_are_refused_until_restart(runs, capsys):
    smooth_json(capsys, runs["base"], "--limit", 3, "--restart", *QUICK)
    status, _, err = smooth(capsys, runs["base"], "--limit", 3, "--sigma", "1/4", *QUICK)
    assert status == 2 and "sigma: 0.125 there, 0.25 now" in err
    restarted = smooth_json(capsys, runs["base"], "--limit", 3, "--sigma", "1/4", "--restart", *QUICK)
    assert restarted["sigma"] == 0.25 and restarted["timing"]["images_computed"] == 3


def test_a_run_trained_without_noise_needs_sigma(runs, capsys):
    status, _, err = smooth(capsys, runs["lipschitz"], "--limit", 2, *QUICK)
    assert status == 2 and "trained without noise" in err and "--sigma" in err
    result = smooth_json(capsys, runs["lipschitz"], "--limit", 2, "--sigma", "0.25", "--restart", *QUICK)
    assert result["train_noise_std"] == 0.0


def test_bad_options_are_explained(runs, capsys):
    assert "--skip must be >= 1" in smooth(capsys, runs["base"], "--skip", 0, *QUICK)[2]
    assert (
        "bfloat16 is for 'estimate'"
        in smooth(capsys, runs["base"], "--method", "certify", "--precision", "bfloat16", *QUICK)[2]
    )
    assert "one RUN_DIR at a time" in smooth(capsys, runs["base"], runs["lipschitz"], *QUICK)[2]


def test_compare_puts_smoothing_next_to_lipschitz_certificates(runs, capsys):
    smooth_json(capsys, runs["base"], "--limit", 6, "--restart", *QUICK)
    table = smooth_json(capsys, "--compare", runs["lipschitz"], runs["base"])["rows"]
    lipschitz = Run(runs["lipschitz"]).load_results()
    rows = {(row["run"], row["method"].split(" (")[0]): row for row in table}
    certified = rows[("lipschitz", "lipschitz margin")]
    assert certified["guarantee"] == "deterministic"
    assert [certified[point.label] for point in lipschitz.cra] == [point.cra for point in lipschitz.cra]
    assert rows[("base", "standard net")]["36/255"] is None  # a standard net certifies nothing
    estimate = rows[("base", "smoothing estimate")]
    assert estimate["guarantee"] == "estimate" and estimate["images"] == 6
    status, out, _ = smooth(capsys, "--compare", runs["lipschitz"], runs["base"])
    assert status == 0 and "not a guarantee" in out and "lipschitz margin" in out


def test_compare_reads_results_written_by_an_older_robustlab(runs, capsys, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["lipschitz"], old, ignore=shutil.ignore_patterns("smoothing-*"))
    results = json.loads((old / "results.json").read_text())
    del results["architecture_version"]  # as written before architecture versions
    (old / "results.json").write_text(json.dumps(results))
    (row,) = smooth_json(capsys, "--compare", old)["rows"]
    assert (row["method"], row["images"], row["split"]) == ("lipschitz margin", results["n_eval"], "test")
    assert row["36/255"] == results["cra"][0]["cra"]


def test_compare_explains_a_run_without_results(tmp_path, capsys):
    Run(tmp_path / "empty").save_config(load_config("digits"))
    status, _, err = smooth(capsys, "--compare", tmp_path / "empty")
    assert status == 2 and "has no results yet" in err


def test_the_cli_offers_exactly_the_smoothing_methods():
    from robustlab.certify import smoothing
    from robustlab.cli import smooth as smooth_cli

    assert smooth_cli.METHODS == smoothing.METHODS


@pytest.mark.skipif(
    not os.environ.get("ROBUSTLAB_TEST_COMPILE"),
    reason="torch.compile's first compilation takes 20-40 s on a CPU; set ROBUSTLAB_TEST_COMPILE=1",
)
def test_a_compiled_model_counts_the_same_votes(runs, capsys):
    run_dir, jsonl = runs["base"], runs["base"] / "smoothing-estimate.jsonl"
    votes = {}
    for flags in ((), ("--compile",)):
        smooth_json(capsys, run_dir, "--limit", 6, "--restart", *QUICK, *flags)
        records = [json.loads(line) for line in jsonl.read_text().splitlines()[1:]]
        votes[flags] = [(r["count_true"], r["count_other"], r["prediction"]) for r in records]
    assert votes[("--compile",)] == votes[()]
