"""What ``import robustlab`` offers: the version, and the entry points a researcher uses first."""

import importlib.metadata
import subprocess
import sys

import robustlab
from robustlab.cli import main
from robustlab.nn.models import MODELS


def test_the_entry_points_are_the_engines_own_functions():
    from robustlab.certify.evaluate import evaluate
    from robustlab.nn.models import create_model
    from robustlab.runs.checkpoint import load_run_model
    from robustlab.train.loop import train

    assert (robustlab.create_model, robustlab.evaluate, robustlab.load_run_model) == (
        create_model,
        evaluate,
        load_run_model,
    )
    assert robustlab.train.train is train  # robustlab.train is the training package
    assert set(robustlab.__all__) <= set(dir(robustlab))


def test_list_models_takes_a_wildcard():
    assert robustlab.list_models() == MODELS.names()
    lipconvnets = robustlab.list_models("lipconvnet-*")
    assert "lipconvnet-cpl" in lipconvnets and all(name.startswith("lipconvnet-") for name in lipconvnets)
    assert robustlab.list_models("*-AOL") == [name for name in MODELS.names() if name.endswith("-aol")]
    assert robustlab.list_models("no-such-*") == []


def test_importing_robustlab_loads_no_engine():
    code = "import sys, robustlab; print(any(m.startswith(('torch', 'robustlab.train')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_version_is_the_packages(capsys):
    assert importlib.metadata.version("robustlab") == robustlab.__version__  # pyproject reads it from there
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.strip() == f"robustlab {robustlab.__version__}"
