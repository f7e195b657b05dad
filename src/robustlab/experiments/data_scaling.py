"""Data scaling (paper Section 5.1, Figures 1 and 2).

Train on class-balanced subsets of growing size N; ``train.scale_epochs`` trains each
for ``epochs * full / N`` epochs (the paper's rule: epochs x k when the set is divided by k), so
every size processes the same number of images (``train.loop.training_steps``; within one batch
of each other, whatever the batch size divides). The randomized-smoothing base net trains for
``smoothing_epochs`` at the full set (the paper: 100, Section 4), the other nets for ``epochs``
(the paper: 3000). By default
the sizes are the whole training split and its halvings (CIFAR-10: the paper's 48, 97, ...,
50,000; MNIST: 58 ... 60,000). Report accuracy (all nets) and CRA at every certified radius
(1-Lipschitz nets; the randomized-smoothing base net through the paper's smoothing estimate,
which is not a guarantee) against N on a log axis, on the test set and on the training images
themselves, with the scaling-law fits: the gain per doubling of N (the paper: about 5 CRA
points on CIFAR-10), a sigmoid from chance to a ceiling, and the N a target CRA needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from robustlab.config import PAPER_EPS, ExperimentConfig
from robustlab.experiments.claims import (
    CANNOT,
    GROWTH_RULE,
    HOLDS,
    Verdict,
    fits_of,
    growth_verdict,
    slope_rule,
    slope_verdict,
)
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup, run_experiment
from robustlab.experiments.launch import Execution
from robustlab.experiments.parts import MINIATURE, MINIATURES, SEARCHED, Job, Part, one_job
from robustlab.experiments.plan import PUBLISHED
from robustlab.experiments.readout import (
    Results,
    accuracy_percent,
    cra_column,
    cra_percent,
    fit_panels,
    metric_panels,
    radii_certified_at,
    seed_mean_table,
    training_set_evaluation,
)
from robustlab.experiments.recipes import DEMO_CONFIG, SMOOTHING_SAMPLES, recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import Curve, Panel, plot_panels
from robustlab.report.tables import SD
from robustlab.runs.store import RunStore

PAPER_SIZES = (48, 97, 195, 390, 781, 1562, 3125, 6250, 12500, 25000, 50000)  # CIFAR-10's halvings

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "sizes": (48, 97),
        "halvings": 0,
        "epochs": 2,
        "smoothing_epochs": 2,
        "seeds": (0,),
        "target": 90.0,
        "recipes": ("tiny-lipmlp", "tiny-convnet", "tiny-smoothing"),
        "smoothing_samples": 50,
    },
    # The miniature on the built-in digits: 1,437 images and five halvings.
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "sizes": (),
        "halvings": 5,
        "epochs": 25,
        "smoothing_epochs": 25,  # the miniature keeps one budget for all nets (the paper: 100 vs 3000)
        "seeds": (0, 1, 2),
        "target": 97.0,
        "recipes": ("tiny-lipmlp", "tiny-convnet", "tiny-smoothing"),
        "smoothing_samples": 200,  # a fifth of the paper's 1000: the estimate is the demo's costliest step
        "config": DEMO_CONFIG,
    },
    # 20 epochs: at 2 the runs are so short that every size is compute-bound and CRA does not
    # grow with N (measured on MNIST: 48-59% CRA at every size; 83-84% at 20 epochs, docs/experiments.md)
    "small": {
        "dataset": "cifar10",
        "sizes": (),
        "halvings": 10,
        "epochs": 20,
        "smoothing_epochs": 20,
        "seeds": (0, 1, 2),
        "target": 60.0,
        "recipes": ("small-lipmlp", "small-convnet", "small-smoothing"),
        "smoothing_samples": SMOOTHING_SAMPLES,
    },
    "paper": {
        "dataset": "cifar10",
        "sizes": (),
        "halvings": 10,
        "epochs": 3000,
        "smoothing_epochs": 100,  # Section 4: "standard deviation 1/8 and training for 100 epochs"
        "seeds": (0,),
        "target": 80.0,
        "recipes": ("lipconvnet-cpl", "lipmlp-aol", "simpleconvnet", "smoothing"),
        "smoothing_samples": SMOOTHING_SAMPLES,
    },
}
SETTINGS = {"train.scale_epochs": True, "eval.train_set": True}  # train curves: the training images, certified


def dataset_facts(setup: Setup) -> tuple[int, int]:
    """(images in the training split, classes) of the setup's dataset: the cap on subset sizes and chance level."""
    config = setup.base_config({})
    if config.data.name in PUBLISHED:
        size, classes = PUBLISHED[config.data.name]
    else:  # the files are read (NumPy) only for a dataset whose sizes are not published
        from robustlab.data.datasets import load_dataset

        data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
        size, classes = len(data.y_train), data.num_classes
    return size - config.data.val_size, classes


def training_set_size(setup: Setup) -> int:
    """Images in the training split of the setup's dataset (the cap on subset sizes)."""
    return dataset_facts(setup)[0]


def capped_sizes(sizes: Sequence[int], full: int) -> list[int]:
    """The sizes below ``full``, then ``full`` itself if any size reached it."""
    below = sorted({int(n) for n in sizes if n < full})
    return below + [full] if any(n >= full for n in sizes) else below


def halvings(full: int, count: int) -> list[int]:
    """``full`` and its ``count`` halvings, rounded down: CIFAR-10's 50,000 gives the paper's sizes."""
    return sorted({full // 2**k for k in range(count + 1) if full // 2**k >= 1})


def subset_sizes(setup: Setup) -> list[int]:
    """The explicit ``sizes`` (capped at the training split), else the split and its halvings."""
    full = training_set_size(setup)
    sizes = [int(n) for n in setup.params["sizes"]]
    return capped_sizes(sizes, full) if sizes else halvings(full, setup.params["halvings"])


def sweeps(setup: Setup) -> list[Sweep]:
    params = setup.params
    full = training_set_size(setup)
    # The whole training split is no subset (the same images, the same epochs), so that the
    # full-set run is one run with compute_scaling's run of the same epochs (result_key)
    sizes = [None if n == full else n for n in subset_sizes(setup)]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            recipe=name,
            base=setup.base_config(
                {**_with_samples(setup.recipe(name), params), "train.epochs": epochs_of(name, params), **SETTINGS}
            ),
            grid={"data.subset_size": sizes, "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def is_smoothing(recipe_name: str) -> bool:
    """A randomized-smoothing base net: scored by the smoothing estimate."""
    return bool(recipe(recipe_name).get("eval.smoothing_samples"))


def epochs_of(recipe_name: str, params: dict) -> float:
    """Epochs at the full set: ``smoothing_epochs`` for a smoothing base net, else ``epochs``."""
    return params["smoothing_epochs"] if is_smoothing(recipe_name) else params["epochs"]


def _with_samples(overrides: dict, params: dict) -> dict:
    """A smoothing recipe's estimate with the scale's number of noisy copies (the paper: 1000)."""
    if overrides.get("eval.smoothing_samples"):
        return {**overrides, "eval.smoothing_samples": params["smoothing_samples"]}
    return overrides


def scored(row: SweepRow) -> Results | None:
    """The results a run is scored by: the smoothing estimate for a smoothing base net (its
    smoothed classifier is what it offers), else the certified evaluation."""
    if row.results is not None and row.results.smoothing is not None:
        return row.results.smoothing
    return row.results


def training_metrics(eps: list[float]) -> dict:
    """Accuracy and CRA of the training images themselves (not for smoothing base nets, whose
    training-set number would be the base net's, not the smoothed classifier's)."""

    def on_training_images(read: Callable[[Results | None], float | None]) -> Callable[[SweepRow], float | None]:
        def value(row: SweepRow) -> float | None:
            if row.results is None or row.results.smoothing is not None:
                return None
            return read(training_set_evaluation(row))

        return value

    metrics = {"train accuracy": on_training_images(accuracy_percent)}
    return metrics | {f"train {cra_column(e)}": on_training_images(partial(cra_percent, eps=e)) for e in eps}


def scaling_table(
    rows: list[SweepRow], x_name: str, x_of: Callable[[ExperimentConfig], float]
) -> tuple[list[dict], list[float]]:
    """seed_mean_table() over what each run is scored by, with the training-image metrics;
    returns the table and the radii it has CRA columns for."""
    eps = radii_certified_at(rows) or [PAPER_EPS]
    return seed_mean_table(rows, x_name, x_of, eps, training_metrics(eps), results_of=scored), eps


RADIUS_MARKERS = ("s", "^", "v", "D", "P", "X")  # one marker per radius in the larger-radii panel


def scaling_panels(
    rows: list[SweepRow],
    setup: Setup,
    table: list[dict[str, Any]],
    eps: list[float],
    x_name: str,
    x_of_row: Callable[[SweepRow], float],
) -> tuple[list[Panel], list[str], list[dict[str, Any]]]:
    """Accuracy and CRA at 36/255 (test solid, training images dashed) with the fits, then the
    test CRA at every larger radius the runs were certified at in one panel; returns (panels,
    fit notes, fits)."""
    panels = metric_panels(table, x_name, ["accuracy", cra_column(PAPER_EPS)], dashed=("train",))
    larger = [e for e in eps if e > PAPER_EPS + 1e-9]
    if larger:
        panels.append(Panel("CRA at larger radii (%)", larger_radii_curves(table, x_name, larger)))
    readers = {
        "accuracy": lambda r: accuracy_percent(scored(r)),
        cra_column(PAPER_EPS): lambda r: cra_percent(scored(r)),
    }
    chance = 100 / dataset_facts(setup)[1]
    return fit_panels(panels, rows, x_of_row, readers, x_name=x_name, chance=chance, target=setup.params.get("target"))


RADIUS_LINESTYLES = ("-", "--", ":", "-.", "-", "--")  # and a line style (format-string styles only)


def larger_radii_curves(table: list[dict], x_name: str, radii: list[float]) -> list[Curve]:
    """The test CRA of every model at each radius: a model keeps its colour, a radius its marker
    and line style; with one certified model (the demo) each radius gets a colour of its own."""
    curves = []
    models = [m for m in dict.fromkeys(row["model"] for row in table) if any(_certified(table, m, r) for r in radii)]
    for model in models:
        for radius, marker, style in zip(radii, RADIUS_MARKERS, RADIUS_LINESTYLES):
            column = cra_column(radius)
            points = [r for r in table if r["model"] == model and r.get(column) is not None]
            if points:
                xs, ys = [r[x_name] for r in points], [r[column] for r in points]
                errors = [r.get(column + SD) for r in points]
                label = f"{model}, {column.removeprefix('CRA ')}"
                colour = model if len(models) > 1 else label
                curves.append(Curve(label, xs, ys, yerr=errors, colour=colour, marker=marker, linestyle=style))
    return curves


def _certified(table: list[dict], model: str, radius: float) -> bool:
    return any(r["model"] == model and r.get(cra_column(radius)) is not None for r in table)


def max_estimated_radius(rows: list[SweepRow]) -> float:
    """The largest radius the smoothing estimate can give: sigma/2 (PhiInv(0.99) - PhiInv(0.01))."""
    from robustlab.certify.smoothing import estimated_radius  # torch: only when a report is written

    sigma = max(r.config.augment.noise_std for r in rows)
    return float(estimated_radius(0.99, 0.01, sigma))


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    full = training_set_size(setup)
    table, eps = scaling_table(rows, "N", lambda config: config.data.subset_size or full)
    notes = []
    if any(r.results is not None and r.results.smoothing is not None for r in rows):
        notes.append(
            "smoothing runs: the smoothed classifier's accuracy and CRA from the paper's estimate (not a guarantee); "
            f"with frequencies clipped to [0.01, 0.99] its radius is at most {max_estimated_radius(rows):.3f}, so "
            "its CRA is 0 at larger radii."
        )
    return scaling_report(
        "data_scaling",
        f"Accuracy and CRA vs training-set size ({setup.dataset})",
        rows,
        setup,
        table,
        eps,
        x_name="N",
        x_of_row=lambda r: r.config.data.subset_size or full,
        xlabel="training-set size N",
        figure_title=f"Data scaling on {setup.dataset}",
        figure_path=out_dir / ("demo.png" if setup.scale == "demo" else f"{setup.slug()}.png"),
        notes=notes,
    )


def scaling_report(
    experiment: str,
    title: str,
    rows: list[SweepRow],
    setup: Setup,
    table: list[dict],
    eps: list[float],
    *,
    x_name: str,
    x_of_row: Callable[[SweepRow], float],
    xlabel: str,
    figure_title: str,
    figure_path: Path,
    notes: list[str],
) -> Report:
    """The report of a scaling experiment (data, compute, extra data): ``scaling_panels`` drawn
    on a log x axis, the table, and the fits."""
    panels, fit_notes, fits = scaling_panels(rows, setup, table, eps, x_name, x_of_row)
    figure = plot_panels(
        panels,
        figure_path,
        xlabel=xlabel,
        logx=True,
        title=f"{figure_title} ({setup.scale}); dashed: training images",
    )
    report = Report(experiment, title, list(table[0]) if table else [], table, notes, [figure])
    report.fits, report.fit_notes = fits, fit_notes
    return report


CRA_36 = cra_column(PAPER_EPS)  # the column (and fit metric) of the paper's headline CRA


def claims(report: Report, others: dict[str, Report]) -> list[Verdict]:
    """Figures 1-2: CRA grows with every doubling of N (all datasets), by about 5 points on
    CIFAR-10, and follows a sigmoid in log N."""
    dataset = str(report.provenance.get("dataset"))
    verdicts = []
    for label, fit in fits_of(report, CRA_36).items():
        ours, verdict = growth_verdict(fit)
        claim = f"{label}: CRA at 36/255 grows with each doubling of N ({dataset})"
        verdicts.append(Verdict(claim, "grows (Figures 1-2)", ours, verdict, GROWTH_RULE))
        ours, verdict = slope_verdict(fit, 4.0, 6.0)
        if dataset != "cifar10":
            verdict = CANNOT
        claim = f"{label}: doubling CIFAR-10 adds about 5 CRA points ({dataset})"
        rule = slope_rule(4.0, 6.0) + "; cannot tell on another dataset than CIFAR-10"
        verdicts.append(Verdict(claim, "about +5 per doubling (Section 5.1)", ours, verdict, rule))
    for label, fit in fits_of(report, CRA_36, "sigmoid").items():
        inside = "midpoint_log2" in fit.get("params", {})
        ok = fit["status"] == "ok" and inside
        ours = (
            f"ceiling {fit['params']['ceiling']:.1f}% (95% CI {fit['ci95']['ceiling'][0]:.1f} to "
            f"{fit['ci95']['ceiling'][1]:.1f}), steepest at N = {2 ** fit['params']['midpoint_log2']:,.0f}"
            if ok
            else "; ".join(fit["reasons"]) or "its steepest point lies outside the measured N"
        )
        claim = f"{label}: CRA follows a sigmoid in log N, from chance to a ceiling ({dataset})"
        rule = (
            "holds if the sigmoid fit is unflagged (its ceiling pinned down) and its steepest point lies inside "
            "the measured N; cannot tell otherwise"
        )
        verdicts.append(Verdict(claim, "a sigmoid across datasets (Figure 2)", ours, HOLDS if ok else CANNOT, rule))
    return verdicts


DEMO_RECIPES = ("tiny-lipmlp", "tiny-convnet")  # `robustlab demo`: the central result, without smoothing


def run_demo(
    out_dir: str | Path = "robustlab-demo",
    dataset: str | None = None,
    device: str | None = None,
    sizes: tuple[int, ...] | None = None,
    epochs: float | None = None,
    seeds: tuple[int, ...] | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> Report:
    """The paper's central result in miniature: data_scaling at the demo scale.

    Trains a small 1-Lipschitz MLP and a standard MLP on growing class-balanced subsets
    of the built-in digits (no download, minutes on a CPU), certifies the Lipschitz one
    and writes ``demo.png`` and ``table.json``/``table.md`` into ``out_dir``, whose
    ``runs/`` folder is the run store (a second call reuses the finished runs).
    """
    setup = EXPERIMENTS.get("data_scaling").setup(
        "demo", dataset, overrides, sizes=sizes, epochs=epochs, seeds=seeds, recipes=DEMO_RECIPES
    )
    out_dir = Path(out_dir)
    execution = Execution(device=device, progress=progress)  # run_experiment trains the demo scale on one thread
    _, report = run_experiment(setup, RunStore(out_dir / "runs"), out_dir=out_dir, execution=execution)
    assert report is not None  # written unless it is a dry run
    return report


def figure2_jobs(scale: str) -> list[Job]:
    """MNIST and CIFAR-100; none at the miniature scales (drawn from Figure 1's runs at larger radii)."""
    if scale in MINIATURES:
        return []
    return [Job("data_scaling", "mnist", dict(SEARCHED)), Job("data_scaling", "cifar100", dict(SEARCHED))]


# The sections of the paper this experiment makes in `robustlab reproduce`, and its jobs per scale.
PARTS = [
    Part(
        "figure-1",
        "Figure 1: data scaling on CIFAR-10 (Section 5.1)",
        [
            "Accuracy and CRA at 36/255 of models trained on subsets of CIFAR-10 with the same compute for every "
            "size; doubling the dataset reliably adds about 5% CRA.",
            "Across datasets, the convolutional net and the MLP end up similar when trained long enough.",
        ],
        one_job("data_scaling", "cifar10"),
        {
            "demo": "demo: the built-in 8x8 digits (1,437 training images) in place of CIFAR-10; small nets and short "
            "runs, so the absolute numbers are the digits', not CIFAR-10's."
        },
        order=10,
    ),
    Part(
        "figure-2",
        "Figure 2: data scaling on MNIST and CIFAR-100 (Section 5.1)",
        [
            "The same experiment on MNIST and CIFAR-100: read together, CRA follows a sigmoid in log N, robust at "
            "chance level with little data (CIFAR-100 starts almost flat), about linear in log N in the middle, "
            "and flattening towards 100% (MNIST)."
        ],
        figure2_jobs,
        {
            MINIATURE: "the miniatures cannot show Figure 2: MNIST and CIFAR-100 need downloads (use --scale small "
            "or paper with the data present). In their place, Figure 1's digits runs at the smallest, a middle and "
            "the largest certified radius, where a sigmoid reading expects the flat top, the rising middle and the "
            "flat bottom; Figure 1's fits say which each radius shows."
        },
        order=20,
    ),
]


EXPERIMENTS.add(
    "data_scaling",
    Experiment(
        name="data_scaling",
        summary="Section 5.1, Figures 1-2: accuracy and CRA vs training-set size (same images processed per size)",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
        claims=claims,
        parts=PARTS,
    ),
)
