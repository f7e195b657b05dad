"""The command line stays fast: `robustlab --help` imports none of the heavy libraries, and the
commands that only read the run store (a sweep's or the study's `--status`, `runs list`,
`runs reindex`) import no torch, which alone takes seconds to load."""

import subprocess
import sys

import pytest

from results_helpers import run_results
from robustlab.config import load_config
from robustlab.experiments import get_experiment
from robustlab.runs.store import RunStore

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "sklearn")
# a command as a user runs it, in a fresh interpreter; the last line of stderr says whether it loaded torch
COMMAND = """
import sys
from robustlab.cli import main
code = main(sys.argv[1:])
print("torch loaded:", "torch" in sys.modules, "exit:", code, file=sys.stderr)
"""


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; from robustlab.cli import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"robustlab --help imports {loaded}: import it inside the command's run function"


def test_version_is_the_package_version():
    from importlib.metadata import version

    import robustlab

    out = subprocess.run([sys.executable, "-m", "robustlab.cli", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"robustlab {robustlab.__version__}" == f"robustlab {version('robustlab')}"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """A store with a finished run of compute_scaling's first smoke point (so a status matches
    stored results) and a failed run of another config."""
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    experiment = get_experiment("compute_scaling")
    point = experiment.sweeps(experiment.setup("smoke"))[0].points()[0].config
    run = store.create(point)
    run.save_results(run_results())
    store.record(run, point, "done", run_results())
    other = load_config(None, ["name=other", "seed=7"])
    store.record(store.create(other), other, "failed", error="ValueError: boom")
    return root


@pytest.mark.parametrize(
    "command",
    [
        ["experiment", "compute_scaling", "--scale", "smoke", "--status"],
        ["reproduce", "--status"],
        ["runs", "list"],
        ["runs", "list", "--status", "failed"],
        ["runs", "reindex"],
    ],
    ids=" ".join,
)
def test_commands_that_read_the_store_import_no_torch(store_root, command):
    argv = [sys.executable, "-c", COMMAND, *command, "--runs-root", str(store_root)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "torch loaded: False exit: 0", done.stderr
    if command[0] == "experiment":  # the finished point is matched to its stored run
        assert done.stdout.strip().endswith("1 done, 1 queued"), done.stdout


# A study's status in a fresh interpreter; stderr's last line: exit code, torch and
# scikit-learn loaded, principal components fitted, generated digits made.
STATUS_PROBE = """
import os, sys
from robustlab.cli import main
from robustlab.data import principal_components
from robustlab.data.datasets.digits import affine_digits
code = main(sys.argv[1:])
made = affine_digits.cache_info().currsize
print(code, "torch" in sys.modules, "sklearn" in sys.modules, len(principal_components._FITTED), made, file=sys.stderr)
"""


def _choose_every_smoke_lr(root):
    """The smoke reproduction's lr search as done: every part can list its runs."""
    from robustlab.experiments.choices import LrChoice, store_choice
    from robustlab.experiments.experiment import searched_recipe_jobs

    for job in searched_recipe_jobs("smoke"):
        for name in job.params["recipes"]:
            store_choice(
                root, LrChoice(name, job.dataset or "digits", "smoke", 0.1, "accuracy", 50.0, [0.1], 1, 1, False)
            )


@pytest.mark.parametrize("searched", [False, True], ids=["before the lr search", "after it"])
def test_the_reproductions_status_fits_and_generates_only_what_it_lists(tmp_path, searched):
    """Planning the lr search asks the pca and extra-data sweeps for their recipes only: no
    components are fitted, no generated images made. Once the pca sweep lists its digits points
    it fits their components (one fit), and still reads the digits without scikit-learn."""
    RunStore(tmp_path)
    if searched:
        _choose_every_smoke_lr(tmp_path)
    argv = [
        sys.executable,
        "-c",
        STATUS_PROBE,
        "reproduce",
        "--scale",
        "smoke",
        "--status",
        "--runs-root",
        str(tmp_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == f"0 False False {int(searched)} 0", done.stderr
    table_1 = next(line.split() for line in done.stdout.splitlines() if line.startswith("table-1"))
    assert table_1[1] == ("12" if searched else "0")  # the pca sweep's points, once it can list them
