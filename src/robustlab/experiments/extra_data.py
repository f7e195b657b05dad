"""Scaling with generated data (paper Section 5.1 and Section 9).

Add generated CIFAR-10-like images (an .npz with ``image`` uint8 NHWC and ``label``,
e.g. the published EDM samples; ``--set data.extra_path=FILE``) to the real training
set, from 30 up to 1,000,000 of them (capped at what the file holds), and report CRA
against the total training-set size. Every size trains for the same number of steps
(``epochs`` of the real training set; the epochs shrink as the set grows). The paper
finds that the data-scaling trend continues. The demo scale uses ``digits-affine``, random
affine distortions of the digits training images, as a stand-in for generated data.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from robustlab.config import ConfigError
from robustlab.data.datasets import AFFINE_DIGITS, AFFINE_DIGITS_COUNT
from robustlab.experiments.claims import GROWTH_RULE, Verdict, fits_of, growth_verdict
from robustlab.experiments.data_scaling import CRA_36, scaling_report, scaling_table, training_set_size
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup
from robustlab.experiments.parts import MINIATURE, Part, one_job
from robustlab.experiments.recipes import DEMO_CONFIG
from robustlab.experiments.sweep import Sweep, SweepRow


def geometric_extra(real: int, most: int, points: int) -> tuple[int, ...]:
    """Generated amounts from 0 to ``most`` for which real + amount grows geometrically, rounded
    to 1,000 (to 1 below 1,000): ``points`` sizes of the total training set, equal ratios apart."""
    ratio = (real + most) / real
    totals = [real * ratio ** (k / (points - 1)) for k in range(points)]
    step = 1000 if most >= 10_000 else 1
    return tuple(sorted({min(most, round((t - real) / step) * step) for t in totals}))


PAPER_EXTRA = geometric_extra(50_000, 1_000_000, 11)  # 0, 18,000, ..., 1,000,000
PLANNED_FILE = "planned-generated-images.npz"  # a plan's stand-in for the --extra-data file not given yet

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "extra": (0, 30, 100),
        "epochs": 2,
        "seeds": (0,),
        "target": 90.0,
        "recipes": ("tiny-lipmlp",),
        "config": {"data.extra_path": AFFINE_DIGITS},
    },
    # 179 real digits (an eighth) plus generated ones up to 31x as many: the total doubles each
    # step. With all 1,437 real digits CRA is already flat in N at this budget (data_scaling).
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "extra": (0, 179, 537, 1253, 2685, 5549),
        "epochs": 200,  # of the 179 real images: the 1,432 steps of the other demo runs
        "seeds": (0, 1, 2),
        "target": 97.0,
        "recipes": ("tiny-lipmlp",),
        "config": {**DEMO_CONFIG, "data.extra_path": AFFINE_DIGITS, "data.subset_size": 179},
    },
    "small": {
        "dataset": "cifar10",
        "extra": PAPER_EXTRA,
        "epochs": 20,
        "seeds": (0, 1, 2),
        "target": 60.0,
        "recipes": ("small-lipmlp",),
    },
    "paper": {
        "dataset": "cifar10",
        "extra": PAPER_EXTRA,
        "epochs": 3000,
        "seeds": (0,),
        "target": 80.0,
        "recipes": ("lipconvnet-cpl",),
    },
}


def generated_count(path: str) -> int:
    """How many images the generated-data file holds (reads only its labels)."""
    if path == AFFINE_DIGITS:
        return AFFINE_DIGITS_COUNT  # generating them to count them took 0.2 s of every --status
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as archive:
            return len(archive["label"])
    except (OSError, KeyError, ValueError) as error:
        raise ConfigError(
            f"data.extra_path={path}: cannot read the labels of this generated-data file "
            f"({error}); it must be an .npz with 'image' (uint8 NHWC) and 'label'"
        ) from None


def pass_images(size: int, batch: int) -> int:
    """Images one pass over ``size`` images processes: its batches, the last one filled up to
    ``batch`` (``train.loop.training_steps``); a set smaller than a batch is one partial batch."""
    return math.ceil(size / batch) * batch if size > batch else size


def real_size(setup: Setup) -> int:
    """Real training images: the subset (``data.subset_size``) when one is set, else the whole split."""
    return setup.base_config({}).data.subset_size or training_set_size(setup)


def sweeps(setup: Setup) -> list[Sweep]:
    extra_path = setup.base_config({}).data.extra_path
    if not extra_path and setup.planning:  # a plan lists the jobs as if the paper's 1M images were there
        setup = replace(setup, overrides=[*setup.overrides, f"data.extra_path={PLANNED_FILE}"])
        extra_path = PLANNED_FILE
    if not extra_path:
        raise ConfigError(
            "extra_data needs a file of generated images: add --set data.extra_path=FILE.npz "
            "(an .npz with 'image' uint8 NHWC and 'label', e.g. the EDM CIFAR-10 samples)"
        )
    available = max(setup.params["extra"]) if extra_path == PLANNED_FILE else generated_count(extra_path)
    real, epochs = real_size(setup), setup.params["epochs"]
    # The same images processed for every size (``epochs`` passes over the real images): the
    # epochs shrink as the training set grows, counting each pass as the loader fills its last batch.
    batch = setup.base_config({}).train.batch_size
    grid = [
        {"data.extra_size": n, "train.epochs": epochs * real / pass_images(real + n, batch), "seed": seed}
        for n in sorted({min(int(n), available) for n in setup.params["extra"]})
        for seed in setup.params["seeds"]
    ]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            recipe=name,
            grid=grid,
            base=setup.base_config({**setup.recipe(name), "train.scale_epochs": False, "eval.train_set": True}),
        )
        for name in setup.params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    real = real_size(setup)
    table, eps = scaling_table(rows, "extra", lambda config: config.data.extra_size)
    for line in table:
        line["N"] = real + line["extra"]
    notes = [f"N = {real} real images + the generated ones ({setup.base_config({}).data.extra_path})."]
    return scaling_report(
        "extra_data",
        f"Accuracy and CRA vs real + generated training data ({setup.dataset})",
        rows,
        setup,
        table,
        eps,
        x_name="N",
        x_of_row=lambda r: real + r.config.data.extra_size,
        xlabel="training-set size N (real + generated)",
        figure_title=f"Adding generated data to {setup.dataset}",
        figure_path=out_dir / f"{setup.slug()}.png",
        notes=notes,
    )


def claims(report: Report, others: dict[str, Report]) -> list[Verdict]:
    """Section 5.1 / 9: with generated data added, CRA keeps growing with N."""
    verdicts = []
    for label, fit in fits_of(report, CRA_36).items():
        ours, verdict = growth_verdict(fit)
        claim = f"{label}: with generated images added, CRA keeps growing with each doubling of N"
        verdicts.append(Verdict(claim, "the trend continues (Section 5.1)", ours, verdict, GROWTH_RULE))
    return verdicts


# The sections of the paper this experiment makes in `robustlab reproduce`, and its jobs per scale.
PARTS = [
    Part(
        "extra-data",
        "Extra (generated) data (Section 5.1 and Section 9)",
        [
            "Adding CIFAR-10-like images generated by a diffusion model (EDM) extends the data-scaling trend to "
            "larger sizes."
        ],
        one_job("extra_data", "cifar10"),
        {
            MINIATURE: "'digits-affine', mild random affine distortions of the digits training images, stands in "
            "for a generative model's samples. Distorted copies carry less new information than generated "
            "images: the verdict below tests the direction of the paper's claim, not its strength.",
            "demo": "'digits-affine', mild random affine distortions of the digits training images, stands in "
            "for a generative model's samples, added to 179 real digits (an eighth of the set) so that the real "
            "data alone leave room to grow. Distorted copies carry less new information than generated images: "
            "the verdict below tests the direction of the paper's claim, not its strength.",
        },
        order=70,
    ),
]


EXPERIMENTS.add(
    "extra_data",
    Experiment(
        name="extra_data",
        summary="Section 5.1 / 9: CRA vs training-set size with generated (EDM) images added",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
        claims=claims,
        parts=PARTS,
    ),
)
