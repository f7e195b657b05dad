"""Every claim a report makes is a verdict computed from its numbers by the rule it states."""

import numpy as np

from robustlab.experiments import get_experiment
from robustlab.experiments.claims import CANNOT, FAILS, HOLDS
from robustlab.experiments.experiment import Report
from robustlab.experiments.one_architecture import ACCURACY, ARCHITECTURE, CE, CRA_36, LOSS, OFFSET_CE
from robustlab.report.scaling_law import fit_scaling
from robustlab.report.tables import SD

SIZES = np.repeat([48, 97, 195, 390, 781, 1562, 3125], 3).astype(float)


def _scaling_report(experiment, dataset, slopes, x_name="N"):
    rng = np.random.default_rng(0)
    fits = []
    for label, slope in slopes.items():
        y = 20 + slope * np.log2(SIZES / 48) + rng.normal(0, 0.5, SIZES.size)
        fits.append(fit_scaling(SIZES, y, metric=f"{label}, CRA 36/255", x_name=x_name).to_dict())
    report = Report(experiment, "t", [], [], fits=fits)
    report.provenance = {"dataset": dataset, "params": {"seeds": [0, 1, 2]}}
    return report


def _verdicts(report, others=None):
    return {v.claim: v for v in get_experiment(report.experiment).claims(report, others or {})}


def test_data_scaling_verdicts_follow_the_slope_and_its_interval():
    verdicts = _verdicts(_scaling_report("data_scaling", "cifar10", {"rising": 5.0, "flat": 0.0, "steep": 9.0}))
    assert verdicts["rising: CRA at 36/255 grows with each doubling of N (cifar10)"].verdict == HOLDS
    assert verdicts["rising: doubling CIFAR-10 adds about 5 CRA points (cifar10)"].verdict == HOLDS
    assert verdicts["steep: doubling CIFAR-10 adds about 5 CRA points (cifar10)"].verdict == FAILS
    assert verdicts["flat: CRA at 36/255 grows with each doubling of N (cifar10)"].verdict in (CANNOT, FAILS)
    assert verdicts["steep: doubling CIFAR-10 adds about 5 CRA points (cifar10)"].ours.startswith(
        "+8.9 per doubling (95% CI"
    )
    digits = _verdicts(_scaling_report("data_scaling", "digits", {"rising": 5.0}))
    assert digits["rising: doubling CIFAR-10 adds about 5 CRA points (digits)"].verdict == CANNOT  # another dataset


def test_compute_scaling_is_judged_against_the_data_sweep_of_the_same_net():
    data = _scaling_report("data_scaling", "digits", {"net": 5.0})
    weak = _scaling_report("compute_scaling", "digits", {"net": 1.0}, x_name="epochs")
    strong = _scaling_report("compute_scaling", "digits", {"net": 8.0}, x_name="epochs")
    claim = "net: more compute helps much less than more data"
    assert _verdicts(weak, {"data_scaling": data})[claim].verdict == HOLDS
    assert _verdicts(strong, {"data_scaling": data})[claim].verdict == FAILS
    assert _verdicts(weak)[claim].verdict == CANNOT  # no data sweep to compare with


def test_one_architecture_says_when_the_losses_contrast_the_other_way():
    def row(loss, accuracy, cra):
        return {ARCHITECTURE: "net", LOSS: loss, "seeds": 3, ACCURACY: accuracy, ACCURACY + SD: 0.3, CRA_36: cra}

    # the demo's numbers: CE 91.2% CRA against OffsetCE 90.6%, the opposite of the paper's contrast
    report = Report("one_architecture", "t", [], [row(CE, 97.0, 91.2), row(OFFSET_CE, 95.0, 90.6)])
    verdicts = _verdicts(report)
    assert verdicts[f"net: {CE} gives the higher accuracy (3 seed(s))"].verdict == HOLDS
    robust = verdicts[f"net: {OFFSET_CE} gives the higher CRA 36/255 (3 seed(s))"]
    assert robust.verdict == CANNOT and robust.ours == "90.6% against 91.2%"
    report.rows[0][CRA_36] = 95.0
    assert _verdicts(report)[f"net: {OFFSET_CE} gives the higher CRA 36/255 (3 seed(s))"].verdict == FAILS
