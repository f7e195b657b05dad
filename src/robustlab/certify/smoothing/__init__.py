"""Randomized smoothing: the paper's radius estimate and Cohen et al.'s CERTIFY / PREDICT.

The smoothed classifier of a base classifier f is h(x) = argmax_c P(f(x + e) = c) with
e ~ N(0, sigma^2 I). Three ways to look at it, all Monte-Carlo:

- ``estimate`` (Prach & Lampert, Section 4): n = 1000 noisy copies, p1 = frequency of the
  TRUE class, p2 = frequency of the most frequent other class, both clipped to
  [0.01, 0.99], radius = sigma/2 * (PhiInv(p1) - PhiInv(p2)); negative = misclassified.
  This estimates the robustness of the (unevaluable) smoothed classifier: it is NOT a
  guarantee, and every result says so.
- ``certify`` (Cohen et al. 2019): pick the top class from n0 = 100 copies, count it in
  n = 100,000 fresh copies, take the one-sided Clopper-Pearson lower bound pA at level
  alpha; abstain if pA < 1/2, else radius = sigma * PhiInv(pA). Sound with probability at
  least 1 - alpha per image.
- ``predict`` (Cohen et al. 2019): the top class of n copies, unless a two-sided binomial
  test of the top two counts has p-value > alpha (then abstain). No radius.

How it runs: noise is drawn on the model's device, many noisy copies of several images
per forward pass; predictions are counted with ``scatter_add_`` on the device, and the
counts come to the host once per chunk of images. Each image has its own noise stream,
seeded from (seed, image index, purpose), so a result depends neither on the batch size
nor on which other images share a chunk, and a resumed run replays exactly. With an
``output`` path every chunk's results are appended to a JSONL file (flushed and fsynced);
running again with the same file skips the images already there.

Modules: ``statistics`` (host-side bounds and radii), ``sampling`` (noise and vote counting on
the device), ``methods`` (the three methods and the resumable records file);
``SmoothingParams`` and ``SmoothingResult``, with their JSON, are in ``robustlab.records``,
which the run store reads without torch.
"""

from robustlab.certify.smoothing.methods import (
    certify,
    estimate,
    model_fingerprint,
    predict,
    smooth,
    summarize_records,
)
from robustlab.certify.smoothing.statistics import certified_radius, clopper_pearson_lower, estimated_radius
from robustlab.certify.smoothing.votes import count_predictions, noise_seed
from robustlab.records import (
    ABSTAIN,
    GUARANTEES,
    METHODS,
    SmoothingParams,
    SmoothingResult,
    SmoothingTiming,
)

__all__ = [
    "ABSTAIN",
    "GUARANTEES",
    "METHODS",
    "SmoothingParams",
    "SmoothingResult",
    "SmoothingTiming",
    "certified_radius",
    "certify",
    "clopper_pearson_lower",
    "count_predictions",
    "estimate",
    "estimated_radius",
    "model_fingerprint",
    "noise_seed",
    "predict",
    "smooth",
    "summarize_records",
]
