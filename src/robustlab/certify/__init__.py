"""Certification: margins and certified radii, certified evaluation, attacks that check it,
and randomized smoothing (``robustlab.certify.smoothing``)."""

from robustlab.certify import smoothing
from robustlab.certify.attacks import ATTACKS, check_soundness, pgd_l2
from robustlab.certify.evaluate import Certificates, certify_points, evaluate, split_images, summarize_certificates
from robustlab.certify.margins import certified_radii, cra, cra_curve, margins
from robustlab.records import CRACurve, CRAPoint, EvalResult, eps_label

__all__ = [
    "ATTACKS",
    "CRACurve",
    "CRAPoint",
    "Certificates",
    "EvalResult",
    "certified_radii",
    "certify_points",
    "check_soundness",
    "cra",
    "cra_curve",
    "eps_label",
    "evaluate",
    "margins",
    "pgd_l2",
    "smoothing",
    "split_images",
    "summarize_certificates",
]
