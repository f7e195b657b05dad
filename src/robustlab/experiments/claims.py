"""The paper's claims as computed verdicts: its statement, our number with its interval, and
"holds", "does not hold" or "cannot tell at this scale" by a rule stated beside it.

Each experiment module declares the claims it tests (``Experiment.claims``: a function of its
``Report`` and the other reports of the same reproduction, by experiment name) using the rules
here, so that every sentence of a report that states a result is computed from the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from robustlab.experiments.experiment import Report

HOLDS, FAILS, CANNOT = "holds", "does not hold", "cannot tell at this scale"
COLUMNS = ["claim", "paper", "ours", "verdict", "rule"]


@dataclass
class Verdict:
    claim: str  # the paper's statement, as tested here
    paper: str  # the paper's number or words (values from the reference code say so)
    ours: str  # our number with its interval
    verdict: str  # HOLDS | FAILS | CANNOT
    rule: str  # how the verdict follows from the numbers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fits_of(report: Report, metric: str, kind: str = "line") -> dict[str, dict[str, Any]]:
    """The report's fits of ``kind`` on ``metric`` (e.g. "CRA 36/255"), by sweep label."""
    found = {}
    for fit in report.fits:
        label, _, fitted = fit["metric"].partition(", ")
        if fit["kind"] == kind and fitted == metric:
            found[label] = fit
    return found


def interval_text(value: float, low: float, high: float, unit: str = "") -> str:
    return f"{value:+.1f}{unit} (95% CI {low:+.1f} to {high:+.1f})"


def slope_verdict(fit: dict[str, Any] | None, low_bound: float, high_bound: float | None = None) -> tuple[str, str]:
    """(ours, verdict) for a claimed gain per doubling in [low_bound, high_bound] (None: no upper
    bound): holds if the slope's 95% interval overlaps that range, does not hold if it lies outside
    it, cannot tell when there is no fit or it is flagged."""
    if fit is None or fit["status"] == "refused":
        return ("no fit: " + "; ".join(fit["reasons"]) if fit else "no fit"), CANNOT
    slope, (low, high) = fit["params"]["slope"], fit["ci95"]["slope"]
    ours = interval_text(slope, low, high, " per doubling")
    if fit["status"] == "flagged":
        return ours + " (flagged: " + "; ".join(fit["reasons"]) + ")", CANNOT
    above = high_bound is not None and low > high_bound
    return ours, (FAILS if high < low_bound or above else HOLDS)


def slope_rule(low_bound: float, high_bound: float | None = None) -> str:
    target = f"{low_bound:g} to {high_bound:g}" if high_bound is not None else f"above {low_bound:g}"
    return (
        f"holds if the 95% CI of the line fit's gain per doubling overlaps {target}, does not hold if it lies "
        "outside; cannot tell without an unflagged fit"
    )


def growth_verdict(fit: dict[str, Any] | None) -> tuple[str, str]:
    """(ours, verdict) for "grows with each doubling": the slope's interval lies above 0 (holds),
    below or at 0 (does not hold), or straddles it (cannot tell)."""
    ours, verdict = slope_verdict(fit, 0.0)
    if verdict == HOLDS and fit is not None and fit["ci95"]["slope"][0] <= 0:
        verdict = CANNOT  # the interval straddles 0
    return ours, verdict


GROWTH_RULE = (
    "holds if the 95% CI of the gain per doubling lies above 0, does not hold if it lies at or below 0; cannot "
    "tell if it straddles 0 or the fit is flagged"
)


def difference_verdict(
    larger: float | None, larger_sd: float | None, smaller: float | None, smaller_sd: float | None, margin: float = 1.0
) -> str:
    """Verdict for "``larger`` exceeds ``smaller``": holds if by more than ``margin`` points plus two
    standard deviations over seeds (of either), does not hold if the opposite holds, else cannot tell."""
    if larger is None or smaller is None:
        return CANNOT
    spread = margin + 2 * max(larger_sd or 0.0, smaller_sd or 0.0)
    if larger - smaller > spread:
        return HOLDS
    if smaller - larger > spread:
        return FAILS
    return CANNOT


def difference_rule(margin: float = 1.0) -> str:
    return (
        f"holds if the first exceeds the second by more than {margin:g} point(s) plus twice the larger sd over "
        "seeds, does not hold if the second exceeds the first by that much; cannot tell in between"
    )
