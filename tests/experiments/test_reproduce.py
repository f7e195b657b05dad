"""`robustlab reproduce --scale smoke`: every part of the paper runs and lands in one report."""

import json
import re

import matplotlib.image
import pytest

from robustlab.cli import main
from robustlab.experiments.experiment import paper_parts
from robustlab.experiments.reproduce import THEORY_TITLE, section_title


@pytest.mark.slow
def test_reproduce_smoke_writes_a_report_with_every_section(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["reproduce", "--scale", "smoke", "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--quiet"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [p["part"] for p in summary["parts"]] == [p.id for p in paper_parts()] + ["theory"]
    assert not any(p["error"] for p in summary["parts"])
    page = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    for part in paper_parts():
        assert f'<section id="{part.id}"><h2>{section_title(part, "smoke")}</h2>' in page
        assert f"## {section_title(part, 'smoke')}\n" in markdown
    assert f"<h2>{THEORY_TITLE}</h2>" in page and "The paper&#x27;s claims, tested at this scale" in page
    for part in paper_parts():  # every section says where its numbers come from
        section = markdown.split(f"## {section_title(part, 'smoke')}")[1].split("\n## ")[0]
        assert "At this scale: scale 'smoke'" in section
    verdicts = re.findall(r"\| (holds|does not hold|cannot tell at this scale) \|", markdown)
    assert len(verdicts) >= 10 and "The theorems&#x27; bounds, tested" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 10  # every experiment's figures, the Figure 2 stand-in and both theorems
    for image in images:
        png = out / image
        assert matplotlib.image.imread(png).shape[0] > 100 and png.with_suffix(".svg").exists()
    assert "commit " in page or "not a git checkout" in page  # provenance
    assert "runs done, 0 missing" in page and "robustlab experiment data_scaling --scale smoke" in page
    assert main(argv) == 0  # a second call reuses every run and only draws
    assert "runs done" in capsys.readouterr().out
