"""What a new user hit in the first hour: each case on real files, through the command line."""

import json

import numpy as np
import pytest

from robustlab.cli import main

TINY = ["model.kwargs={width: 16, depth: 1}", "train.batch_size=128", "train.epochs=1", "train.device=cpu"]


def _sets(*overrides: str) -> list[str]:
    return [arg for o in [*TINY, *overrides] for arg in ("--set", o)]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("first-hour") / "run"
    assert main(["train", "--run-dir", str(run_dir), "--quiet", *_sets()]) == 0
    return run_dir


def test_a_quick_certify_never_replaces_a_checked_result(digits_run, capsys):
    checked = ["certify", str(digits_run), "--quiet", "--json", "--check-soundness", "--attack-steps", "5"]
    assert run_cli(capsys, *checked)[0] == 0
    full = json.loads((digits_run / "certify.json").read_text())
    assert full["n"] == 360 and full["soundness"]["sound"]

    status, out, _ = run_cli(capsys, "certify", str(digits_run), "--quiet", "--json", "--limit", "50")
    assert status == 0 and json.loads(out)["file"] == str(digits_run / "certify-first50.json")
    status, out, _ = run_cli(
        capsys, "certify", str(digits_run), "--quiet", "--json", "--eps", "0.1", "--split", "train"
    )
    assert status == 0 and json.loads(out)["file"] == str(digits_run / "certify-train-eps0.1.json")
    assert json.loads((digits_run / "certify.json").read_text()) == full  # untouched

    status, _, err = run_cli(capsys, "certify", str(digits_run), "--quiet")  # same settings, unchecked
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"{digits_run / 'certify.json'} holds a soundness-checked result" in err and "--force" in err
    assert run_cli(capsys, "certify", str(digits_run), "--quiet", "--force")[0] == 0
    assert "soundness" not in json.loads((digits_run / "certify.json").read_text())


def test_a_radius_in_0_255_units_is_refused_with_the_fraction_to_write(digits_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", str(digits_run), "--eps", "36"])
    assert exit_info.value.code == 2
    assert "radius '36' is above 1; radii are in the [0, 1] pixel scale: write 36/255" in capsys.readouterr().err


def _write_mnist(folder, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28, 1), dtype=np.uint8),
        "y_test": np.arange(n_test) % 10,
    }
    np.savez(folder / "mnist.npz", **arrays)


@pytest.mark.slow
def test_a_run_trained_through_the_environment_certifies_from_any_shell(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    _write_mnist(data)
    monkeypatch.setenv("ROBUSTLAB_DATA", str(data))
    run_dir = tmp_path / "run"
    overrides = _sets("data.name=MNIST", "augment.flip=false")
    assert run_cli(capsys, "train", "--run-dir", str(run_dir), "--quiet", *overrides)[0] == 0
    monkeypatch.delenv("ROBUSTLAB_DATA")  # a fresh shell

    assert "data_dir: " + str(data.resolve()) in (run_dir / "config.yaml").read_text()
    assert "name: mnist" in (run_dir / "config.yaml").read_text()
    assert run_cli(capsys, "certify", str(run_dir), "--quiet")[0] == 0

    moved = tmp_path / "moved"
    data.rename(moved)
    status, _, err = run_cli(capsys, "certify", str(run_dir), "--quiet")
    assert status == 2 and "If it is in another folder, give that folder (--data-dir or $ROBUSTLAB_DATA)" in err
    assert run_cli(capsys, "certify", str(run_dir), "--quiet", "--data-dir", str(moved))[0] == 0


def test_a_file_given_as_the_data_folder_is_named_as_a_file(tmp_path, capsys):
    not_a_folder = tmp_path / "mnist.npz"
    not_a_folder.write_bytes(b"")
    status, _, err = run_cli(capsys, "data", "info", "mnist", "--data-dir", str(not_a_folder))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"{not_a_folder} is a file, but --data-dir (data.data_dir) names the folder" in err


def test_report_of_an_experiment_without_runs_is_an_error_and_draws_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    (tmp_path / "runs").mkdir()  # an empty store (a root that does not exist is another error)
    status, _, err = run_cli(
        capsys, "report", "data_scaling", "--scale", "smoke", "--runs-root", str(tmp_path / "runs"), "--out", str(out)
    )
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "no finished runs of data_scaling (scale smoke, digits)" in err
    assert not out.exists() or not list(out.iterdir())


def test_train_reads_the_data_folder_given_by_data_dir_and_records_it(tmp_path, capsys):
    data = tmp_path / "elsewhere"
    _write_mnist(data)
    run_dir = tmp_path / "run"
    overrides = _sets("data.name=mnist", "augment.flip=false")
    status, _, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--quiet", "--data-dir", str(data), *overrides)
    assert status == 0, err
    assert "data_dir: " + str(data.resolve()) in (run_dir / "config.yaml").read_text()


# every command that reads a dataset takes --data-dir; the others read no data
DATA_COMMANDS = [
    ["train"],
    ["experiment", "data_scaling"],
    ["reproduce"],
    ["certify", "RUN"],
    ["smooth", "RUN"],
    ["demo"],
    ["report", "data_scaling"],
    ["data", "info"],
    ["data", "prepare", "mnist"],
]


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_that_reads_data_takes_data_dir(command):
    from robustlab.cli import build_parser

    args = build_parser().parse_args([*command, "--data-dir", "/some/folder"])
    assert args.data_dir == "/some/folder"


def test_experiment_runs_read_the_data_folder_given_by_data_dir(tmp_path, capsys):
    from robustlab.cli import build_parser
    from robustlab.cli.experiment import setup_from_args

    argv = ["experiment", "data_scaling", "--scale", "smoke", "--data-dir", str(tmp_path / "data")]
    setup = setup_from_args(build_parser().parse_args(argv))
    assert setup.base_config({}).data.data_dir == str(tmp_path / "data")
    status, out, err = run_cli(capsys, *argv, "--dry-run", "--json", "--runs-root", str(tmp_path / "runs"))
    assert status == 0, err
    jobs = json.loads(out)["jobs"]
    assert jobs and all(job["status"] == "train" for job in jobs)


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["train", "--bogus"], "usage: robustlab train "),
        (["experiment", "data_scaling", "--bogus"], "usage: robustlab experiment "),
        (["data", "info", "--bogus"], "usage: robustlab data info "),
        (["runs", "list", "--bogus"], "usage: robustlab runs list "),
    ],
)
def test_an_unknown_argument_prints_the_subcommands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(usage)
    assert (
        f"robustlab {' '.join(argv[:2] if argv[0] in ('data', 'runs') else argv[:1])}: error: unrecognized arguments: --bogus"
        in err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--device", "tpu9"],
        ["certify", "RUN", "--device", "tpu9"],
        ["experiment", "data_scaling", "--scale", "smoke", "--dry-run", "--device", "tpu9"],
        ["reproduce", "--device", "tpu9"],
        ["verify", "--model", "lipmlp-aol", "--dataset", "digits", "--device", "cuda:x"],
        ["smooth", "RUN", "--device", "gpu"],
        ["demo", "--device", "tpu9"],
        ["theory", "theorem1", "--device", "tpu9"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_bad_device_name_is_a_usage_error_of_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is not a device; use auto, cpu, cuda, cuda:N" in err
    assert "Traceback" not in err


def test_a_bad_device_in_the_config_is_refused_before_training(tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--set", "train.device=tpu9")
    assert status == 2 and "train.device: 'tpu9' is not a device" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train", "--set", "optim.lrr=0.3"], "unknown config key optim.lrr (did you mean 'lr'?)"),
        (["train", "--config", "digit"], "unknown preset 'digit' (did you mean 'digits'?)"),
        (["data", "info", "cifar"], "unknown dataset 'cifar' (did you mean 'cifar10'?)"),
        (["verify", "--model", "lipconvnet-aoll", "--dataset", "digits"], "(did you mean 'lipconvnet-aol'?)"),
    ],
)
def test_a_close_miss_of_a_name_or_key_suggests_the_right_one(argv, hint, capsys):
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and hint in err and len(err.strip().splitlines()) == 1


def test_an_interrupted_run_in_the_listing_shows_the_command_that_resumes_it(tmp_path, capsys):
    from robustlab.config import load_config
    from robustlab.runs import claims
    from robustlab.runs.store import RunStore

    store = RunStore(tmp_path / "runs")
    config = load_config(None, ["name=s"])
    with claims.alive(store):
        run = store.create(config)
        store.record(run, config, "running")
    status, out, _ = run_cli(capsys, "runs", "list", "--runs-root", str(tmp_path / "runs"))
    assert status == 0
    assert f"{run.path.name} was interrupted; continue it with: robustlab train --resume {run.path}" in out


def test_a_mistyped_run_folder_points_to_the_listing_and_the_close_name(digits_run, capsys):
    typo = digits_run.parent / (digits_run.name + "x")
    status, _, err = run_cli(capsys, "certify", str(typo))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"(did you mean '{digits_run.name}'?)" in err and "`robustlab runs list` lists them" in err


def test_miniature_scales_train_on_one_thread_and_give_the_threads_back():
    import torch

    from robustlab.experiments.parts import MINIATURES
    from robustlab.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before and MINIATURES == ("smoke", "demo")
