import importlib.util
import math

import pytest
import torch

from robustlab.theory.hypercube import (
    LEARNERS,
    HypercubeProblem,
    Predictor,
    bits_to_index,
    build_classifier,
    dimension_for,
    evaluate_predictor,
    index_to_bits,
    memorisation_ceiling,
    paper_attack,
    paper_bound,
    pgd_attack,
    theorem1_sweep,
)

HAS_LIPSCHITZ_LAYERS = all(
    importlib.util.find_spec(m) is not None for m in ("robustlab.nn.activations", "robustlab.nn.lipschitz.aol")
)
FAST = {"mlp": {"steps": 60, "width": 64}, "lipschitz-mlp": {"steps": 60, "width": 64}}


def _problem(d=8, delta=0.1, seed=0):
    return HypercubeProblem.random(d, delta, torch.Generator().manual_seed(seed))


def test_labels_are_sign_of_x_d_and_phi_of_the_bits():
    problem = _problem(d=9, delta=0.25)
    x, y = problem.sample(500, torch.Generator().manual_seed(1))
    assert x.shape == (500, 9) and set(x[:, :-1].unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(x[:, -1].abs(), torch.full((500,), 0.25))
    assert torch.equal(y, torch.sign(x[:, -1]).long())
    for row, label in zip(x[:20].tolist(), y[:20].tolist()):  # phi looked up by hand
        index = sum(2**i for i, value in enumerate(row[:-1]) if value > 0)
        assert label == (1 if problem.truth_table[index] else -1)


def test_truth_table_is_a_fair_random_function_of_d_minus_1_bits():
    problem = _problem(d=17)
    assert problem.truth_table.shape == (2**16,) and problem.d == 17
    assert abs(problem.truth_table.float().mean().item() - 0.5) < 0.01
    assert not torch.equal(problem.truth_table, _problem(d=17, seed=1).truth_table)
    index = torch.randint(0, 2**16, (100,))
    assert torch.equal(bits_to_index(index_to_bits(index, 16)), index)


def test_bound_and_dimension_follow_the_paper():
    assert dimension_for(1000) == 17 and dimension_for(1024) == 17 and dimension_for(1025) == 18
    for n in (10, 1000, 5000):
        assert paper_bound(n, dimension_for(n)) <= 0.5 + 1 / 128
        assert 0.5 < memorisation_ceiling(n, dimension_for(n)) <= paper_bound(n, dimension_for(n))
    assert memorisation_ceiling(10**6, 5) == pytest.approx(1.0)


def test_paper_attack_moves_x_d_towards_zero_within_eps():
    x, _ = _problem(delta=0.2).sample(50)
    for eps in (0.05, 0.2, 0.5):
        moved = paper_attack(x, eps)
        assert torch.all((moved - x).norm(dim=1) <= eps + 1e-7)
        assert torch.allclose(moved[:, -1].abs(), torch.full((50,), max(0.2 - eps, 0.0)))
        assert torch.equal(moved[:, :-1], x[:, :-1])


def test_oracle_is_robust_and_sign_of_x_d_is_accurate_but_not_robust():
    problem = _problem(d=10, delta=0.1)
    x, y = problem.sample(400)
    sign = build_classifier("sign", problem, x, y)
    oracle = build_classifier("oracle", problem, x, y)
    assert evaluate_predictor(sign, x, y, eps=0.1) == {"clean": 1.0, "robust": 0.0, "certified": 0.0}
    # below delta the move cannot reach x_d = 0: sign(x_d) is then robust (and certified)
    assert evaluate_predictor(sign, x, y, eps=0.099) == {"clean": 1.0, "robust": 1.0, "certified": 1.0}
    for eps in (0.1, 0.5, 0.999):
        assert evaluate_predictor(oracle, x, y, eps=eps) == {"clean": 1.0, "robust": 1.0, "certified": 1.0}
    # at eps = 1 a robust feature can be moved to 0: the oracle's certificate stops there
    assert evaluate_predictor(oracle, x, y, eps=1.0, pgd_steps=0)["certified"] == 0.0


class _Linear(Predictor):
    def __init__(self, w, b):
        self.w, self.b = w, b

    def score(self, x):
        return x @ self.w + self.b

    def certified_radius(self, x):
        return (self.score(x).abs() / self.w.norm()).detach()


def test_pgd_finds_exactly_the_non_robust_points_of_a_linear_classifier():
    torch.manual_seed(0)
    w, b = torch.randn(6), 0.3
    x = torch.randn(300, 6)
    y = torch.sign(x @ w + b).long()
    distance = (x @ w + b).abs() / w.norm()
    fooled = pgd_attack(_Linear(w, b), x, y, eps=0.5, steps=10)
    assert torch.equal(fooled, distance <= 0.5)
    assert 20 < fooled.sum() < 280  # both kinds of points are present


def test_certified_points_are_never_broken_by_the_attacks():
    problem = _problem(d=8, delta=0.3)
    x_train, y_train = problem.sample(100, torch.Generator().manual_seed(1))
    x, y = problem.sample(300, torch.Generator().manual_seed(2))
    names = ["sign", "1nn", "oracle"] + (["lipschitz-mlp"] if HAS_LIPSCHITZ_LAYERS else [])
    for name in names:
        classifier = build_classifier(name, problem, x_train, y_train, **FAST.get(name, {}))
        for eps in (0.1, 0.3, 0.6):
            correct = classifier.predict(x) == y
            certified = correct & (classifier.certified_radius(x) > eps)
            broken = ~correct | (classifier.predict(paper_attack(x, eps)) != y) | pgd_attack(classifier, x, y, eps)
            assert not (certified & broken).any(), (name, eps)


def test_every_learner_stays_under_the_bound_and_the_oracle_does_not():
    names = ["sign", "1nn", "mlp"] + (["lipschitz-mlp"] if HAS_LIPSCHITZ_LAYERS else []) + ["oracle"]
    sweep = theorem1_sweep(
        [48], learners=names, trials=6, test_size=250, pgd_steps=5, learner_options=FAST, progress=False
    )
    rows = {r["learner"]: r for r in sweep["rows"]}
    assert rows["sign"]["d"] == 13 and rows["sign"]["bound"] == pytest.approx(0.5 + 48 / 2**13)
    for name in names[:-1]:
        row = rows[name]
        assert row["trials"] == 6
        assert row["robust"] <= row["bound"] + row["robust_ci"], row
    assert rows["sign"]["clean"] == 1.0 and rows["oracle"]["robust"] == 1.0
    assert rows["oracle"]["robust"] > rows["oracle"]["bound"] + rows["oracle"]["robust_ci"]


def test_with_every_vertex_seen_1nn_becomes_robust():
    # fixed d = 6 has 32 vertices; 800 draws see all of them: the bound no longer binds
    sweep = theorem1_sweep([800], d=6, learners=["1nn"], trials=2, test_size=200, pgd_steps=5, progress=False)
    (row,) = sweep["rows"]
    assert row["ceiling"] == pytest.approx(1.0) and row["robust"] == 1.0 and row["clean"] == 1.0


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="delta must be in"):
        HypercubeProblem.random(5, 1.5)
    with pytest.raises(ValueError, match="eps must be in"):
        theorem1_sweep([8], eps=1.0, progress=False)
    with pytest.raises(ValueError, match="known: .*oracle"):
        theorem1_sweep([8], learners=["knn"], progress=False)
    with pytest.raises(ValueError, match="needs d = 29"):
        theorem1_sweep([2**22], progress=False)
    assert "1nn" in LEARNERS and math.isfinite(paper_bound(8, 10))
