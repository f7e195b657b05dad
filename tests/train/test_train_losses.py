import math

import pytest
import torch

from robustlab.config import LossConfig
from robustlab.registry import UnknownNameError
from robustlab.train.losses import LOSSES, OffsetCrossEntropy, build_loss


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
    assert set(LOSSES.names()) == {"ce", "offset_ce"}


def test_offset_asks_for_a_margin():
    # a correct prediction with margin below the offset still has a large loss and gradient
    z = torch.tensor([[0.1, 0.0]], requires_grad=True)
    OffsetCrossEntropy(offset=1.0, temperature=0.25)(z, torch.tensor([0])).backward()
    assert z.grad[0, 0] < -0.9  # pushes the true logit up nearly at full rate


def test_bad_values_are_explained():
    with pytest.raises(ValueError, match="temperature must be positive"):
        OffsetCrossEntropy(offset=0.1, temperature=0)
    with pytest.raises(UnknownNameError, match="known losses: ce, offset_ce"):
        LOSSES.get("hinge")
