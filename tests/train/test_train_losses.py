import math

import pytest
import torch

from robustlab.config import ConfigError, LossConfig
from robustlab.nn.models import create_model
from robustlab.registry import UnknownNameError
from robustlab.train.losses import EMMA, LOSSES, OffsetCrossEntropy, build_loss


def hand_offset_ce(z: list[float], y: int, offset: float, temperature: float) -> float:
    shifted = [(v - (offset if i == y else 0.0)) / temperature for i, v in enumerate(z)]
    log_sum = math.log(sum(math.exp(v) for v in shifted))
    return temperature * (log_sum - shifted[y])


def test_offset_cross_entropy_matches_hand_computation():
    logits = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]]
    labels = [0, 2]
    loss = OffsetCrossEntropy(offset=0.2, temperature=0.25)(torch.tensor(logits), torch.tensor(labels))
    expected = sum(hand_offset_ce(z, y, 0.2, 0.25) for z, y in zip(logits, labels)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_two_class_value_in_closed_form():
    # two classes, margin m: T * log(1 + exp(-(m - u) / T))
    loss = OffsetCrossEntropy(offset=0.5, temperature=2.0)(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(2.0 * math.log(1 + math.exp(-(1.0 - 0.5) / 2.0)), rel=1e-6)


def test_ce_with_temperature_is_simpleconvnets_loss():
    logits, labels = torch.randn(5, 10), torch.randint(0, 10, (5,))
    loss = build_loss(LossConfig(name="ce", temperature=8.0))(logits, labels)
    expected = 8 * torch.nn.functional.cross_entropy(logits / 8, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = build_loss(LossConfig(name="ce", temperature=1.0))(logits, labels)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_build_loss_uses_config_values():
    loss = build_loss(LossConfig(name="offset_ce", offset=0.3, temperature=0.5))
    assert isinstance(loss, OffsetCrossEntropy) and (loss.offset, loss.temperature) == (0.3, 0.5)
    assert set(LOSSES.names()) == {"ce", "emma", "offset_ce"}


def test_offset_asks_for_a_margin():
    # a correct prediction with margin below the offset still has a large loss and gradient
    z = torch.tensor([[0.1, 0.0]], requires_grad=True)
    OffsetCrossEntropy(offset=1.0, temperature=0.25)(z, torch.tensor([0])).backward()
    assert z.grad[0, 0] < -0.9  # pushes the true logit up nearly at full rate


def test_bad_values_are_explained():
    with pytest.raises(ValueError, match="temperature must be positive"):
        OffsetCrossEntropy(offset=0.1, temperature=0)
    with pytest.raises(UnknownNameError, match="known losses: ce, emma, offset_ce"):
        LOSSES.get("hinge")


PAIRS = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 4.0], [1.0, 4.0, 0.0]])


def hand_emma(z: list[float], y: int, eps: float, temperature: float) -> float:
    worst = []
    for j, v in enumerate(z):
        k = PAIRS[y, j].item()
        radius = eps if k == 0 else min(max((z[y] - v) / k, 0.01 * eps), eps)
        worst.append(v + radius * k)
    return hand_offset_ce(worst, y, 0.0, temperature)


def test_emma_matches_hand_computation():
    # row 0: class 1 is certified beyond eps (pushed by eps * K), class 2 is within reach (tied);
    # row 1: misclassified (class 2 ahead): the floor 0.01 eps applies
    logits = [[2.0, 0.5, 1.9], [0.0, 1.0, 0.5]]
    labels = [0, 2]
    loss = EMMA(lambda: PAIRS, eps=0.5, temperature=0.5)(torch.tensor(logits), torch.tensor(labels))
    expected = sum(hand_emma(z, y, 0.5, 0.5) for z, y in zip(logits, labels)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_emma_pulls_the_bounds_down_and_the_margins_up():
    pairs = PAIRS.clone().requires_grad_(True)
    logits = torch.tensor([[2.0, 0.5, 1.9]], requires_grad=True)
    EMMA(lambda: pairs, eps=0.5)(logits, torch.tensor([0])).backward()
    assert (pairs.grad[0, 1:] > 0).all() and pairs.grad[1:].abs().sum() == 0  # only the label's row
    assert logits.grad[0, 0] < 0 and (logits.grad[0, 1:] > 0).all()


def test_emma_reads_the_models_pairwise_bounds():
    model = create_model("liresnet", (1, 8, 8), 3, width=4, depth=1, features=8)
    loss = build_loss(LossConfig(name="emma", eps=0.1, temperature=1.0), model)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    loss(model(x), y).backward()
    head_grad = model[-1].weight.grad
    assert head_grad is not None and torch.isfinite(head_grad).all()
    blocks = [m for m in model.modules() if type(m).__name__ == "LiResConv2d"]
    assert blocks[0].weight.grad.abs().sum() > 0  # through the bound as well as the logits
    with pytest.raises(ConfigError, match="certifiable model"):
        build_loss(LossConfig(name="emma"), create_model("simpleconvnet", (1, 8, 8), 3, width=2))
