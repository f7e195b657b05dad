"""Theorem 1 of the paper ("No Free Robustness") as an experiment.

The family D_phi: phi is a uniformly random Boolean function of d-1 bits. A sample has
robust features x_1..x_{d-1} uniform in {-1,+1}, one small non-robust feature
x_d = delta * phi(x_1..x_{d-1}), and the label y = sign(x_d) in {-1,+1}.

Robust accuracy at radius eps (L2): a test point counts when the classifier is correct at
every x' with ||x' - x||_2 <= eps, the closed ball of the paper's N_delta. A decision score
of exactly 0 is no decision and counts as an error (as in certification, where a margin
must be > 0): so sign(x_d) is not robust at eps = delta, because moving x_d to 0 costs
exactly delta. The oracle phi(sign(x_1..x_{d-1})) is robust for every eps < 1, since a
robust feature changes sign only after a move of 1.

Robustness is measured with attacks, an upper bound on the true robust accuracy: the
paper's attack (move x_d towards 0 by min(eps, delta), i.e. to 0 for eps >= delta) and L2
PGD on the decision score, started from x and from the paper's attack point. The proof of
the theorem bounds the accuracy under the paper's attack, averaged over phi and the
training set, by 1/2 + n/2^d (tighter: 1/2 + P(test point's bits occur in S)/2); the
attacked accuracy we report is at most that, so it obeys the same bound. Classifiers with
a certificate also report certified accuracy (a lower bound; exact for sign(x_d) and the
oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.nn.activations import MaxMin
from robustlab.nn.lipschitz import AOLLinear
from robustlab.progress import progress_bar
from robustlab.registry import Registry
from robustlab.theory.stats import mean_ci, trial_generator
from robustlab.train.losses import OffsetCrossEntropy

MAX_DIMENSION = 28  # a truth table of 2^27 bools is 128 MiB


# ---------------------------------------------------------------------------------------
# The family of distributions


def bits_to_index(x_robust: torch.Tensor) -> torch.Tensor:
    """Row i of ``x_robust`` (signs of d-1 features) as an integer: sum_j [x_ij > 0] 2^j."""
    weights = 2 ** torch.arange(x_robust.shape[1], device=x_robust.device)
    return ((x_robust > 0).long() * weights).sum(dim=1)


def index_to_bits(index: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Inverse of ``bits_to_index``: integers to rows of -1/+1 floats."""
    weights = 2 ** torch.arange(num_bits, device=index.device)
    return ((index[:, None] & weights) > 0).float() * 2 - 1


def dimension_for(n: int) -> int:
    """The paper's choice d = ceil(log2 n) + 7, which makes n / 2^d <= 1/128."""
    return math.ceil(math.log2(n)) + 7 if n > 1 else 7


def paper_bound(n: int, d: int) -> float:
    """Theorem 1's bound on the average robust accuracy: 1/2 + n / 2^d."""
    return 0.5 + n / 2.0**d


def memorisation_ceiling(n: int, d: int) -> float:
    """The exact value behind the bound: 1/2 + P(the test bits occur among n draws)/2.
    A learner that is right on every seen point and guesses elsewhere reaches it."""
    seen = -math.expm1(n * math.log1p(-(2.0 ** (1 - d))))
    return 0.5 + seen / 2


@dataclass(frozen=True)
class HypercubeProblem:
    """One distribution D_phi. ``truth_table[i]`` is True where phi = +1 on the bits of
    integer i (see ``bits_to_index``); it has 2^(d-1) entries."""

    truth_table: torch.Tensor
    delta: float

    @property
    def d(self) -> int:
        return self.truth_table.numel().bit_length()

    @classmethod
    def random(
        cls, d: int, delta: float, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
    ) -> HypercubeProblem:
        """phi uniform over all 2^(2^(d-1)) Boolean functions: one fair coin per entry."""
        if not 2 <= d <= MAX_DIMENSION:
            raise ValueError(f"the dimension d must be between 2 and {MAX_DIMENSION}, got {d}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1) (the robust features sit at distance 1), got {delta}")
        table = torch.randint(0, 2, (2 ** (d - 1),), generator=generator, dtype=torch.uint8)
        return cls(table.bool().to(device), float(delta))

    def phi(self, x_robust: torch.Tensor) -> torch.Tensor:
        """phi of the signs of the d-1 robust features, as -1/+1 floats."""
        return self.truth_table[bits_to_index(x_robust)].float() * 2 - 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` i.i.d. pairs: x float (n, d), y int64 in {-1, +1}."""
        index = torch.randint(0, self.truth_table.numel(), (n,), generator=generator)
        x_robust = index_to_bits(index.to(self.truth_table.device), self.d - 1)
        label = self.phi(x_robust)
        x = torch.cat([x_robust, self.delta * label[:, None]], dim=1)
        return x, label.long()

    def oracle(self) -> Predictor:
        return OraclePredictor(self)


# ---------------------------------------------------------------------------------------
# Classifiers


class Predictor:
    """A binary classifier on R^d with labels -1/+1.

    ``score(x)``: a real-valued decision function, positive for +1 and negative for -1,
    differentiable in x wherever the classifier is: the attacks follow its gradient.
    ``predict(x)``: the decision in {-1, 0, +1}, 0 meaning none (always an error); by
    default the sign of the score. ``certified_radius(x)``: an L2 radius R such that the
    decision is the same on the open ball of radius R (robust for every eps < R), or None.
    """

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sign(self.score(x)).long()

    def certified_radius(self, x: torch.Tensor) -> torch.Tensor | None:
        return None


class SignOfLastFeature(Predictor):
    """sign(x_d): perfectly accurate on every D_phi, and robust only for eps < delta."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]

    def certified_radius(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1].abs()


class OraclePredictor(Predictor):
    """phi(sign(x_1..x_{d-1})): knows phi, ignores x_d. A robust feature whose sign is 0
    gives no decision."""

    def __init__(self, problem: HypercubeProblem):
        self.problem = problem

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x_robust = x[:, :-1].detach()
        decided = (x_robust != 0).all(dim=1)
        return self.problem.phi(x_robust) * decided

    def certified_radius(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :-1].abs().min(dim=1).values


class NearestNeighbour(Predictor):
    """1-NN in L2; a tie between the two classes is no decision.

    ``predict`` and the certificate use exact distances (differences squared and summed:
    exact on the {-1,+1} x {+-delta} grid, where the matrix-product shortcut would blur
    ties). ``score``, which only guides the attacks, is the fast matrix-product version of
    d(x, nearest -1)^2 - d(x, nearest +1)^2.
    """

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor):
        if len(x_train) == 0:
            raise ValueError("1-NN needs at least one training point")
        self.positives = x_train[y_train == 1]
        self.negatives = x_train[y_train == -1]

    @staticmethod
    def _nearest(x: torch.Tensor, points: torch.Tensor, exact: bool = True) -> torch.Tensor:
        if len(points) == 0:  # a class absent from the training set is infinitely far
            return torch.full((len(x),), math.inf, device=x.device)
        mode = "donot_use_mm_for_euclid_dist" if exact else "use_mm_for_euclid_dist"
        return torch.cdist(x, points, compute_mode=mode).min(dim=1).values

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self._nearest(x, self.negatives, exact=False) ** 2 - self._nearest(x, self.positives, exact=False) ** 2

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sign(self._nearest(x, self.negatives) - self._nearest(x, self.positives)).long()

    def certified_radius(self, x: torch.Tensor) -> torch.Tensor:
        # triangle inequality: a move of length r changes each distance by at most r
        with torch.no_grad():
            return (self._nearest(x, self.negatives) - self._nearest(x, self.positives)).abs() / 2


class NetworkPredictor(Predictor):
    """A network with two logits (class -1, class +1); score = logit(+1) - logit(-1).
    ``lipschitz`` (the network's L2 Lipschitz bound) gives the certificate
    |score| / (sqrt(2) L), or None for a standard network."""

    def __init__(self, model: nn.Module, lipschitz: float | None = None):
        self.model = model.eval()
        self.lipschitz = lipschitz

    def score(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits[:, 1] - logits[:, 0]

    def certified_radius(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.lipschitz is None:
            return None
        with torch.no_grad():
            return self.score(x).abs() / (math.sqrt(2) * self.lipschitz)


# ---------------------------------------------------------------------------------------
# Learners: fit(x, y, *, seed) -> Predictor

LEARNERS: Registry[Callable[..., Predictor]] = Registry("learner")
ORACLE = "oracle"  # not a learner (it reads phi); accepted wherever learner names are


@LEARNERS.register("sign")
def fit_sign(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> Predictor:
    """Always sign(x_d): statement 2 of the theorem (accurate, not robust)."""
    return SignOfLastFeature()


@LEARNERS.register("1nn")
def fit_nearest_neighbour(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> Predictor:
    return NearestNeighbour(x, y)


@LEARNERS.register("mlp")
def fit_mlp(
    x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, width: int = 128, steps: int = 300, lr: float = 3e-3
) -> Predictor:
    """A standard ReLU MLP (two hidden layers) trained with cross-entropy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(x.shape[1], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2)
        ).to(x.device)
    _train(model, x, y, nn.CrossEntropyLoss(), steps=steps, lr=lr, seed=seed)
    return NetworkPredictor(model)


@LEARNERS.register("lipschitz-mlp")
def fit_lipschitz_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    width: int = 128,
    depth: int = 3,
    steps: int = 300,
    lr: float = 3e-3,
    offset: float = 0.5,
    temperature: float = 0.25,
) -> Predictor:
    """A 1-Lipschitz MLP (AOL linear layers and MaxMin) trained with OffsetCrossEntropy,
    which asks for a logit margin of ``offset`` (a certified radius of offset/sqrt(2))."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [AOLLinear(x.shape[1], width), MaxMin()]
        for _ in range(depth - 2):
            layers += [AOLLinear(width, width), MaxMin()]
        model = nn.Sequential(*layers, AOLLinear(width, 2)).to(x.device)
    _train(model, x, y, OffsetCrossEntropy(offset, temperature), steps=steps, lr=lr, seed=seed)
    return NetworkPredictor(model, lipschitz=1.0)


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 256,
) -> None:
    """Adam with a cosine schedule over ``steps`` mini-batch steps of shuffled epochs."""
    targets = (y > 0).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    order_generator = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    while step < steps:
        order = torch.randperm(len(x), generator=order_generator).to(x.device)
        for batch in order.split(batch_size):
            loss = loss_fn(model(x[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step == steps:
                break
    model.eval()


def build_classifier(
    name: str, problem: HypercubeProblem, x: torch.Tensor, y: torch.Tensor, seed: int = 0, **options: object
) -> Predictor:
    """``oracle`` (built from phi) or a learner from LEARNERS fitted on (x, y) with ``options``."""
    if name == ORACLE:
        return problem.oracle()
    return LEARNERS.get(name)(x, y, seed=seed, **options)


def check_classifier_names(names: Sequence[str]) -> None:
    known = [*LEARNERS.names(), ORACLE]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown learner(s) {', '.join(unknown)}; known: {', '.join(known)}")


# ---------------------------------------------------------------------------------------
# Attacks and evaluation


def paper_attack(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The proof's attack: move x_d towards 0 by min(eps, |x_d|) (L2 length <= eps)."""
    x_d = x[:, -1]
    moved = x_d - torch.sign(x_d) * torch.clamp(x_d.abs(), max=eps)
    return torch.cat([x[:, :-1], moved[:, None]], dim=1)


def pgd_attack(
    predictor: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 20,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L2 PGD that lowers the margin y * score inside the closed ball of radius eps around x.
    Returns a bool per point: ``predict`` errs (or abstains) at the final iterate or at the
    iterate of lowest margin."""
    step_size = 2.5 * eps / max(steps, 1)
    offset = torch.zeros_like(x) if start is None else (start - x)
    best, best_margin = x + offset, torch.full((len(x),), math.inf, device=x.device)
    for _ in range(steps):
        offset.requires_grad_(True)
        margin = y * predictor.score(x + offset)
        with torch.no_grad():
            lower = margin < best_margin
            best = torch.where(lower[:, None], x + offset, best)
            best_margin = torch.where(lower, margin, best_margin)
        if not margin.requires_grad:  # a piecewise-constant classifier: no gradient to follow
            break
        (gradient,) = torch.autograd.grad(margin.sum(), offset)
        direction = gradient / gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)
        offset = offset.detach() - step_size * direction
        offset = offset * (eps / offset.norm(dim=1, keepdim=True).clamp_min(eps))
    return (predictor.predict(x + offset.detach()) != y) | (predictor.predict(best) != y)


def evaluate_predictor(
    predictor: Predictor, x: torch.Tensor, y: torch.Tensor, eps: float, pgd_steps: int = 20, batch_size: int = 512
) -> dict[str, float | None]:
    """Clean, attacked (robust) and certified accuracy of one classifier on (x, y)."""
    clean, robust, certified, has_certificate = [], [], [], True
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        correct = predictor.predict(xb) == yb
        x_paper = paper_attack(xb, eps)
        ok = correct & (predictor.predict(x_paper) == yb)
        if pgd_steps > 0 and eps > 0:
            ok &= ~pgd_attack(predictor, xb, yb, eps, pgd_steps)
            ok &= ~pgd_attack(predictor, xb, yb, eps, pgd_steps, start=x_paper)
        radius = predictor.certified_radius(xb)
        has_certificate = radius is not None
        clean.append(correct)
        robust.append(ok)
        if radius is not None:
            certified.append(correct & (radius > eps))
    fraction = lambda parts: torch.cat(parts).float().mean().item()  # noqa: E731
    return {
        "clean": fraction(clean),
        "robust": fraction(robust),
        "certified": fraction(certified) if has_certificate else None,
    }


# ---------------------------------------------------------------------------------------
# The experiment

DEFAULT_LEARNERS = ("sign", "1nn", "mlp", "lipschitz-mlp", ORACLE)


def theorem1_sweep(
    ns: Sequence[int],
    *,
    d: int | None = None,
    delta: float = 0.1,
    eps: float | None = None,
    learners: Sequence[str] = DEFAULT_LEARNERS,
    trials: int = 5,
    test_size: int = 1000,
    pgd_steps: int = 20,
    seed: int = 0,
    learner_options: dict[str, dict] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Clean / robust / certified accuracy of each learner against the training-set size n.

    Each trial draws a fresh phi, a training set of n points and ``test_size`` test points;
    rows average over the trials with 95% t-intervals. ``d=None`` uses the paper's
    d = ceil(log2 n) + 7 for each n; an integer keeps d fixed. ``eps`` defaults to delta.
    ``learner_options`` maps a learner name to keyword arguments of its fit function.
    """
    learner_options = learner_options or {}
    eps = delta if eps is None else float(eps)
    _check_sweep(ns, d, eps, trials, test_size)
    ns = list(dict.fromkeys(int(n) for n in ns))
    check_classifier_names(learners)
    runs = [(n, t) for n in ns for t in range(trials)]
    scores: dict[tuple[int, str], list[dict]] = {}
    for n, trial in progress_bar(runs, "theorem 1", "trial", progress):
        dim = dimension_for(n) if d is None else d
        generator = trial_generator(seed, n, dim, trial)
        problem = HypercubeProblem.random(dim, delta, generator, device)
        x_train, y_train = problem.sample(n, generator)
        x_test, y_test = problem.sample(test_size, generator)
        for name in learners:
            classifier = build_classifier(
                name, problem, x_train, y_train, seed=seed + trial, **learner_options.get(name, {})
            )
            scores.setdefault((n, name), []).append(evaluate_predictor(classifier, x_test, y_test, eps, pgd_steps))
    rows = []
    for n in ns:
        dim = dimension_for(n) if d is None else d
        for name in learners:
            rows.append(
                {
                    "n": n,
                    "d": dim,
                    "learner": name,
                    **_summarise(scores.get((n, name), [])),
                    "bound": paper_bound(n, dim),
                    "ceiling": memorisation_ceiling(n, dim),
                }
            )
    settings = {
        "d": d if d is not None else "ceil(log2 n)+7",
        "delta": delta,
        "eps": eps,
        "trials": trials,
        "test_size": test_size,
        "pgd_steps": pgd_steps,
        "seed": seed,
    }
    return {"settings": settings, "rows": rows}


def _summarise(results: list[dict]) -> dict:
    summary: dict = {"trials": len(results)}
    for key in ("clean", "robust", "certified"):
        values = [r[key] for r in results if r[key] is not None]
        mean, half_width = mean_ci(values) if values else (None, None)
        summary[key] = mean
        summary[f"{key}_ci"] = half_width
    return summary


def _check_sweep(ns: Sequence[int], d: int | None, eps: float, trials: int, test_size: int) -> None:
    if not ns or any(int(n) < 1 for n in ns):
        raise ValueError(f"training-set sizes must be positive integers, got {list(ns)}")
    if d is not None and not 2 <= d <= MAX_DIMENSION:
        raise ValueError(f"the fixed dimension d must be between 2 and {MAX_DIMENSION}, got {d}")
    if d is None and dimension_for(max(ns)) > MAX_DIMENSION:
        raise ValueError(
            f"n = {max(ns)} needs d = {dimension_for(max(ns))} > {MAX_DIMENSION}; use n <= 2^{MAX_DIMENSION - 7}"
        )
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1): the oracle is robust only for eps < 1, got {eps}")
    if trials < 1 or test_size < 1:
        raise ValueError(f"trials and test size must be >= 1, got {trials} and {test_size}")
