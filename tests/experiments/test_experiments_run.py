"""Sweeps, experiments and reports end to end: real training of tiny nets on built-in digits."""

import json

import matplotlib.image
import numpy as np
import pytest

from robustlab.cli import main
from robustlab.config import ConfigError, load_config
from robustlab.errors import RobustlabError
from robustlab.experiments import get_experiment, report_experiment, run_experiment
from robustlab.experiments.launch import Execution
from robustlab.experiments.sweep import Sweep, collect, run_sweep, with_overrides
from robustlab.runs.store import Run, RunStore
from robustlab.train.loop import train

QUIET = Execution(progress=False)

TINY = ["model.kwargs={width: 16, depth: 1}"]  # shrinks the 1-Lipschitz MLP of the smoke scale


def _tiny_sweep(sizes=(48, 97)):
    tiny_mlp = {"model.name": "lipmlp-aol", "model.kwargs": {"width": 16, "depth": 1}}
    base = with_overrides(load_config("digits"), {**tiny_mlp, "train.epochs": 0.5, "train.device": "cpu"})
    return Sweep("tiny", base, {"data.subset_size": list(sizes)})


@pytest.mark.slow
def test_sweep_trains_what_is_missing_and_skips_what_is_done(tmp_path):
    store = RunStore(tmp_path)
    first = run_sweep(_tiny_sweep((48,)), store, execution=QUIET)
    assert [r.status for r in first] == ["trained"] and first[0].results.n_train == 48
    rows = run_sweep(_tiny_sweep((48, 97)), store, execution=QUIET)
    assert [r.status for r in rows] == ["done", "trained"]
    assert rows[0].run == first[0].run  # the finished run is reused, not retrained
    assert len(store.query()) == 2
    assert [r.status for r in run_sweep(_tiny_sweep((48, 97)), store, execution=QUIET)] == ["done", "done"]


class _Killed(Exception):
    pass


def test_an_interrupted_sweep_resumes_the_interrupted_run(tmp_path):
    store = RunStore(tmp_path)
    sweep = _tiny_sweep((48,))
    config = sweep.points()[0].config

    def kill_after_first_epoch(epoch, run):
        raise _Killed

    with pytest.raises(_Killed):  # the sweep process dies during training
        train(config, store=store, progress=False, on_epoch_end=kill_after_first_epoch)
    (killed,) = store.query()
    assert killed.status == "failed"
    assert [r.status for r in collect(sweep, store)] == ["resume"]
    (row,) = run_sweep(sweep, store, execution=QUIET)
    assert row.status == "trained" and row.run == killed.path  # continued in the same folder
    epochs = [m["epoch"] for m in Run(killed.path).metrics() if "final" not in m]
    assert epochs == list(range(1, len(epochs) + 1))  # no epoch trained twice, none skipped
    assert [r.status for r in store.find(config)] == ["done"]


@pytest.mark.slow
def test_data_scaling_smoke_runs_and_reports(tmp_path):
    store = RunStore(tmp_path / "runs")
    setup = get_experiment("data_scaling").setup("smoke", overrides=[], sizes=(48, 97), epochs=0.5)
    rows, report = run_experiment(setup, store, out_dir=tmp_path / "report", execution=QUIET)
    assert len(rows) == 6 and all(r.status == "trained" for r in rows)
    assert [(r["model"], r["N"]) for r in report.rows] == [
        (model, n) for model in ("tiny-convnet", "tiny-lipmlp", "tiny-smoothing") for n in (48, 97)
    ]
    standard, lipschitz, smoothing = report.rows[:2], report.rows[2:4], report.rows[4:]
    assert all(r["CRA 36/255"] is None for r in standard)  # standard nets certify nothing
    assert all(r["CRA 36/255"] is not None for r in lipschitz + smoothing)  # smoothing: the paper's estimate
    estimate = rows[-1].results.smoothing
    assert estimate.params.n == 50 and estimate.params.sigma == 0.125 and "ESTIMATE" in estimate.guarantee
    assert report.rows[-1]["CRA 36/255"] == 100 * estimate.cra[0].cra  # scored by its smoothed classifier
    assert matplotlib.image.imread(report.figures[0]).shape[0] > 100
    written = json.loads(report.tables["json"].read_text())
    assert written["rows"] == json.loads(json.dumps(report.rows)) and written["fits"] == report.fits
    assert all(r["train accuracy"] is not None for r in standard + lipschitz)  # the training images, certified
    assert all(f["status"] == "refused" for f in report.fits)  # two sizes are too few for a law
    assert "tiny-lipmlp, CRA 36/255: no line fit (2 distinct N values" in " ".join(report.fit_notes)
    again = report_experiment(setup, store, out_dir=tmp_path / "again")  # reads the store, trains nothing
    assert again.rows == report.rows and len(store.query()) == 6


def test_compute_scaling_and_one_architecture_smoke(tmp_path):
    store = RunStore(tmp_path)
    setup = get_experiment("compute_scaling").setup("smoke", overrides=TINY, epochs=(0.5, 1))
    _, report = run_experiment(setup, store, out_dir=tmp_path / "c", execution=QUIET)
    assert [r["epochs"] for r in report.rows] == [0.5, 1.0] and report.figures[0].exists()
    setup = get_experiment("one_architecture").setup("smoke", overrides=TINY, epochs=0.5)
    _, report = run_experiment(setup, store, out_dir=tmp_path / "o", execution=QUIET)
    assert [r["loss"] for r in report.rows] == ["cross-entropy", "offset cross-entropy"]
    assert all(r["accuracy"] is not None and r["CRA 36/255"] is not None for r in report.rows)


@pytest.mark.slow
def test_pca_smoke_table_has_every_subset(tmp_path):
    setup = get_experiment("pca").setup(
        "smoke",
        overrides=["model.kwargs={width: 4}", "train.epochs=0.3"],
        recipes=("tiny-convnet",),
        augmentation=("on", "off"),
    )
    rows, report = run_experiment(setup, RunStore(tmp_path), out_dir=tmp_path / "r", execution=QUIET)
    subsets = ["all", "1-10", "1-37", "38-64", "53-64", "1-10 + 38-64"]  # 1-based, as the paper writes them
    assert [(r["components"], r["augmentation"]) for r in report.rows] == [
        (s, a) for s in subsets for a in ("on", "off")
    ]
    assert report.rows[0]["variance (%)"] == 100.0 and all(r["tiny-convnet acc"] is not None for r in report.rows)
    assert "tiny-convnet CRA" not in report.columns  # a standard net has no CRA column
    plain = [r.config.augment for r in rows if "augment.crop_padding" in r.overrides]  # the "off" variant
    assert len(plain) == 6 and all((a.crop_padding, a.flip, a.cutout) == (0, False, 0) for a in plain)
    assert report.figures[0].exists() and report.tables["text"].read_text().count("\n| ") == 12


def test_robust_overfitting_smoke_certifies_train_and_eval(tmp_path):
    setup = get_experiment("robust_overfitting").setup("smoke", overrides=TINY + ["train.eval_every=1"], epochs=2)
    _, report = run_experiment(setup, RunStore(tmp_path), out_dir=tmp_path / "r", execution=QUIET)
    assert [r["split"] for r in report.rows] == ["train", "eval"]
    assert all(r["CRA 1"] is not None and r["CRA 36/255"] >= r["CRA 1"] for r in report.rows)
    assert len(report.figures) == 2 and all(p.exists() for p in report.figures)


def test_extra_data_smoke_with_a_generated_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "generated.npz"
    np.savez(path, image=rng.integers(0, 256, (120, 8, 8, 1), dtype=np.uint8), label=np.arange(120) % 10)
    experiment = get_experiment("extra_data")
    with pytest.raises(ConfigError, match="data.extra_path=FILE.npz"):
        experiment.sweeps(experiment.setup("small"))  # no generated data named
    setup = experiment.setup("smoke", overrides=TINY + [f"data.extra_path={path}"], extra=(0, 30, 500), epochs=0.5)
    with pytest.raises(RobustlabError, match=r"no finished runs of extra_data .*\(0 of 3\)"):  # before training
        report_experiment(setup, RunStore(tmp_path / "runs"), out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # no empty figure
    rows, report = run_experiment(setup, RunStore(tmp_path / "runs"), out_dir=tmp_path / "r", execution=QUIET)
    assert report.notes[0].startswith("N = 1437 real images + the generated ones")
    # 1437..1557 images is no range for a law: refused, not "doubling adds -144.9% CRA"
    assert "no line fit (N = 1,437..1,557 spans 0.12 doublings" in " ".join(report.fit_notes)
    assert [r["extra"] for r in report.rows] == [0, 30, 120]  # capped at the 120 images the file holds
    assert [r["N"] for r in report.rows] == [1437, 1467, 1557]
    steps = [r.results.steps for r in rows]
    assert max(steps) - min(steps) <= 2  # the same images processed (here full batches: the same steps)


@pytest.mark.slow
def test_demo_at_a_reduced_size_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--sizes", "48,97", "--epochs", "0.3", "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["N"]) for r in printed["rows"]] == [
        ("tiny-convnet", 48),
        ("tiny-convnet", 97),
        ("tiny-lipmlp", 48),
        ("tiny-lipmlp", 97),
    ]
    assert (out / "demo.png").exists() and (out / "table.json").exists() and (out / "table.md").exists()
    assert (
        main(
            [
                "report",
                "data_scaling",
                "--scale",
                "demo",
                "--param",
                "sizes=48,97",
                "--param",
                "epochs=0.3",
                "--runs-root",
                str(out / "runs"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert "tiny-lipmlp" in capsys.readouterr().out
