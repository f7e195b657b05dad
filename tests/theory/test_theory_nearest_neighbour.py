import itertools

import pytest
import torch

from robustlab.theory.nearest_neighbour import (
    BROKEN_BY_ATTACK,
    BROKEN_BY_SEARCH,
    CERTIFIED,
    ROBUST_BY_SEARCH,
    WRONG,
    CheckerboardProblem,
    LinfNearestNeighbour,
    sufficient_size,
    summarise_status,
    theorem2_sweep,
)


def test_checkerboard_support_has_margin_delta():
    problem = CheckerboardProblem(d=2, delta=0.1, cells=3)
    x, y = problem.sample(3000, torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() <= 1
    boundaries = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    assert (x[..., None] - boundaries).abs().min() >= 0.1  # no point inside a band
    assert torch.equal(y, ((x * 3).floor().long().sum(dim=1) % 2))
    # points of different classes are more than 2*delta apart in L-infinity
    gap = torch.cdist(x[y == 0][:500], x[y == 1][:500], p=float("inf")).min()
    assert gap >= 0.2
    # every cell gets mass, in proportion to its area
    cells = (x * 3).floor().long()
    counts = torch.bincount(cells[:, 0] * 3 + cells[:, 1], minlength=9).double()
    side = torch.tensor([7 / 30, 4 / 30, 7 / 30], dtype=torch.float64)
    expected = (side[:, None] * side[None, :]).flatten() / side.sum() ** 2 * 3000
    assert torch.all((counts - expected).abs() < 5 * expected.sqrt())


def _brute_force_broken(model, x, y, radius, points_per_axis):
    """True where some point of a grid over the L-inf ball (corners included) is misclassified."""
    axis = torch.linspace(-radius, radius, points_per_axis, dtype=torch.float64)
    grid = torch.tensor(list(itertools.product(axis.tolist(), repeat=x.shape[1])), dtype=torch.float64)
    return torch.stack([(model.predict(point + grid) != label).any() for point, label in zip(x, y)])


@pytest.mark.parametrize("d, points_per_axis", [(2, 121), (3, 25)])
def test_exact_check_agrees_with_brute_force(d, points_per_axis):
    # random labels, no margin: many points sit near the decision boundary
    generator = torch.Generator().manual_seed(d)
    x_train = torch.rand(14, d, generator=generator, dtype=torch.float64)
    y_train = torch.randint(0, 2, (14,), generator=generator)
    x_test = torch.rand(60, d, generator=generator, dtype=torch.float64)
    model = LinfNearestNeighbour(x_train, y_train)
    y_test = model.predict(x_test)  # correct by construction: robustness is what is tested
    radius = 0.06
    status = model.robustness(x_test, y_test, radius)
    robust = (status == CERTIFIED) | (status == ROBUST_BY_SEARCH)
    broken = _brute_force_broken(model, x_test, y_test, radius, points_per_axis)
    assert not (robust & broken).any(), "a point called robust has a counterexample"
    missed = ~robust & ~broken  # broken per the exact check, but not on the grid
    if missed.any():  # a finer grid must find them
        broken[missed] = _brute_force_broken(model, x_test[missed], y_test[missed], radius, 2 * points_per_axis + 1)
    assert torch.equal(robust, ~broken)
    # every stage decides some points: the certificate alone is not exact, and the search
    # finds counterexamples that the corner attack misses
    assert all((status == s).any() for s in (CERTIFIED, ROBUST_BY_SEARCH, BROKEN_BY_ATTACK, BROKEN_BY_SEARCH))


def test_ties_are_no_decision_and_wrong_labels_are_wrong():
    model = LinfNearestNeighbour(torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.tensor([0, 1]))
    assert model.predict(torch.tensor([[0.5], [0.2], [0.9]], dtype=torch.float64)).tolist() == [-1, 0, 1]
    status = model.robustness(
        torch.tensor([[0.1], [0.1], [0.45]], dtype=torch.float64), torch.tensor([0, 1, 0]), radius=0.05
    )
    assert status.tolist() == [CERTIFIED, WRONG, BROKEN_BY_ATTACK]
    assert summarise_status(status) == pytest.approx(
        {"clean": 2 / 3, "certified": 1 / 3, "robust": 1 / 3, "searched": 0.0}
    )


def test_sufficient_n_gives_at_least_99_percent_robust_accuracy():
    delta = 0.2
    n = sufficient_size(2, delta)
    assert n == 37 * 25
    sweep = theorem2_sweep([4, n], d=2, delta=delta, cells=2, trials=3, test_size=400, progress=False)
    small, sufficient = sweep["rows"]
    assert sufficient["robust"] >= 0.99
    assert small["robust"] < 0.99  # the check can fail: too little data is not enough
    assert sweep["settings"]["radius"] == pytest.approx(0.1)


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="delta must be in"):
        CheckerboardProblem(d=2, delta=0.3, cells=2)
    with pytest.raises(ValueError, match=">= 2 cells"):
        CheckerboardProblem(d=2, delta=0.1, cells=1)
    with pytest.raises(ValueError, match="radius"):
        theorem2_sweep([10], radius=-1.0, progress=False)
