import json
import os
import subprocess
import sys

import pytest

from robustlab.cli import main


@pytest.mark.slow
def test_theorem2_command_prints_json_and_writes_the_figure(tmp_path):
    figure = tmp_path / "theorem2.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustlab.cli",
            "theory",
            "theorem2",
            "--d",
            "2",
            "--delta",
            "0.2",
            "--cells",
            "2",
            "--sizes",
            "4,925",
            "--trials",
            "2",
            "--test-size",
            "200",
            "--json",
            "--plot",
            str(figure),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert [row["n"] for row in result["rows"]] == [4, 925]
    assert result["settings"]["sufficient_n"] == 925 and result["rows"][1]["robust"] >= 0.99
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["plot"] == str(figure)


def test_theorem1_command_table_and_figure(tmp_path, capsys):
    figure = tmp_path / "theorem1.png"
    status = main(
        [
            "theory",
            "theorem1",
            "--sizes",
            "8,32",
            "--fixed-d",
            "5",
            "--learners",
            "sign,1nn,oracle",
            "--trials",
            "2",
            "--test-size",
            "100",
            "--pgd-steps",
            "3",
            "--plot",
            str(figure),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "d = ceil(log2 n) + 7" in out and "d = 5" in out and "oracle" in out and "bound" in out
    assert figure.stat().st_size > 10_000


def test_theorem1_json_has_both_sweeps(capsys):
    assert (
        main(
            [
                "theory",
                "theorem1",
                "--sizes",
                "16",
                "--fixed-d",
                "6",
                "--learners",
                "sign,oracle",
                "--trials",
                "2",
                "--test-size",
                "50",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    scaled, fixed = result["sweeps"].values()
    assert [r["d"] for r in scaled["rows"]] == [11, 11] and [r["d"] for r in fixed["rows"]] == [6, 6]
    sign = next(r for r in scaled["rows"] if r["learner"] == "sign")
    assert sign["clean"] == 1.0 and sign["robust"] == 0.0


def test_bad_options_give_one_line_errors(capsys):
    assert main(["theory", "theorem1", "--sizes", "8", "--eps", "1.5"]) == 2
    assert "eps must be in [0, 1)" in capsys.readouterr().err
    assert main(["theory", "theorem1", "--sizes", "8", "--learners", "knn"]) == 2
    assert "unknown learner(s) knn" in capsys.readouterr().err
    assert main(["theory", "theorem2", "--delta", "0.4"]) == 2
    assert "delta must be in" in capsys.readouterr().err
