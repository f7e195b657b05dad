"""The Lipschitz layer protocol: a family defined here, in one class per layer and one
registry line, gets verification, export, the model zoo, training and certification."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from nn_helpers import assert_one_lipschitz, train_a_little
from torch import Tensor, nn

from robustlab.certify.evaluate import certify_points
from robustlab.cli import main
from robustlab.nn.blocks import CenterInputs, Flatten
from robustlab.nn.export import export_model
from robustlab.nn.lipschitz import (
    LAYER_FAMILIES,
    CPLConv2d,
    CPLLinear,
    LayerFamily,
    LipschitzLayer,
    NormReport,
    configure_model_eval,
)
from robustlab.nn.lipschitz.base import dense_norm_report, with_weights
from robustlab.nn.models import MODELS, ImageClassifier, create_model
from robustlab.nn.verify import verify_model

DIGITS = (1, 8, 8)
TOY = "test-spectral"


class SpectralLinear(LipschitzLayer):
    """y = gain * W x / max(1, ||W||_2) + b: at most ``gain``-Lipschitz (||W||_2 exact, by SVD)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 1.0):
        super().__init__()
        self.in_features, self.out_features, self.gain = in_features, out_features, gain
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def effective_weight(self) -> Tensor:
        return self.gain * self.weight / torch.linalg.matrix_norm(self.weight, ord=2).clamp_min(1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def export(self) -> nn.Module:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        return with_weights(linear, self.effective_weight(), self.bias)

    def lipschitz_bound(self) -> float:
        return self.gain

    def norm_report(self, inputs: Tensor, **lanczos) -> NormReport:
        return dense_norm_report(self.effective_weight())


class SpectralConv2d(LipschitzLayer):
    """'Same' convolution, kernel divided by max(1, sqrt(k^2) ||K as a (c, c k^2) matrix||_2):
    each pixel lies in k^2 patches, so the convolution's norm is at most 1 at any image size.
    It keeps the default norm report (Lanczos on the Jacobian)."""

    affine = True

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.bias)

    def effective_weight(self) -> Tensor:
        bound = self.kernel_size * torch.linalg.matrix_norm(self.weight.flatten(1), ord=2)
        return self.weight / bound.clamp_min(1)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.kernel_size // 2)

    def export(self) -> nn.Module:
        conv = nn.Conv2d(self.channels, self.channels, self.kernel_size, padding=self.kernel_size // 2)
        return with_weights(conv, self.effective_weight(), self.bias)


def register_toy_family() -> None:
    LAYER_FAMILIES.add(
        TOY,
        LayerFamily(
            TOY,
            "spectrally normalised layers (a test of the layer protocol)",
            conv=lambda channels, kernel_size=3, *, input_size=None: SpectralConv2d(channels, kernel_size),
            linear=SpectralLinear,
        ),
    )


@pytest.fixture(scope="module", autouse=True)
def toy_family():
    """Registered for this module only, so that other tests see the built-in families alone."""
    with pytest.MonkeyPatch.context() as patch:
        for registry in (LAYER_FAMILIES, MODELS):
            patch.setattr(registry, "_entries", dict(registry._entries))
        register_toy_family()
        yield


def test_a_registered_family_gets_every_architecture():
    for name in (f"lipconvnet-{TOY}", f"lipmlp-{TOY}", f"convnet-xs-{TOY}"):
        model = create_model(name, DIGITS, 10, width=16, depth=1)
        assert model.lipschitz_constant == 1.0
        assert model(torch.rand(2, *DIGITS)).shape == (2, 10)
    assert any(isinstance(m, SpectralConv2d) for m in create_model(f"lipconvnet-{TOY}", DIGITS, 10).modules())


@pytest.mark.parametrize("architecture", ["lipconvnet", "lipmlp"])
def test_the_toy_family_verifies_and_exports_through_the_protocol(architecture):
    model = create_model(f"{architecture}-{TOY}", DIGITS, 10, width=16, depth=1)
    train_a_little(model, DIGITS, steps=3, lr=0.1)
    report = verify_model(model, DIGITS, attack_steps=5, attack_restarts=2)
    assert report["ok"], [row for row in report["layers"] if not row["ok"]]
    methods = {row["type"]: row["method"] for row in report["layers"]}
    assert methods["SpectralLinear"] == "svd"  # its own report
    if architecture == "lipconvnet":
        assert methods["SpectralConv2d"] == "lanczos"  # the default report

    model.eval()
    exported = export_model(model)
    x = torch.rand(5, *DIGITS)
    torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, LipschitzLayer) for m in exported.modules())


def test_the_toy_layers_are_one_lipschitz_after_training():
    for layer, shape in ((SpectralLinear(6, 4), (6,)), (SpectralConv2d(3), (3, 5, 5))):
        with torch.no_grad():
            layer.weight.mul_(5)
        train_a_little(layer, shape)
        assert_one_lipschitz(layer, shape)


def _gain_two_classifier(layer_class=SpectralLinear) -> ImageClassifier:
    layers = [CenterInputs([0.0]), Flatten(), layer_class(64, 10, gain=2.0)]
    return ImageClassifier(layers, DIGITS, 10, lipschitz_constant=1.0)


def test_a_layer_bound_above_one_is_verified_and_certified_with():
    model = _gain_two_classifier()
    assert model.lipschitz_constant == 2.0
    report = verify_model(model, DIGITS, attack_steps=5)
    (row,) = [row for row in report["layers"] if row["type"] == "SpectralLinear"]
    assert row["claimed"] == 2.0 and row["norm"] == pytest.approx(2.0) and row["ok"]
    assert report["ok"] and 1.5 < report["network"]["lower_bound"] <= 2 * (1 + 1e-4)

    x, y = torch.rand(20, *DIGITS), torch.randint(0, 10, (20,))
    radii = certify_points(model, x, y).radii
    model.builder_lipschitz = 0.5  # the same network, claiming half: every radius doubles
    torch.testing.assert_close(certify_points(model, x, y).radii, 2 * radii, rtol=1e-4, atol=1e-6)


class UnderclaimingLinear(SpectralLinear):
    def lipschitz_bound(self) -> float:
        return 1.0


def test_verify_refuses_a_layer_whose_claimed_bound_is_too_low():
    report = verify_model(_gain_two_classifier(UnderclaimingLinear), DIGITS, attack_steps=5)
    (row,) = [row for row in report["layers"] if row["type"] == "UnderclaimingLinear"]
    assert not row["ok"] and not report["ok"]


def test_configure_eval_reaches_the_layers_that_use_a_setting():
    model = nn.Sequential(CPLConv2d(2, input_size=(4, 4)), Flatten(), CPLLinear(32), SpectralLinear(32, 4))
    configure_model_eval(model, power_iterations=7, batch_size=12)  # settings a layer does not use are ignored
    assert [m.eval_iterations for m in model if isinstance(m, (CPLConv2d, CPLLinear))] == [7, 7]


@pytest.mark.slow
def test_the_toy_family_trains_and_certifies_from_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "toy"
    settings = [f"model.name=lipmlp-{TOY}", "model.kwargs={width: 16, depth: 1}", "train.epochs=1"]
    settings += ["train.batch_size=128", "train.device=cpu"]
    assert main(["train", "--run-dir", str(run_dir), "--quiet", *(a for s in settings for a in ("--set", s))]) == 0
    capsys.readouterr()
    assert main(["certify", str(run_dir), "--check-soundness", "--attack-steps", "10", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lipschitz_constant"] == 1.0 and report["accuracy"] > 0.2
    assert report["soundness"]["sound"] and report["soundness"]["checked"] > 0
    assert main(["verify", str(run_dir), "--attack-steps", "3", "--quiet"]) == 0
