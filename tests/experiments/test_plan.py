"""The paper's protocol, read from the plan that `robustlab reproduce --scale paper --dry-run` prints."""

import itertools
import json
import math
from collections import defaultdict

import pytest

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.experiments import get_experiment
from robustlab.experiments.extra_data import PAPER_EXTRA
from robustlab.experiments.plan import COLUMNS, GPU
from robustlab.experiments.reproduce import plan
from robustlab.experiments.sweep import with_overrides
from robustlab.runs.store import RunStore
from robustlab.train.loop import training_steps


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return plan("paper", RunStore(tmp_path_factory.mktemp("runs")))


def _sweeps(jobs, experiment):
    groups = defaultdict(list)
    for job in jobs:
        if job["experiment"] == experiment:
            groups[(job["dataset"], job["recipe"])].append(job)
    return groups


def test_every_size_of_a_sweep_processes_the_same_images_within_one_percent(paper, tmp_path):
    demo = plan("demo", RunStore(tmp_path / "runs"), parts=["figure-1", "extra-data"])
    for jobs, sizes in ((paper["jobs"], 11), (demo["jobs"], 6)):
        for experiment in ("data_scaling", "extra_data"):
            groups = _sweeps(jobs, experiment)
            assert groups
            for key, group in groups.items():
                images = [job["images"] for job in group]
                assert max(images) / min(images) - 1 < 0.01, (key, images)
                assert len({job["subset_size"] + job["extra_size"] for job in group}) == sizes


def test_the_budget_is_the_full_sets_epochs_in_images_whatever_the_batch_divides():
    config = with_overrides(load_config("cpl-lcn"), {"train.epochs": 3000, "data.name": "cifar10"})
    images = {}
    for n in (48, 97, 390, 781, 50_000):
        subset = with_overrides(config, {"data.subset_size": n})
        images[n] = training_steps(subset, n, 50_000) * min(n, subset.train.batch_size)
    assert max(images.values()) / min(images.values()) - 1 < 0.01
    unscaled = with_overrides(config, {"data.subset_size": 390, "train.scale_epochs": False})
    assert training_steps(unscaled, 390, 50_000) == 3000 * 2  # epochs over the subset, two batches each


def test_smoothing_base_nets_train_100_epochs_at_the_full_set_and_x_k_on_subsets(paper):
    for (dataset, recipe), group in _sweeps(paper["jobs"], "data_scaling").items():
        full = max(group, key=lambda job: job["subset_size"])
        expected = 100 if recipe == "smoothing" else 3000
        assert full["epochs"] == pytest.approx(expected, rel=0.01), (dataset, recipe)
        for job in group:  # epochs x k when the set is divided by k
            assert job["epochs"] * job["subset_size"] == pytest.approx(expected * full["subset_size"], rel=0.01)


def test_every_later_job_trains_with_a_searched_lr_and_names_the_search_it_waits_for(paper):
    searches = {job["id"]: job for job in paper["jobs"] if job["experiment"] == "lr_search"}
    later = [job for job in paper["jobs"] if job["experiment"] != "lr_search"]
    assert later and all(job["lr_source"].startswith("searched") for job in later)
    for job in later:
        assert job["depends_on"], job["id"]
        for needed in job["depends_on"]:
            assert searches[needed]["recipe"] == job["recipe"] and searches[needed]["dataset"] == job["dataset"]
    # the paper's search: 100 epochs per lr, on the reference code's validation split
    assert all(job["epochs"] == pytest.approx(100, rel=0.01) for job in searches.values())


def test_extra_data_doubles_the_training_set_several_times_up_to_a_million():
    totals = [50_000 + n for n in PAPER_EXTRA]
    assert PAPER_EXTRA[0] == 0 and PAPER_EXTRA[-1] == 1_000_000
    ratios = [b / a for a, b in itertools.pairwise(totals)]
    assert max(ratios) / min(ratios) < 1.02  # geometric spacing
    assert math.log2(totals[-1] / totals[0]) > 4


def test_every_job_carries_the_plan_fields_and_gpu_hours(paper):
    assert all(set(COLUMNS) <= set(job) for job in paper["jobs"])
    assert all(job["gpu_hours"] is not None and job["gpu_hours"] > 0 for job in paper["jobs"])
    by_section = {line["section"]: line for line in paper["totals"]}
    total = by_section["all"][f"GPU-hours ({GPU})"]
    parts = [line[f"GPU-hours ({GPU})"] for name, line in by_section.items() if name != "all"]
    assert total == pytest.approx(sum(parts), abs=0.1 * len(parts))


def test_the_cli_dry_runs_print_the_plan_as_json_and_as_totals(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["reproduce", "--scale", "smoke", "--dry-run", "--json", "--runs-root", runs]) == 0
    smoke = json.loads(capsys.readouterr().out)
    assert {job["section"] for job in smoke["jobs"]} >= {"lr-search", "figure-1"}
    recipes = {(job["dataset"], job["recipe"]) for job in smoke["jobs"] if job["experiment"] != "lr_search"}
    searched = {(job["dataset"], job["recipe"]) for job in smoke["jobs"] if job["experiment"] == "lr_search"}
    assert recipes <= searched  # the search covers every recipe a later section trains
    assert (
        main(
            [
                "experiment",
                "data_scaling",
                "--scale",
                "smoke",
                "--param",
                "lr=searched",
                "--dry-run",
                "--runs-root",
                runs,
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "searched (pending" in text and "GPU-hours" in text
    assert not (tmp_path / "runs" / "choices").exists()  # a plan trains and stores nothing


def test_a_plan_reads_the_searched_lr_once_the_search_has_chosen(tmp_path):
    from robustlab.experiments.choices import LrChoice, store_choice
    from robustlab.experiments.plan import plan_experiment

    store = RunStore(tmp_path / "runs")
    choice = LrChoice("tiny-lipmlp", "digits", "smoke", 0.0316, "CRA 36/255", 50.0, [0.01, 0.0316, 0.1], 1, 1.0, False)
    store_choice(store.root, choice)
    setup = get_experiment("data_scaling").setup("smoke", lr="searched", recipes=("tiny-lipmlp", "tiny-convnet"))
    jobs = plan_experiment(setup, store)
    chosen = {job["recipe"]: (job["lr"], job["lr_source"]) for job in jobs}
    assert chosen["tiny-lipmlp"] == (0.0316, "searched")
    assert chosen["tiny-convnet"][1].startswith("searched (pending")


@pytest.mark.parametrize("scale", ["smoke", "demo", "small", "paper"])
def test_the_lr_searchs_own_recipes_cover_every_recipe_of_its_scale(scale):
    from robustlab.experiments.experiment import searched_recipe_jobs
    from robustlab.experiments.lr_search import SCALES

    searched = set(SCALES[scale]["recipes"])
    for job in searched_recipe_jobs(scale):
        if job.dataset in (None, SCALES[scale]["dataset"]):  # the scale's own dataset
            assert set(job.params["recipes"]) <= searched
