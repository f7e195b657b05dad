"""Figures, tables, the PCA variance table and experiment parameters (no training)."""

import json

import matplotlib.image
import numpy as np
import pytest

from robustlab.cli import main
from robustlab.cli.experiment import parse_param
from robustlab.config import ConfigError, load_config
from robustlab.data.datasets import load_dataset
from robustlab.data.principal_components import PCA, parse_component_spec
from robustlab.experiments import EXPERIMENTS, get_experiment, run_experiment
from robustlab.experiments.data_scaling import PAPER_SIZES, capped_sizes, halvings
from robustlab.experiments.experiment import recipe_notes
from robustlab.experiments.pca import component_subsets, explained_variances, label, training_pca
from robustlab.experiments.sweep import SweepRow, with_overrides
from robustlab.report.plots import Curve, Panel, percent_limits, plot_bars, plot_panels
from robustlab.report.tables import markdown_table, with_spread, write_table
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


def test_pca_subsets_are_the_papers_on_cifar_and_hold_the_same_variance_shares_elsewhere():
    cifar_like = PCA(np.zeros(3072), np.zeros((1, 1)), np.linspace(2, 1, 3072), (32, 32, 3))
    assert component_subsets(cifar_like) == ["0-15", "0-511", "512-3071", "2048-3071", "0-15,512-3071"]
    assert [label(s) for s in component_subsets(cifar_like)][-1] == "1-16 + 513-3072"  # 1-based, as the paper
    setup = get_experiment("pca").setup("smoke")
    digits = training_pca(setup)
    first, head, tail, last, mixed = component_subsets(digits)
    shares = explained_variances(setup)
    top = int(first.split("-")[1])  # the fewest leading components that hold 72%
    assert shares[first] >= 72 > 100 * digits.explained_variance(f"0-{top - 1}")
    start = int(tail.split("-")[0])  # the most trailing components that hold at most 2%
    assert shares[tail] <= 2 < 100 * digits.explained_variance(f"{start - 1}-63")
    assert shares[last] <= 0.02 and head == f"0-{start - 1}" and mixed == f"{first},{tail}"


def test_pca_explained_variance_equals_a_direct_numpy_computation():
    setup = get_experiment("pca").setup("smoke")
    shares = explained_variances(setup)
    x = load_dataset("digits").x_train.reshape(-1, 64).astype(np.float64) / 255
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    assert list(shares) == component_subsets(training_pca(setup))
    for spec in component_subsets(training_pca(setup)):
        indices = parse_component_spec(spec, 64)
        assert shares[spec] == pytest.approx(100 * eigenvalues[indices].sum() / eigenvalues.sum(), rel=1e-6)


def test_default_sizes_are_the_training_split_and_its_halvings():
    assert halvings(50000, 10) == list(PAPER_SIZES)  # CIFAR-10: exactly the paper's sizes
    assert halvings(60000, 10)[0] == 58 and halvings(60000, 10)[-1] == 60000  # MNIST goes up to all 60,000
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
    assert {r.config.name for r in rows} == {
        f"data_scaling-mydigits-{recipe}" for recipe in ("tiny-lipmlp", "tiny-convnet", "tiny-smoothing")
    }
    assert rows[0].config.data.name == str(path)
    assert (setup.slug(), setup.slug(setup.scale)) == ("data_scaling-mydigits", "data_scaling-mydigits-smoke")


def test_percentage_axes_do_not_stretch_a_few_points_into_a_trend():
    low, high = percent_limits([91.0, 93.5, 92.0])  # a 2.5-point range
    assert high - low >= 20 and low < 91 and high > 93.5 and high <= 102
    assert percent_limits([1.0, 3.0])[0] >= -2  # kept within the percentage scale
    assert percent_limits([10.0, 90.0]) == (8.0, 92.0)  # a wide range is drawn as it is


def test_tables_show_mean_and_sd_and_json_keeps_both():
    rows = [{"model": "m", "CRA": 80.0, "CRA sd": 1.25}, {"model": "n", "CRA": 70.0, "CRA sd": None}]
    columns, shown = with_spread(rows, ["model", "CRA", "CRA sd"])
    assert columns == ["model", "CRA"] and shown[0]["CRA"] == "80.00 ± 1.25" and shown[1]["CRA"] == 70.0
    assert "| m | 80.00 ± 1.25 |" in markdown_table(rows, ["model", "CRA", "CRA sd"])


def test_recipe_notes_say_once_what_every_sweep_shared():
    base = load_config("digits")

    def rows(lrs):
        return [
            SweepRow(f"s{i}", f"m{i}", {}, with_overrides(base, {"optim.lr": lr}), "done") for i, lr in enumerate(lrs)
        ]

    shared = recipe_notes(rows([0.1, 0.1, 0.1]))
    assert len(shared) == 1 and shared[0].startswith("every sweep: peak lr 0.1, OffsetCrossEntropy offset 0.1997")
    apart = recipe_notes(rows([0.1, 0.3, 0.1]))
    assert [note.split(":")[0] for note in apart] == ["m0", "m1", "m2"] and "peak lr 0.3" in apart[1]


def test_the_larger_radii_panel_tells_radii_apart_by_colour_when_one_model_is_certified():
    from robustlab.experiments.data_scaling import larger_radii_curves
    from robustlab.experiments.readout import cra_column

    radii = [72 / 255, 108 / 255, 1.0]
    rows = [{"model": "mlp", "N": n, **{cra_column(r): 50.0 for r in radii}} for n in (48, 97)]
    rows += [{"model": "convnet", "N": n} for n in (48, 97)]  # a standard net: no CRA
    curves = larger_radii_curves(rows, "N", radii)
    assert len({c.colour for c in curves}) == 3 and len({c.linestyle for c in curves}) == 3
    two = rows + [{"model": "cnn", "N": n, **{cra_column(r): 40.0 for r in radii}} for n in (48, 97)]
    assert {c.colour for c in larger_radii_curves(two, "N", radii)} == {"mlp", "cnn"}
