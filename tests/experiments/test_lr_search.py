"""The learning-rate search: it picks the best lr, stores it, and other experiments train with it."""

import itertools
import json
import math

import numpy as np
import pytest

from robustlab.config import ConfigError, load_config
from robustlab.experiments import get_experiment, run_experiment
from robustlab.experiments.launch import Execution
from robustlab.experiments.lr_search import choose_lr, learning_rates
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import SweepRow, with_overrides
from robustlab.records import CRAPoint
from robustlab.runs.result_files import RunResults
from robustlab.runs.store import RunStore

QUIET = Execution(progress=False)


def _synthetic_row(lr: float, seed: int, cra: float) -> SweepRow:
    config = with_overrides(load_config("digits"), {"optim.lr": lr, "seed": seed})
    results = RunResults(
        accuracy=0.9,
        cra=[CRAPoint(36 / 255, "36/255", cra)],
        eval_split="val",
        n_eval=287,
        n_train=1150,
        lipschitz_constant=1.0,
        epochs=25.0,
        steps=1150,
        train_time_s=1.0,
        time_per_epoch_s=0.04,
        eval_time_s=0.1,
        device="cpu",
        world_size=1,
        torch_version="2",
    )
    return SweepRow("s", "tiny-lipmlp", {"optim.lr": lr, "seed": seed}, config, "done", "run", results)


def test_the_search_picks_the_lr_with_the_best_mean_validation_cra():
    rng = np.random.default_rng(0)
    lrs = learning_rates({"lr_min": 0.01, "lr_max": 3.1623, "lr_count": 6, "sampling": "grid", "seeds": (0,)})
    assert lrs == [0.01, 0.0316, 0.1, 0.316, 1.0, 3.16]  # log-spaced, half a decade apart

    def truth(lr):  # best at 0.316, falling off on either side
        return 0.6 - 0.05 * (math.log10(lr) + 0.5) ** 2

    rows = [_synthetic_row(lr, seed, truth(lr) + rng.normal(0, 0.005)) for lr in lrs for seed in range(3)]
    setup = get_experiment("lr_search").setup("smoke")
    choice = choose_lr(rows, setup, "tiny-lipmlp")
    assert choice.lr == 0.316 and choice.metric == "CRA 36/255" and choice.seeds == 3
    assert choice.value == pytest.approx(100 * truth(0.316), abs=1) and not choice.at_edge
    edge = choose_lr([r for r in rows if r.config.optim.lr <= 0.1], setup, "tiny-lipmlp")
    assert edge.lr == 0.1 and edge.at_edge  # the best is the largest searched: widen the range
    drawn = learning_rates({"lr_min": 0.01, "lr_max": 1.0, "lr_count": 4, "sampling": "random", "seeds": (3,)})
    assert len(drawn) == 4 and all(0.01 <= lr <= 1.0 for lr in drawn)


@pytest.mark.slow
def test_a_stored_choice_is_what_lr_searched_trains_with(tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(ConfigError, match="run `robustlab experiment lr_search --scale smoke"):
        run_experiment(get_experiment("data_scaling").setup("smoke", lr="searched"), store)
    search = get_experiment("lr_search").setup(
        "smoke", overrides=["model.kwargs={width: 16, depth: 1}"], epochs=0.5, recipes=("tiny-lipmlp",)
    )
    _, report = run_experiment(search, store, out_dir=tmp_path / "lr", execution=QUIET)
    (chosen,) = [row for row in report.rows if row["chosen"] == "yes"]
    stored = json.loads((tmp_path / "runs" / "choices" / "lr-digits-smoke-tiny-lipmlp.json").read_text())
    assert stored["lr"] == chosen["lr"] and {0.03, 0.173, 1.0} <= set(stored["searched"])
    assert len(stored["searched"]) <= 3 + 2  # widened by at most `widen` grid steps
    searched, _ = run_experiment(search, store, dry_run=True)
    assert all(row.config.data.val_size == 287 for row in searched)  # chosen on validation images
    setup = get_experiment("data_scaling").setup("smoke", lr="searched", recipes=("tiny-lipmlp",))
    rows, _ = run_experiment(setup, store, dry_run=True)
    assert {row.config.optim.lr for row in rows} == {chosen["lr"]}


def test_offsets_are_offered_by_name_and_mnist_keeps_its_presets_augmentation():
    experiment = get_experiment("data_scaling")
    reference = experiment.setup("smoke").recipe("tiny-lipmlp")["loss.offset"]
    text = experiment.setup("smoke", offset="paper-text").recipe("tiny-lipmlp")["loss.offset"]
    assert reference == pytest.approx(math.sqrt(2) * 36 / 255) and text == 0.25
    assert "loss.offset" not in {k for k, v in experiment.setup("smoke").recipe("tiny-convnet").items() if v == 0.25}
    with pytest.raises(ConfigError, match="choose one of: reference, paper-text"):
        experiment.setup("smoke", offset="half").recipe("tiny-lipmlp")
    assert recipe("small-lipmlp", "mnist")["augment.flip"] is False  # the -mnist presets: no flips
    assert recipe("small-smoothing", "mnist")["augment.flip"] is False
    assert "augment.flip" not in recipe("small-lipmlp", "cifar10")  # CIFAR-10 keeps the default flips


@pytest.mark.slow
def test_a_best_lr_at_the_edge_widens_the_grid_by_itself(tmp_path):
    # two lrs far too small for one epoch: one of them is the best, so the grid grows beyond that edge
    search = get_experiment("lr_search").setup(
        "smoke", overrides=["model.kwargs={width: 16, depth: 1}"], epochs=1, lr_min=0.0001, lr_max=0.0002, lr_count=2
    )
    rows, report = run_experiment(search, RunStore(tmp_path / "runs"), out_dir=tmp_path / "lr", execution=QUIET)
    rates = sorted({row.config.optim.lr for row in rows})
    assert len(rates) == 4 and {0.0001, 0.0002} <= set(rates)  # two steps added, one at a time
    assert all(b / a == pytest.approx(2, rel=0.01) for a, b in itertools.pairwise(rates))  # the grid's own ratio
    assert any("widened by 2 step(s)" in note for note in report.notes)
