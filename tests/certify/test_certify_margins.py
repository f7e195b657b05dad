import math

import pytest
import torch

from robustlab.certify.margins import certified_radii, cra, cra_curve, margins


def test_margins_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 2.0, 1.0]])
    assert margins(logits, torch.tensor([0, 0])).tolist() == [0.5, -2.0]


def test_radii_use_sqrt2_and_the_lipschitz_constant():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    radii = certified_radii(logits, torch.tensor([0, 0]), lipschitz=2.0)
    assert radii[0].item() == pytest.approx(1 / (2 * math.sqrt(2)))
    assert radii[1].item() == 0  # misclassified: no radius
    lowered = certified_radii(logits, torch.tensor([0, 0]), lipschitz=1.0, slack=0.5)
    assert lowered[0].item() == pytest.approx(0.5 / math.sqrt(2))


def test_pairwise_bounds_certify_each_pair_at_its_own_rate():
    logits = torch.tensor([[3.0, 1.0, 2.5], [3.0, 1.0, 2.5], [0.0, 2.0, 1.0]], dtype=torch.float64)
    pairs = torch.tensor([[0.0, 4.0, 0.5], [4.0, 0.0, 1.0], [0.5, 1.0, 0.0]], dtype=torch.float64)
    radii = certified_radii(logits, torch.tensor([0, 0, 0]), pairs)
    # point 0: class 1 is 2 behind at rate 4 (0.5), class 2 is 0.5 behind at rate 0.5 (1.0)
    assert radii.tolist() == [0.5, 0.5, 0.0]  # misclassified: no radius
    lowered = certified_radii(logits[:1], torch.tensor([0]), pairs, slack=torch.tensor([0.25]))
    assert lowered.item() == pytest.approx(min(1.75 / 4, 0.25 / 0.5))
    frozen = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # a pair that cannot move
    assert certified_radii(logits[:1, :2], torch.tensor([0]), frozen).item() == math.inf


def test_pairwise_rule_with_sqrt2_l_is_the_global_rule():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = logits.argmax(dim=1)
    labels[::3] = 0  # some misclassified
    pairs = math.sqrt(2) * 1.7 * (1 - torch.eye(10, dtype=torch.float64))
    torch.testing.assert_close(certified_radii(logits, labels, pairs), certified_radii(logits, labels, 1.7))


def test_cra_is_strict_and_the_curve_agrees():
    radii = torch.tensor([0.0, 0.1, 0.2, 0.3])
    assert cra(radii, 0.0) == 0.75
    assert cra(radii, 0.2) == 0.25  # radius exactly eps is not certified
    grid = [0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 1.0]
    assert cra_curve(radii, grid) == pytest.approx([cra(radii, e) for e in grid])


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="positive Lipschitz constant"):
        certified_radii(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), lipschitz=None)
    with pytest.raises(ValueError, match="empty"):
        cra(torch.zeros(0), 0.1)
    with pytest.raises(ValueError, match=r"shape \(batch, classes >= 2\)"):
        margins(torch.zeros(3), torch.zeros(3, dtype=torch.long))
