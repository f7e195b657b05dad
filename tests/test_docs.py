"""The docs against the house: README's architecture listing names every module file, its
preset list is the presets, and user-facing text names documents a user has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import robustlab
from robustlab.config import preset_names

PACKAGE = Path(robustlab.__file__).parent
README = (PACKAGE.parents[1] / "README.md").read_text()


def architecture_block() -> str:
    section = README.split("## Architecture", 1)[1]
    return section.split("```", 2)[1]


def top_level_entries(block: str) -> dict[str, str]:
    """The listing's entries (a top-level folder such as ``nn/``, or ``""`` for the files
    directly under src/robustlab), each with the text that describes it."""
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # a new entry
            first = line.split()[0]
            current = first if first.endswith("/") else ""
        entries[current] = entries.get(current, "") + "\n" + line
    return entries


def mentioned(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w])", text) is not None


def test_the_architecture_listing_names_every_module_file():
    entries = top_level_entries(architecture_block())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name.startswith("__"):
            continue  # a package's __init__ / __main__: the folder stands for it
        entry = f"{relative.parts[0]}/" if len(relative.parts) > 1 else ""
        if not mentioned(path.name, entries.get(entry, "")):
            missing.append(str(relative))
    assert not missing, f"README.md's Architecture section does not name: {', '.join(missing)}"


def test_the_architecture_check_fails_for_a_file_it_does_not_name():
    entries = top_level_entries("  nn/  lipschitz/ (aol.py, cpl.py)\n  data/  splits.py")
    assert mentioned("aol.py", entries["nn/"]) and not mentioned("splits.py", entries["nn/"])
    assert not mentioned("pca.py", entries["data/"]) and not mentioned("l.py", entries["nn/"])


def test_the_readme_lists_every_preset_and_only_presets():
    listed = re.search(r"# train and certify; presets: (.*?)\.\n", README, re.S)
    assert listed, "README.md's tour lost its preset list"
    names = [name.strip() for name in listed.group(1).replace("\n#", " ").split(",")]
    assert names == preset_names()


def test_user_facing_text_names_no_internal_documents():
    """SPEC.md and DESIGN.md are the developers' files: text a user reads names the paper or
    the reference code instead."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"[\"'][^\"'\n]*\bSPEC('s)?\b[^\"'\n]*[\"']", path.read_text())
    ]
    assert not offenders


@pytest.mark.slow
def test_the_readme_python_block_runs_as_pasted(tmp_path):
    """The README's Python API tour, executed as written in a fresh folder (its runs and the
    exported weights land there; torch.hub reads the checkout's hubconf.py from it)."""
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block, "README.md lost its Python API block"
    shutil.copy(PACKAGE.parents[1] / "hubconf.py", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_PROGRESS": "0"}
    env.pop("ROBUSTLAB_RUNS", None)
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    cra, models, verified, smoothed = lines[0], lines[1], lines[2], lines[3]
    for certified in (cra, smoothed):  # CRAPoints, the first at 36/255, CRA a fraction
        values = re.findall(r"CRAPoint\(eps=[0-9.]+, label='([0-9/]+)', cra=([0-9.]+)\)", certified)
        assert values and values[0][0] == "36/255" and all(0.0 <= float(v) <= 1.0 for _, v in values), certified
    assert "lipconvnet-aol" in models and verified == "True"
    assert (tmp_path / "model.safetensors").exists() and any((tmp_path / "runs").iterdir())
