"""The paper's Section 3 as experiments.

* ``hypercube``: Theorem 1 (no free robustness) on the family D_phi.
* ``nearest_neighbour``: Theorem 2, L-infinity 1-NN with an exact robustness check.
"""

from robustlab.theory.hypercube import (
    LEARNERS,
    HypercubeProblem,
    Predictor,
    evaluate_predictor,
    memorisation_ceiling,
    paper_attack,
    paper_bound,
    pgd_attack,
    theorem1_sweep,
)
from robustlab.theory.nearest_neighbour import (
    CheckerboardProblem,
    LinfNearestNeighbour,
    sufficient_size,
    summarise_status,
    theorem2_sweep,
)

__all__ = [
    "LEARNERS",
    "CheckerboardProblem",
    "HypercubeProblem",
    "LinfNearestNeighbour",
    "Predictor",
    "evaluate_predictor",
    "memorisation_ceiling",
    "paper_attack",
    "paper_bound",
    "pgd_attack",
    "sufficient_size",
    "summarise_status",
    "theorem1_sweep",
    "theorem2_sweep",
]
