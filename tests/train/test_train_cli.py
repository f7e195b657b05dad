import json
import math

import pytest
import torch
import yaml
from torch import nn
from train_helpers import tiny_overrides

from robustlab.cli import main
from robustlab.files import atomic_torch_save, safe_torch_load
from robustlab.nn.blocks import Flatten
from robustlab.nn.models import MODELS

FALSE_CLAIM = "test-false-claim"


def false_claim_mlp(input_shape, num_classes, *, width: int = 16, depth: int = 1):
    """Test-only: plain dense layers that claim to be 1-Lipschitz (nothing normalises them)."""
    hidden = [layer for _ in range(depth - 1) for layer in (nn.Linear(width, width), nn.ReLU())]
    first = nn.Linear(math.prod(input_shape), width)
    return [Flatten(), first, nn.ReLU(), *hidden, nn.Linear(width, num_classes)], 1.0


if FALSE_CLAIM not in MODELS:
    MODELS.add(FALSE_CLAIM, false_claim_mlp)


def _sets(*overrides: str) -> list[str]:
    return [arg for o in tiny_overrides(*overrides) for arg in ("--set", o)]


def test_train_then_certify_with_soundness_check(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "digits"
    assert (
        main(
            [
                "train",
                "--runs-root",
                str(tmp_path / "runs"),
                "--run-dir",
                str(run_dir),
                "--quiet",
                "--json",
                *_sets("train.epochs=1"),
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert trained["run_dir"] == str(run_dir) and trained["steps"] == 12

    assert (
        main(
            [
                "certify",
                str(run_dir),
                "--check-soundness",
                "--attack-steps",
                "10",
                "--quiet",
                "--json",
                "--eps",
                "36/255",
                "0.1",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [e["label"] for e in report["cra"]] == ["36/255", "0.1"]
    assert report["cra"][0]["cra"] == trained["cra"][0]["cra"]  # the same certificate as training's
    assert report["soundness"]["sound"] and report["soundness"]["checked"] > 0
    assert report["soundness"]["max_margin_drop_ratio"] <= 1.0
    assert report["file"] == str(run_dir / "certify-eps0.1412_0.1.json")  # not the run's own radii: its own file
    assert json.loads((run_dir / "certify-eps0.1412_0.1.json").read_text())["soundness"]["sound"]

    assert main(["certify", str(run_dir), "--split", "train", "--quiet"]) == 0
    assert "on train (1437 images)" in capsys.readouterr().out
    assert main(["certify", str(run_dir), "--split", "val"]) == 2
    assert "no validation split" in capsys.readouterr().err
    assert main(["certify", str(run_dir), "--check-soundness", "--attack", "fgsm"]) == 2
    assert "known attacks: autoattack, pgd" in capsys.readouterr().err


def test_resume_from_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["train", "--run-dir", str(run_dir), "--quiet", *_sets("train.epochs=1")]) == 0
    (run_dir / "results.json").unlink()  # as if killed after the last checkpoint
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["steps"] == 12 and (run_dir / "results.json").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "missing")]) == 2
    assert "not a robustlab run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--set", "optim.lr=1"]) == 2
    assert "--resume continues a run with its saved config" in capsys.readouterr().err
    assert main(["train", "--config", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_a_diverged_run_is_reported_in_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--run-dir",
                str(tmp_path / "nan"),
                "--quiet",
                *_sets("model.name=simpleconvnet", "model.kwargs={width: 4}", "train.epochs=6", "optim.lr=100"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert error.startswith("robustlab train: error: the training loss became NaN or infinite")
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def _tamper(run_dir, change) -> None:
    """Rewrite the run's weights file with ``change(name, tensor)`` applied to every entry."""
    weights = safe_torch_load(run_dir / "model.pt")
    weights["model"] = {name: change(name, value) for name, value in weights["model"].items()}
    atomic_torch_save(weights, run_dir / "model.pt")


def test_unconverged_cpl_power_iteration_still_certifies_soundly(tmp_path, capsys):
    # ONE Lanczos step on a random vector underestimates sigma; the layer must notice and
    # fall back to a rigorous bound instead of certifying with it
    run_dir = tmp_path / "cpl"
    assert (
        main(
            [
                "train",
                "--run-dir",
                str(run_dir),
                "--quiet",
                *_sets("model.name=lipconvnet-cpl", "model.kwargs={width: 8, depth: 1}", "train.epochs=1"),
            ]
        )
        == 0
    )
    generator = torch.Generator().manual_seed(0)
    _tamper(
        run_dir,
        lambda name, value: (
            torch.randn(value.shape, generator=generator) if name.endswith(".u") and value.dim() == 4 else value
        ),
    )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["eval"]["power_iterations"] = 1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()

    assert main(["certify", str(run_dir), "--check-soundness", "--attack-steps", "10", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["soundness"]["sound"] and report["soundness"]["max_margin_drop_ratio"] <= 1.0


def test_soundness_check_fails_loudly_on_a_false_lipschitz_claim(tmp_path, capsys):
    # plain dense layers scaled by 5 (every Lipschitz family divides by a guaranteed bound, so
    # no tampering with one breaks its claim), while the model still claims 1: false certificates
    run_dir = tmp_path / "false-claim"
    assert (
        main(["train", "--run-dir", str(run_dir), "--quiet", *_sets(f"model.name={FALSE_CLAIM}", "train.epochs=1")])
        == 0
    )
    _tamper(run_dir, lambda name, value: 5 * value if name.endswith("weight") else value)
    capsys.readouterr()

    assert main(["certify", str(run_dir), "--check-soundness", "--attack-steps", "10", "--quiet", "--json"]) == 1
    output = capsys.readouterr()
    report = json.loads(output.out)
    assert not report["soundness"]["sound"] and report["soundness"]["max_margin_drop_ratio"] > 1
    example = report["soundness"]["counterexamples"][0]
    assert example["distance"] <= example["certified_radius"]
    assert "UNSOUND" in output.err and "Lipschitz bound does not hold" in output.err


@pytest.mark.slow
def test_liresnet_preset_trains_certifies_soundly_and_verifies(tmp_path, capsys):
    """A network whose bound is computed from its weights, end to end: EMMA training, pairwise
    certificates in float64, PGD on every certified point, and verify on the run."""
    run_dir = tmp_path / "runs" / "liresnet"
    tiny = ["model.kwargs={width: 8, depth: 2, features: 16}", "train.epochs=5"]
    args = ["train", "--config", "liresnet-digits", "--run-dir", str(run_dir), "--quiet", "--json"]
    assert main(args + [arg for o in tiny for arg in ("--set", o)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["accuracy"] > 0.6 and trained["lipschitz_constant"] > 1  # chance: 0.1

    assert main(["certify", str(run_dir), "--check-soundness", "--attack-steps", "20", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cra"] == trained["cra"] and report["cra"][0]["cra"] > 0
    soundness = report["soundness"]
    assert soundness["sound"] and soundness["checked"] > 50
    assert soundness["max_margin_drop_ratio"] <= report["lipschitz_constant"]

    assert main(["verify", str(run_dir), "--quiet", "--json", "--attack-steps", "10"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["claimed_lipschitz"] == pytest.approx(report["lipschitz_constant"], rel=1e-12)
    assert verified["network"]["lower_bound"] <= verified["claimed_lipschitz"]
