"""`robustlab --help` stays fast: building the parser imports none of the heavy libraries."""

import subprocess
import sys

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "sklearn")


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
