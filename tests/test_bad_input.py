"""Bad input from real files on disk: each is exit status 2 and one line naming the file or key."""

import dataclasses
import typing

import pytest

from robustlab.cli import main
from robustlab.config import ConfigError, ExperimentConfig, Range, check_ranges, load_config

TINY = ["model.kwargs={width: 16, depth: 1}", "train.batch_size=128", "train.epochs=1", "train.device=cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_config_file_whose_top_level_is_a_list(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- optim: {lr: 0.1}\n- train: {epochs: 2}\n")
    status, _, err = run_cli(capsys, "train", "--config", str(path), "--runs-root", str(tmp_path / "runs"))
    assert_one_line_error(status, err, str(path), "top level must be a mapping", "got a list")


def test_config_file_that_is_not_yaml(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("optim: {lr: 0.1\ntrain: [\n")
    status, _, err = run_cli(capsys, "train", "--config", str(path), "--runs-root", str(tmp_path / "runs"))
    assert_one_line_error(status, err, str(path), "not valid YAML")


def test_run_folder_with_a_damaged_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("data: {name: digits\nmodel: [")
    status, _, err = run_cli(capsys, "certify", str(run_dir))
    assert_one_line_error(status, err, str(run_dir / "config.yaml"), "not valid YAML")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.checkpoint_every=0", "train.checkpoint_every: 0 is out of range; valid values: [1, inf)"),
        ("optim.momentum=1", "optim.momentum: 1.0 is out of range; valid values: [0, 1)"),
        ("optim.momentum=-0.1", "optim.momentum: -0.1 is out of range; valid values: [0, 1)"),
        ("eval.eps=[36]", "eval.eps: 36.0 is out of range; valid values: [0, 1]; radii are in the [0, 1] pixel"),
        ("optim.lr=.nan", "optim.lr: nan is out of range; valid values: (0, inf)"),
        ("train.epochs=.inf", "train.epochs: inf is out of range; valid values: (0, inf)"),
    ],
)
def test_out_of_range_values_are_refused_before_training(tmp_path, capsys, override, expected):
    runs = tmp_path / "runs"
    argv = [arg for o in [*TINY, override] for arg in ("--set", o)]
    status, _, err = run_cli(capsys, "train", "--runs-root", str(runs), *argv)
    assert_one_line_error(status, err, expected)
    assert not runs.exists() or not any(p.is_dir() for p in runs.iterdir())  # no run folder was made


def _numeric(hint) -> bool:
    args = typing.get_args(hint) or (hint,)
    return any(a in (int, float) or (typing.get_origin(a) is list and _numeric(typing.get_args(a)[0])) for a in args)


def _schema(cls=ExperimentConfig, where=""):
    """(dotted key, field, type hint) of every leaf of the config schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _schema(hints[f.name], key)
        else:
            yield key, f, hints[f.name]


def _outside(valid: Range) -> float:
    if valid.low is not None:
        return valid.low if valid.low_open else valid.low - 1
    return valid.high if valid.high_open else valid.high + 1


def test_every_numeric_config_key_declares_and_enforces_a_range():
    numeric = [(key, f) for key, f, hint in _schema() if _numeric(hint)]
    assert len(numeric) > 15  # the walk reaches every section
    missing = [key for key, f in numeric if "range" not in f.metadata]
    assert not missing, f"numeric config keys without a range (add one with ranged(...)): {missing}"
    for key, f in numeric:
        bad = _outside(f.metadata["range"])
        value = f"[{bad}]" if key == "eval.eps" else bad
        with pytest.raises(ConfigError, match=rf"^{key}: .* is out of range; valid values: "):
            load_config(None, [f"{key}={value}"])


def test_a_config_changed_in_python_is_checked_by_train(tmp_path):
    from robustlab.train.loop import train

    config = load_config("digits", TINY)
    check_ranges(config)  # the defaults are in range
    config.optim.momentum = 1.5
    with pytest.raises(ConfigError, match=r"optim.momentum: 1.5 is out of range"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_dataset_and_model_names_are_case_normalised():
    config = load_config(None, ["data.name=MNIST", "model.name=LipConvNet-AOL"])
    assert config.data.name == "mnist" and config.model.name == "lipconvnet-aol"
    assert load_config(None, ["data.name=Data/My.npz"]).data.name == "Data/My.npz"  # a path keeps its case


def test_a_run_at_chance_accuracy_says_so(tmp_path, capsys):
    argv = [arg for o in [*TINY, "train.epochs=2", "optim.lr=1e4"] for arg in ("--set", o)]
    status, out, _ = run_cli(capsys, "train", "--runs-root", str(tmp_path / "runs"), "--quiet", *argv)
    assert status == 0
    assert "WARNING: accuracy" in out and "is chance level (1 in 10 = 10.0%)" in out
    assert "the training loss stopped falling" in out
