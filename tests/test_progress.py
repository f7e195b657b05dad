"""Progress off a terminal: plain lines, few of them; --quiet and ROBUSTLAB_PROGRESS=0 silence them."""

import re

import pytest

from robustlab.cli import main

DEMO = ["demo", "--sizes", "48,97", "--epochs", "1", "--seeds", "0"]
TINY_TRAIN = ["--set", "model.kwargs={width: 16, depth: 1}", "--set", "train.epochs=3", "--set", "train.device=cpu"]


@pytest.mark.slow
def test_demo_off_a_terminal_prints_one_plain_line_per_run(tmp_path, capsys):
    assert main([*DEMO, "--out", str(tmp_path / "demo")]) == 0
    lines = capsys.readouterr().err.splitlines()  # captured stderr is not a terminal
    assert len(lines) == 4  # 2 recipes x 2 sizes, nothing else
    assert all("\x1b" not in line and "\r" not in line for line in lines)
    assert lines[0].startswith("runs: data_scaling-digits-tiny-lipmlp subset_size=48 seed=0: accuracy ")


def test_train_off_a_terminal_prints_its_folder_then_one_line_per_epoch(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "run"), *TINY_TRAIN]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"digits: training in {tmp_path / 'run'}"
    assert [line.split("  ")[0] for line in lines[1:]] == [f"digits: epoch {e}/3" for e in (1, 2, 3)]
    assert "loss " in lines[-1] and "accuracy " in lines[-1]


@pytest.mark.parametrize("silence", ["--quiet", "ROBUSTLAB_PROGRESS=0"])
def test_quiet_and_the_environment_variable_silence_progress(tmp_path, capsys, monkeypatch, silence):
    argv = ["train", "--run-dir", str(tmp_path / "run"), *TINY_TRAIN]
    if silence == "--quiet":
        argv.append("--quiet")
    else:
        monkeypatch.setenv("ROBUSTLAB_PROGRESS", "0")
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_resuming_a_run_without_a_checkpoint_says_it_starts_again(tmp_path, capsys):
    from robustlab.config import load_config
    from robustlab.runs.store import RunStore

    run = RunStore(tmp_path).create(load_config("digits", [o for o in TINY_TRAIN if o != "--set"]))
    assert main(["train", "--resume", str(run.path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{run.path} has no checkpoint.pt" in err and "training starts again from step 0" in err


@pytest.mark.slow
def test_on_a_terminal_a_bar_replaces_the_plain_lines(tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()  # a real terminal for the child's stderr, 100 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    argv = [sys.executable, "-m", "robustlab.cli", "train", "--run-dir", str(tmp_path / "run"), *TINY_TRAIN]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert child.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert f"digits: training in {tmp_path / 'run'}" in screen
    assert "\r" in screen and "step/s" in screen  # tqdm redraws its bar in place
    assert "epoch 1/3" not in screen  # no plain epoch lines on a terminal


def test_a_plain_line_estimates_the_time_left_once_some_work_is_done(capsys):
    from robustlab.progress import Progress, duration

    with Progress(4, "work", "step") as progress:
        progress.line("starting")
        progress.update(1)
        progress.line("one done")
        progress.update(3)
        progress.line("all done")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("work: starting [") and "left" not in lines[0]
    assert re.fullmatch(r"work: one done \[\d+s, about \d+s left\]", lines[1])
    assert "left" not in lines[2]
    assert (duration(42), duration(720), duration(9000)) == ("42s", "12 min", "2.5 h")
