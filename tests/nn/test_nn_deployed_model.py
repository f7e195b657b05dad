"""The model a user runs is the model that was certified (issue 23): eval-mode caches never
go stale, every dense layer divides by a guaranteed bound, and the float32 model agrees with
the float64 copy that ``evaluate`` certifies within the certificate's rounding allowance."""

import copy

import pytest
import torch
from nn_helpers import jacobian_norm, train_a_little

from robustlab.certify.evaluate import float_error_slack, precision_copy
from robustlab.config import load_config
from robustlab.nn.lipschitz import LAYER_FAMILIES, OrthogonalLinear
from robustlab.nn.models import ImageClassifier, create_model
from robustlab.runs.checkpoint import architecture_record, load_model, save_safetensors

DIGITS = (1, 8, 8)


def tiny(name: str) -> ImageClassifier:
    return create_model(name, DIGITS, 10, width=4, depth=1)


def test_a_write_through_data_does_not_leave_a_stale_normaliser():
    model = tiny("lipconvnet-aol").eval()
    x = torch.rand(1, *DIGITS)
    with torch.no_grad():
        model(x)  # fills the eval-mode caches
        for parameter in model.parameters():
            parameter.data.mul_(3)  # bumps no version counter
        fresh = copy.deepcopy(model)  # new storage: computes its normalisers from scratch
        torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)
    assert jacobian_norm(model, x) <= model.lipschitz_constant * (1 + 1e-4)


def test_liresnet_bound_follows_a_write_through_data():
    model = create_model("liresnet", DIGITS, 10, width=8, depth=2).eval()
    before = model.lipschitz_constant
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data.mul_(3)
    assert model.lipschitz_constant == copy.deepcopy(model).lipschitz_constant
    assert model.lipschitz_constant > before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthogonal_linear_is_within_its_bound_when_its_raw_weight_is_not_orthogonal(dtype):
    layer = OrthogonalLinear(24, 24)
    train_a_little(layer, (24,), steps=3)
    layer = layer.to(dtype)
    with torch.no_grad():  # the matrix exponential of a large skew matrix: orthogonal only up to rounding
        layer.parametrizations["weight"].original.data.mul_(300)
    layer.eval()
    norm = torch.linalg.matrix_norm(layer.effective_weight().double(), ord=2)
    # float32: the float64 layer's weight rounded once (what the certified float64 copy uses)
    rounding = 0.0 if dtype == torch.float64 else 4 * torch.finfo(dtype).eps
    assert norm <= layer.lipschitz_bound() + rounding


@pytest.mark.parametrize("family", LAYER_FAMILIES.names())
def test_the_loaded_float32_model_is_the_certified_one_within_the_rounding_allowance(family, tmp_path):
    torch.manual_seed(0)
    model = create_model(f"lipconvnet-{family}", DIGITS, 10, width=8, depth=2)
    train_a_little(model, DIGITS, steps=3, lr=0.1)
    model.eval()
    config = load_config(None, [f"model.name=lipconvnet-{family}", "model.kwargs={width: 8, depth: 2}"])
    record = architecture_record(model, config)
    certified = precision_copy(model, torch.float64, "cpu")  # what ``evaluate`` certifies
    x = torch.rand(64, *DIGITS, dtype=torch.float64)
    with torch.no_grad():
        reference = certified(x)
        allowance = float_error_slack(reference, x, certified.lipschitz_constant)
        for form in ("model", "plain"):
            deployed = load_model(save_safetensors(tmp_path / f"{form}.safetensors", model, record, form))
            gap = (deployed(x.float()).double() - reference).abs().amax(dim=1)
            # a margin is the difference of two logits: it moves by at most twice the gap
            assert (2 * gap <= allowance).all(), f"{form}: gap {gap.max():.2e}, allowance {allowance.min():.2e}"
