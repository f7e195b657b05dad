"""Figures, tables, the PCA variance table and experiment parameters (no training)."""

import json

import matplotlib.image
import numpy as np
import pytest

from robustlab.cli import main
from robustlab.cli.experiment import parse_param
from robustlab.config import ConfigError
from robustlab.data.datasets import load_dataset
from robustlab.experiments import EXPERIMENTS, get_experiment, run_experiment
from robustlab.experiments.data_scaling import capped_sizes, doubling_gain
from robustlab.experiments.pca import component_subsets, explained_variances
from robustlab.report.plots import Curve, Panel, plot_bars, plot_panels
from robustlab.report.tables import markdown_table, write_table
from robustlab.runs.store import RunStore


def test_panels_and_bars_are_written_as_images(tmp_path):
    path = plot_panels(
        [
            Panel("accuracy (%)", [Curve("a", [48, 97, 195], [10.0, 20.0, 30.0])]),
            Panel("CRA (%)", [Curve("b", [48, 97], [5.0, 9.0], dashed=True)]),
        ],
        tmp_path / "fig" / "scaling.png",
        xlabel="N",
        logx=True,
        title="t",
    )
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > image.shape[1] > 100  # two stacked panels
    bars = plot_bars(["0-15", "all"], {"acc": [40.0, None], "CRA": [20.0, 30.0]}, tmp_path / "b.png", ylabel="%")
    assert matplotlib.image.imread(bars).shape[1] > 100


def test_tables_have_the_rows_in_markdown_and_json(tmp_path):
    rows = [{"model": "m", "N": 48, "CRA": 12.345}, {"model": "m", "N": 97, "CRA": None}]
    text = markdown_table(rows, ["model", "N", "CRA"])
    assert text.splitlines() == ["| model | N | CRA |", "|---|---|---|", "| m | 48 | 12.35 |", "| m | 97 |  |"]
    paths = write_table(rows, tmp_path / "table", ["model", "N", "CRA"], notes=["a note"])
    assert json.loads(paths["json"].read_text()) == {"rows": rows, "notes": ["a note"]}
    assert paths["text"].read_text().endswith("a note\n")


def test_pca_subsets_scale_the_paper_boundaries():
    assert component_subsets(3072) == ["0-15", "0-511", "512-3071", "2048-3071", "0-15,512-3071"]
    assert component_subsets(64) == ["0-0", "0-10", "11-63", "43-63", "0-0,11-63"]


def test_pca_explained_variance_equals_a_direct_numpy_computation():
    setup = get_experiment("pca").setup("smoke")
    shares = explained_variances(setup)
    x = load_dataset("digits").x_train.reshape(-1, 64).astype(np.float64) / 255
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    expected = {
        "0-0": eigenvalues[:1].sum(),
        "0-10": eigenvalues[:11].sum(),
        "11-63": eigenvalues[11:].sum(),
        "43-63": eigenvalues[43:].sum(),
        "0-0,11-63": eigenvalues[:1].sum() + eigenvalues[11:].sum(),
    }
    assert list(shares) == component_subsets(64)
    for spec, value in expected.items():
        assert shares[spec] == pytest.approx(100 * value / eigenvalues.sum(), rel=1e-6)


def test_doubling_gain_is_the_slope_per_doubling():
    sizes = [48, 96, 192, 384]
    assert doubling_gain(sizes, [10, 15, 20, 25]) == pytest.approx(5.0)
    assert capped_sizes((48, 97, 1562, 3125), 1437) == [48, 97, 1437]
    assert capped_sizes((48, 97), 1437) == [48, 97]


def test_every_experiment_has_the_three_scales_and_unknown_ones_are_refused():
    assert {"data_scaling", "compute_scaling", "pca", "robust_overfitting", "one_architecture", "extra_data"} <= set(
        EXPERIMENTS.names()
    )
    for name in EXPERIMENTS.names():
        assert {"smoke", "small", "paper"} <= set(EXPERIMENTS.get(name).scales)
    with pytest.raises(ConfigError, match="no scale 'huge'"):
        get_experiment("pca").setup("huge")
    with pytest.raises(ConfigError, match="no parameter 'sizes'"):
        get_experiment("pca").setup("smoke", sizes=(1,))
    with pytest.raises(KeyError, match="known experiments: compute_scaling"):
        get_experiment("nope")


def test_params_are_typed_like_their_defaults():
    defaults = get_experiment("data_scaling").scales["smoke"]
    assert parse_param("sizes=48,97", defaults) == ("sizes", (48, 97))
    assert parse_param("epochs=3", defaults) == ("epochs", 3)
    with pytest.raises(ConfigError, match="KEY one of: dataset, epochs"):
        parse_param("size=3", defaults)
    with pytest.raises(ConfigError, match="does not fit sizes"):
        parse_param("sizes=a,b", defaults)


def test_an_unknown_scale_is_named_even_with_params(capsys):
    assert main(["experiment", "data_scaling", "--scale", "huge", "--param", "sizes=48", "--dry-run"]) == 2
    assert "has no scale 'huge'; choose one of: smoke, demo, small, paper" in capsys.readouterr().err


def test_a_dataset_given_by_path_names_runs_and_reports_by_its_stem(tmp_path):
    digits = load_dataset("digits")
    path = tmp_path / "data" / "mydigits.npz"
    path.parent.mkdir()
    np.savez(path, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test)
    setup = get_experiment("data_scaling").setup("smoke", dataset=str(path))
    store = RunStore(tmp_path / "runs")
    rows, _ = run_experiment(setup, store, dry_run=True)
    assert {r.config.name for r in rows} == {"data_scaling-mydigits-tiny-lipmlp", "data_scaling-mydigits-tiny-convnet"}
    assert rows[0].config.data.name == str(path)
    assert (setup.slug(), setup.slug(setup.scale)) == ("data_scaling-mydigits", "data_scaling-mydigits-smoke")
