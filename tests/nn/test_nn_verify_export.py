import json

import pytest
import torch
from nn_helpers import train_a_little
from torch import nn

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.files import atomic_torch_save
from robustlab.nn.blocks import CenterInputs, Flatten, GlobalMaxPool
from robustlab.nn.export import export_model
from robustlab.nn.lipschitz import LAYER_FAMILIES, AOLConv2d, CayleyConv2d, LipschitzLayer
from robustlab.nn.models import ARCHITECTURE_VERSION, MODELS, ImageClassifier, create_model
from robustlab.nn.verify import verify_model
from robustlab.runs.store import RunStore

DIGITS = (1, 8, 8)
BROKEN = "test-broken-conv"


def broken_model(input_shape, num_classes):
    """Test-only: a plain conv with large weights, which claims to be 1-Lipschitz."""
    conv = nn.Conv2d(input_shape[0], num_classes, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(50)
    return [conv, GlobalMaxPool(), Flatten()], 1.0


if BROKEN not in MODELS:
    MODELS.add(BROKEN, broken_model)


def tiny(family: str) -> ImageClassifier:
    return create_model(f"lipconvnet-{family}", DIGITS, 10, width=4, depth=1)


@pytest.mark.parametrize("family", LAYER_FAMILIES.names())
def test_trained_lipschitz_models_verify(family):
    model = tiny(family)
    train_a_little(model, DIGITS, steps=3, lr=0.1)
    report = verify_model(model, DIGITS, attack_steps=10, attack_restarts=4)
    assert report["ok"], [row for row in report["layers"] if not row["ok"]]
    assert all(row["norm"] <= 1 + 1e-4 for row in report["layers"])
    assert 0 < report["network"]["lower_bound"] <= 1 + 1e-4
    assert model.training  # the mode is restored


def test_verify_flags_a_large_plain_conv_and_its_fft_bound_is_sound():
    model = create_model(BROKEN, DIGITS, 10)
    report = verify_model(model, DIGITS, attack_steps=20, attack_restarts=2)
    assert not report["ok"]
    (conv_row,) = [row for row in report["layers"] if row["type"] == "Conv2d"]
    assert not conv_row["ok"] and conv_row["method"] == "lanczos"
    conv = model[1]
    matrix = torch.autograd.functional.jacobian(
        lambda v: nn.functional.conv2d(v.view(1, *DIGITS), conv.weight, padding=1).flatten(), torch.zeros(64)
    )
    exact = float(torch.linalg.matrix_norm(matrix.double(), ord=2))
    assert conv_row["norm"] == pytest.approx(exact, rel=1e-5)
    assert exact <= conv_row["upper_bound"] * (1 + 1e-6)
    assert report["network"]["lower_bound"] > 1.5  # the attack finds the violation too


def test_fft_bound_holds_for_aol_at_small_images():
    layer = AOLConv2d(3, 3)
    with torch.no_grad():
        layer.weight.normal_()
    assert layer.eval().norm_report(torch.rand(1, 3, 2, 2)).upper_bound <= 1 + 1e-5


def test_verify_uses_exact_svd_for_dense_and_analytic_norms_for_batchnorm():
    bn = nn.BatchNorm2d(1).eval()
    bn.running_var.fill_(0.25)
    model = ImageClassifier([CenterInputs([0.0]), bn, Flatten(), nn.Linear(4, 2)], (1, 2, 2), 2, None)
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([[3.0, 0, 0, 0], [0, 1, 0, 0]]))
    rows = {row["type"]: row for row in verify_model(model, (1, 2, 2), attack_steps=2)["layers"]}
    assert rows["Linear"]["method"] == "svd" and rows["Linear"]["norm"] == pytest.approx(3.0)
    assert rows["BatchNorm2d"]["norm"] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("family", LAYER_FAMILIES.names())
def test_export_gives_plain_modules_with_identical_outputs(family):
    model = tiny(family)
    train_a_little(model, DIGITS, steps=2, lr=0.1)
    model.eval()
    exported = export_model(model)
    x = torch.rand(5, *DIGITS)
    torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)
    custom = [m for m in exported.modules() if isinstance(m, LipschitzLayer) and not isinstance(m, CayleyConv2d)]
    assert not custom
    assert not any(p.requires_grad for p in exported.parameters())
    if family == "orthogonal":
        assert any(isinstance(m, CayleyConv2d) for m in exported.modules())


def test_export_keeps_the_model_unchanged_and_in_its_mode():
    model = tiny("cpl")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cli_verify_passes_a_lipconvnet_on_cifar10_shapes(capsys):
    status = main(
        [
            "verify",
            "--model",
            "lipconvnet-cpl",
            "--dataset",
            "cifar10",
            "--model-arg",
            "width=4",
            "--model-arg",
            "depth=1",
            "--attack-steps",
            "3",
            "--quiet",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["ok"]
    assert report["input_shape"] == [3, 32, 32]
    assert sum(row["type"] == "CPLConv2d" for row in report["layers"]) == 6  # the 1x1 stem + 5 blocks


def test_cli_verify_exits_1_for_a_broken_model(capsys):
    status = main(["verify", "--model", BROKEN, "--dataset", "digits", "--attack-steps", "3", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    assert "NOT 1-LIPSCHITZ" in captured.err and "NO" in captured.out


def test_cli_verify_explains_missing_arguments(capsys):
    assert main(["verify", "--model", "lipconvnet-cpl"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["verify", "--model", "lipconvnet-cpl", "--dataset", "digits", "--model-arg", "nonsense"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_cli_verify_reads_a_run_directory(tmp_path, capsys):
    """A run folder as `robustlab train` writes it (config.yaml + model.pt with architecture)."""
    config = load_config(None, ["model.name=lipmlp-aol", "model.kwargs={depth: 1}", "data.name=digits"])
    run = RunStore(tmp_path / "runs").create(config, run_dir=tmp_path / "run")
    model = create_model("lipmlp-aol", DIGITS, 10, depth=1)
    architecture = {
        "name": "lipmlp-aol",
        "kwargs": {"depth": 1},
        "input_shape": list(DIGITS),
        "num_classes": 10,
        "mean": [0.0],
        "version": ARCHITECTURE_VERSION,
    }
    atomic_torch_save({"architecture": architecture, "model": model.state_dict()}, run.model_path)
    status = main(["verify", str(run.path), "--attack-steps", "3", "--quiet", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["ok"] and report["model"].startswith("lipmlp-aol")


def _large_conv_net(gain: float) -> nn.Sequential:
    """One plain conv with more parameters than the fast check gives its exact methods."""
    conv = nn.Conv2d(128, 128, 3, padding=1, bias=False)  # 147,456 parameters
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)))
        conv.weight.mul_(gain / float(torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2) * 3))
    return nn.Sequential(conv, GlobalMaxPool(), Flatten())


def test_the_fast_default_estimates_large_layers_and_still_finds_one_above_its_bound():
    from robustlab.nn.verify import EXACT_PARAMETERS

    assert sum(p.numel() for p in _large_conv_net(1).parameters()) > EXACT_PARAMETERS
    fast = verify_model(_large_conv_net(1.0), (128, 4, 4), attack_steps=2)
    (row,) = [r for r in fast["layers"] if r["type"] == "Conv2d"]
    assert row["method"] == "lanczos" and row["upper_bound"] is None and row["ok"] and not fast["exact"]
    exact = verify_model(_large_conv_net(1.0), (128, 4, 4), exact=True, attack_steps=2)
    (exact_row,) = [r for r in exact["layers"] if r["type"] == "Conv2d"]
    assert exact_row["upper_bound"] >= exact_row["norm"] == pytest.approx(row["norm"], rel=1e-4)
    broken = verify_model(_large_conv_net(6.0), (128, 4, 4), attack_steps=2)  # k ||K|| bound / 3 * 6 > 1
    assert not broken["ok"] and not broken["layers"][0]["ok"]


def test_verify_prints_a_line_per_layer_off_a_terminal(capsys):
    verify_model(tiny("aol"), DIGITS, attack_steps=2, progress=True)
    err = capsys.readouterr().err
    assert "verify: " in err and "layers, fast" in err
    assert "AOLConv2d): " in err and "network lower bound: " in err


def test_the_cli_states_the_fast_checks_size_limit():
    from robustlab.cli import build_parser
    from robustlab.nn.verify import EXACT_PARAMETERS

    parser = build_parser()._subparsers._group_actions[0].choices["verify"]  # type: ignore[union-attr]
    assert f"{EXACT_PARAMETERS} parameters" in parser.format_help().replace("\n", " ").replace("  ", " ")
