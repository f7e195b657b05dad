"""The whole paper in one command: every experiment and the theory lab at one scale, and one
report laid out like the paper (``robustlab reproduce --scale smoke|demo|small|paper``).

The parts of the paper (Figure 1, Figure 2, Table 1 / Figure 3, ...) are the ``Part`` s the
experiments declare (``parts.paper_parts`` walks the registry): the jobs each needs at each
scale, what the paper reports and what a miniature cannot show; the claims each tests are the
experiments' own (``Experiment.claims``, computed verdicts). ``reproduce`` runs the parts one after
another through ``run_experiment`` (so a killed reproduction resumes, and finished runs are
reused), keeps going when one part fails (the report says why), and writes ``report.html`` and
``report.md`` with every figure as PNG and SVG and each part's scale note and provenance: commit,
hardware, the command that reproduces it alone, runs done and missing. ``plan`` (``--dry-run``)
lists every job it would run, with its budget, lr and GPU-hours, and runs nothing.
"""

from __future__ import annotations

# torch is imported inside the functions that train or describe the hardware: ``status``
# (``reproduce --status``) reads only the run store and must not load it.
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustlab.experiments.claims import CANNOT, FAILS, HOLDS
from robustlab.experiments.claims import COLUMNS as CLAIM_COLUMNS
from robustlab.experiments.experiment import (
    Report,
    Setup,
    get_experiment,
    paper_parts,
    report_experiment,
    run_experiment,
)
from robustlab.experiments.launch import Execution, _cpu_count, wait_for_jobs
from robustlab.experiments.parts import MINIATURES, Job, Part, param_text
from robustlab.experiments.plan import GPU, plan_experiment, totals
from robustlab.experiments.readout import metric_panels
from robustlab.experiments.slurm import check_request
from robustlab.report.document import Bullets, Figure, Section, Table, Text, write_document
from robustlab.report.plots import plot_panel_grid
from robustlab.report.tables import SD
from robustlab.runs.store import RunStore

SCALES = ("smoke", "demo", "small", "paper")


@dataclass
class PartResult:
    part: Part
    jobs: list[Job]
    reports: list[Report] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


THEORY_TITLE = "Theorems 1 and 2 (Section 3)"
THEORY_SLACK = 0.02  # Monte-Carlo allowance of a measured accuracy against a theorem's bound
THEORY_PAPER = [
    "Theorem 1: for a family of hypercube problems with d = ceil(log2 n) + 7, sign(x_d) has 100% accuracy and "
    "phi(sign(x)) 100% robust accuracy, yet every learner's average robust accuracy is at most 1/2 + n/2^d "
    "(below 51%).",
    "Theorem 2: with a margin-delta L-infinity robust classifier on [0,1]^d, n >= 37 ceil(1/delta)^d samples give "
    "1-nearest-neighbour >= 99% average L-infinity robust accuracy at radius delta/2.",
]


@dataclass
class TheorySettings:
    theorem1: dict[str, Any]  # theorem1_sweep's arguments
    theorem2: dict[str, Any]  # theorem2_sweep's arguments
    fixed_d: int  # also sweep Theorem 1 at this fixed dimension (0: not)


DEMO_THEORY = TheorySettings({"ns": [16, 64, 256, 1024, 4096]}, {"d": 3, "cells": 4}, 10)  # the CLI's defaults
THEORY_SETTINGS = {
    "smoke": TheorySettings(
        {"ns": [16, 64], "learners": ("sign", "1nn", "oracle"), "trials": 2, "test_size": 200, "pgd_steps": 0},
        {"ns": [8, 64, 512], "d": 2, "cells": 3, "trials": 2, "test_size": 200},
        0,
    ),
    "demo": DEMO_THEORY,
    "small": DEMO_THEORY,
    "paper": DEMO_THEORY,
}


# ---------------------------------------------------------------------------------------
# Running


def reproduce(
    scale: str,
    runs_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    parts: list[str] | None = None,
    overrides: list[str] | None = None,
    extra_data: str | None = None,
    command: str | None = None,
    dry_run: bool = False,
    execution: Execution | None = None,
) -> dict[str, Any]:
    """Run every part of the paper at ``scale`` and write the report; returns its paths and a
    summary per part. ``parts`` selects part ids (default: all, theory included);
    ``extra_data`` is the generated-images file for the extra-data part at small/paper scale;
    ``execution`` (device, progress, workers, GPUs per job, launcher) goes to every
    ``run_experiment``. With a SLURM launcher this process is the driver of
    ``_run_on_cluster``: the lr search first, then every other part at once.
    With ``dry_run`` nothing runs: returns ``plan``'s every job and totals instead."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale '{scale}'; choose one of: {', '.join(SCALES)}")
    known = [p.id for p in paper_parts()] + ["theory"]
    unknown = sorted(set(parts or []) - set(known))
    if unknown:
        raise ValueError(f"unknown part '{unknown[0]}'; parts: {', '.join(known)}")
    store = RunStore(runs_root)
    if dry_run:
        return plan(scale, store, parts=parts, overrides=overrides, extra_data=extra_data)
    out = Path(out_dir or f"reproduce-{scale}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    execution = execution or Execution()
    selected = [part for part in paper_parts() if not parts or part.id in parts]
    from robustlab.runtime import torch_threads

    with torch_threads(1 if scale in MINIATURES else None):  # the theory lab's tiny nets too
        if execution.launcher is not None and execution.launcher.cluster == "slurm":
            results = _run_on_cluster(selected, scale, store, out, overrides or [], extra_data, execution)
        else:
            results = [_run_part(part, scale, store, out, overrides or [], extra_data, execution) for part in selected]
        theory = _run_theory(scale, out, execution.progress) if not parts or "theory" in parts else None
    context = {
        "scale": scale,
        "command": command or f"robustlab reproduce --scale {scale}",
        "seconds": time.time() - started,
        "runs_root": store.root,
        "overrides": overrides or [],
    }
    paths = write_document(
        f"Intriguing Properties of Robust Classification, reproduced ({scale})",
        _intro(context),
        _sections(results, theory, scale, store.root, overrides or []),
        out,
    )
    summary = [
        {
            "part": r.part.id,
            "runs done": sum(x.runs_done for x in r.reports),
            "runs missing": sum(x.runs_missing for x in r.reports),
            "seconds": round(r.seconds, 1),
            "error": "; ".join(r.errors),
        }
        for r in results
    ]
    if theory is not None:
        summary.append(
            {
                "part": "theory",
                "runs done": None,
                "runs missing": None,
                "seconds": round(theory["seconds"], 1),
                "error": theory.get("error", ""),
            }
        )
    return {"report": {k: str(v) for k, v in paths.items()}, "seconds": context["seconds"], "parts": summary}


def plan(
    scale: str,
    store: RunStore,
    *,
    parts: list[str] | None = None,
    overrides: list[str] | None = None,
    extra_data: str | None = None,
) -> dict[str, Any]:
    """Every job the reproduction would run at ``scale`` (``experiments.plan``), each with its
    section, and the jobs and GPU-hours per section and in all; the lr-search jobs come first,
    and each job with a searched lr names the search jobs it waits for."""
    jobs: list[dict[str, Any]] = []
    searches: dict[str, dict[str, list[str]]] = {}  # dataset -> recipe -> lr-search job ids
    for part in paper_parts():
        if parts and part.id not in parts and part.id != "lr-search":
            continue
        for job in part.jobs(scale):
            setup = job_setup(job, scale, overrides, extra_data)
            planned = plan_experiment(setup, store, searches.get(setup.dataset, {}))
            if job.experiment == "lr_search":
                for entry in planned:
                    searches.setdefault(setup.dataset, {}).setdefault(entry["recipe"], []).append(entry["id"])
            if not parts or part.id in parts:
                jobs += [{"section": part.id, **entry} for entry in planned]
    return {"scale": scale, "gpu": GPU, "jobs": jobs, "totals": totals(jobs, "section")}


def status(
    scale: str,
    runs_root: str | Path | None = None,
    parts: list[str] | None = None,
    overrides: list[str] | None = None,
    extra_data: str | None = None,
) -> list[dict[str, Any]]:
    """Where the reproduction at ``scale`` stands, per section (``study_status``); trains nothing."""
    from robustlab.experiments.study_status import study_status

    store = RunStore(runs_root)
    sections = []
    for part in paper_parts():
        if parts and part.id not in parts:
            continue
        setups: list[Any] = []
        for job in part.jobs(scale):
            try:
                setup = job_setup(job, scale, overrides, extra_data)
                setups.append(replace(setup, store=store))
            except (ValueError, KeyError, FileNotFoundError) as error:  # e.g. lr=searched before the search
                setups.append(error)
        sections.append((part.id, setups))
    return study_status(sections, store)


def job_setup(job: Job, scale: str, overrides: list[str] | None, extra_data: str | None) -> Setup:
    """The setup of one of a part's jobs; the extra-data experiment reads ``extra_data``."""
    extra = [f"data.extra_path={extra_data}"] if extra_data and job.experiment == "extra_data" else []
    return get_experiment(job.experiment).setup(scale, job.dataset, (overrides or []) + extra, **job.params)


def _run_on_cluster(
    parts: list[Part],
    scale: str,
    store: RunStore,
    out: Path,
    overrides: list[str],
    extra_data: str | None,
    execution: Execution,
) -> list[PartResult]:
    """The paper's order on SLURM, with this process as the driver: the lr search's jobs
    first, waited for (every part that uses lr=searched needs its choice); then every other
    part's jobs submitted at once, so that they share the cluster. With ``launcher.wait``
    the driver waits for them through squeue and writes each part's report; without it,
    the parts say their runs were submitted, and the same command run again (a driver that
    was killed, too) submits nothing that a live job holds and writes the report once the
    runs are done."""
    assert execution.launcher is not None
    check_request(execution.launcher, execution.gpus_per_job)  # what the cluster refuses: one line, before any part
    first = [part for part in parts if part.id == "lr-search"]
    rest = [part for part in parts if part.id != "lr-search"]
    waiting = replace(execution, launcher=replace(execution.launcher, wait=True))
    results = {part.id: _run_part(part, scale, store, out, overrides, extra_data, waiting) for part in first}
    submitting = replace(execution, launcher=replace(execution.launcher, wait=False))
    submitted = {part.id: _run_part(part, scale, store, out, overrides, extra_data, submitting) for part in rest}
    if execution.launcher.wait:
        wait_for_jobs(store, progress=execution.progress)
        for part in rest:  # every run is done or failed: draw, and leave failed runs failed
            results[part.id] = _run_part(part, scale, store, out, overrides, extra_data, execution, train=False)
            results[part.id].seconds += submitted[part.id].seconds
    else:
        results.update(submitted)
    return [results[part.id] for part in parts]


def _run_part(
    part: Part,
    scale: str,
    store: RunStore,
    out: Path,
    overrides: list[str],
    extra_data: str | None,
    execution: Execution,
    train: bool = True,
) -> PartResult:
    """Train (unless not ``train``) and report each experiment of ``part``."""
    result = PartResult(part, part.jobs(scale))
    started = time.time()
    for job in result.jobs:
        try:
            setup = job_setup(job, scale, overrides, extra_data)
            folder = out / "experiments" / setup.slug(scale)
            if train:
                _, report = run_experiment(setup, store, out_dir=folder, execution=execution)
            else:
                report = report_experiment(setup, store, out_dir=folder)
            if report is None:  # a launcher that does not wait: the runs are queued, nothing to draw yet
                result.errors.append(f"{job.experiment}: runs submitted; run this command again once they finish")
            else:
                result.reports.append(report)
        except Exception as error:  # one part failing (missing data, a diverged run) must not stop the rest
            result.errors.append(f"{job.experiment} ({job.dataset or 'default dataset'}): {error}")
            if not isinstance(error, ValueError | FileNotFoundError | KeyError):
                result.errors[-1] += " | " + traceback.format_exc(limit=3).strip().splitlines()[-1]
    result.seconds = time.time() - started
    return result


def _run_theory(scale: str, out: Path, progress: bool) -> dict[str, Any]:
    from robustlab.theory.hypercube import theorem1_sweep
    from robustlab.theory.nearest_neighbour import theorem2_sweep
    from robustlab.theory.plots import plot_theorem1, plot_theorem2

    settings = THEORY_SETTINGS[scale]
    started = time.time()
    folder = out / "theory"
    try:
        one = {"d = ceil(log2 n) + 7": theorem1_sweep(progress=progress, **settings.theorem1)}
        if settings.fixed_d:
            one[f"d = {settings.fixed_d}"] = theorem1_sweep(d=settings.fixed_d, progress=progress, **settings.theorem1)
        two = theorem2_sweep(progress=progress, **settings.theorem2)
        figures = []
        for suffix in (".png", ".svg"):
            figures += [
                plot_theorem1(one, folder / f"theorem1{suffix}"),
                plot_theorem2(two, folder / f"theorem2{suffix}"),
            ]
        return {"theorem1": one, "theorem2": two, "figures": figures[:2], "seconds": time.time() - started}
    except Exception as error:
        return {"error": f"theory: {error}", "seconds": time.time() - started}


# ---------------------------------------------------------------------------------------
# The document


def _intro(context: dict[str, Any]) -> list:
    import torch

    scale = context["scale"]
    return [
        Text(
            "Every experiment of Prach & Lampert, 'Intriguing Properties of Robust Classification' (CVPR 2025 "
            f"workshops), and the theory lab, run by robustlab at scale '{scale}'. Each section puts the paper's "
            "statements beside our numbers with a computed verdict (holds, does not hold, or cannot tell at this "
            "scale, by the rule given beside it), our figures (mean over seeds with one standard deviation; solid "
            "lines are test or evaluation numbers, dashed lines the training images, dash-dotted lines the line fits "
            "with their 95% band and extrapolation, dotted lines the sigmoid fits) and the fits' 95% intervals, then "
            "says at which scale, on which data and from which runs its numbers were made."
            + (
                " At the smoke scale the runs only check the pipeline: the numbers mean nothing."
                if scale == "smoke"
                else ""
            )
        ),
        Bullets(
            [
                f"command: {context['command']}",
                f"code: {_commit()}",
                f"hardware: {_hardware()}",
                f"software: Python {platform.python_version()}, torch {torch.__version__}, robustlab {_version()}",
                f"run store: {context['runs_root']}",
                f"wall time of this invocation: {duration(context['seconds'])} (finished runs are reused, so a "
                "second invocation only draws)",
                f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            ]
        ),
    ]


def section_title(part: Part, scale: str) -> str:
    """The part's heading; a miniature that stands in for the paper's dataset says so, since it
    trains on the built-in digits (the smoke report's Figure 1 is no CIFAR-10 figure)."""
    if scale in MINIATURES and part.caveat_at(scale) is not None:
        return f"{part.title}, in miniature on the built-in digits"
    return part.title


def _sections(
    results: list[PartResult], theory: dict[str, Any] | None, scale: str, runs_root: Path, overrides: list[str]
) -> list[Section]:
    sections = []
    figure1 = next((r for r in results if r.part.id == "figure-1"), None)
    others: dict[str, dict[str, Report]] = {}  # dataset -> experiment -> its report in this reproduction
    for report in (report for result in results for report in result.reports):
        others.setdefault(_dataset(report), {})[report.experiment] = report
    for result in results:
        part = result.part
        section = Section(part.id, section_title(part, scale))
        section.blocks.append(Text("The paper: " + " ".join(part.paper)))
        section.blocks.append(Text("At this scale: " + scale_note(result, scale)))
        if part.id == "figure-2" and scale in MINIATURES and figure1 and figure1.reports:
            section.blocks += _figure2_stand_in(figure1.reports[0], scale)
        verdicts = [
            verdict.to_dict()
            for report in result.reports
            for verdict in get_experiment(report.experiment).claims(report, others.get(_dataset(report), {}))
        ]
        if verdicts:
            section.blocks.append(Table(verdicts, CLAIM_COLUMNS, "The paper's claims, tested at this scale"))
        if part.id == "figure-2" and scale not in MINIATURES and len(result.reports) == 2:
            section.blocks += _figure2_grid(result)
        for report in result.reports:
            section.blocks += _report_blocks(report)
        if result.errors:
            section.blocks.append(Bullets([f"not run: {e}" for e in result.errors]))
        section.blocks.append(_provenance(result, scale, runs_root, overrides))
        sections.append(section)
    if theory is not None:
        sections.append(_theory_section(theory, scale))
    return sections


def scale_note(result: PartResult, scale: str) -> str:
    """Where a section's numbers come from: the scale, the data, the runs and seeds, and what the
    scale cannot show (the part's caveat)."""
    made = []
    for report in result.reports:
        params = report.provenance.get("params", {})
        seeds = params.get("seeds")
        seeds_text = f", {len(seeds)} seed(s) per point" if isinstance(seeds, list | tuple) else ""
        made.append(
            f"{report.experiment} on {_dataset(report)} ({report.runs_done} runs done, {report.runs_missing} "
            f"missing{seeds_text})"
        )
    text = f"scale '{scale}'; " + ("; ".join(made) if made else "no report was made")
    caveat = result.part.caveat_at(scale)
    return text + (". " + caveat[0].upper() + caveat[1:] if caveat else ".")


def _report_blocks(report: Report) -> list:
    blocks: list = [Table(report.rows, report.columns, f"{report.title}: mean ± sd over seeds")]
    blocks += [Figure(path, f"{report.title} ({path.name})") for path in report.figures]
    if report.fit_notes:
        blocks += [
            Text(
                "Scaling-law fits (95% intervals from the fit's t distribution, coverage measured in docs/experiments.md):"
            ),
            Bullets(report.fit_notes),
        ]
    if report.notes:
        blocks.append(Bullets(report.notes))
    return blocks


def _figure2_stand_in(report: Report, scale: str) -> list:
    """At the miniature scales: Figure 1's digits runs at the smallest, a middle and the largest
    certified radius side by side, the three stretches of the paper's sigmoid reading."""
    radii = [c for c in report.columns if c.startswith("CRA ") and not c.endswith(SD)]
    if len(radii) < 2:
        return []
    chosen = list(dict.fromkeys([radii[0], radii[len(radii) // 2], radii[-1]]))
    folder = Path(report.figures[0]).parent if report.figures else Path(".")
    path = plot_panel_grid(
        [metric_panels(report.rows, "N", [radius], dashed=("train",)) for radius in chosen],
        folder / "figure2-stand-in.png",
        xlabel="training-set size N",
        column_titles=[f"digits, {radius}" for radius in chosen],
        logx=True,
        title="Stand-in for Figure 2: one dataset at a small, a middle and a large radius",
    )
    return [Figure(path, f"Figure 2 stand-in ({scale}): the digits' {', '.join(chosen)} against N")]


def _figure2_grid(result: PartResult) -> list:
    """MNIST and CIFAR-100 side by side, accuracy above CRA, as in the paper's Figure 2."""
    columns = [metric_panels(r.rows, "N", ["accuracy", "CRA 36/255"], dashed=("train",)) for r in result.reports]
    folder = Path(result.reports[0].figures[0]).parent.parent if result.reports[0].figures else Path(".")
    path = plot_panel_grid(
        columns,
        folder / "figure2.png",
        xlabel="training-set size N",
        column_titles=[_dataset(r) for r in result.reports],
        logx=True,
        title="Figure 2: data scaling on MNIST and CIFAR-100",
    )
    return [Figure(path, "Figure 2: MNIST (left) and CIFAR-100 (right); dashed: training images")]


def _theory_section(theory: dict[str, Any], scale: str) -> Section:
    section = Section("theory", THEORY_TITLE, [Text("The paper: " + " ".join(THEORY_PAPER))])
    if "error" in theory:
        section.blocks.append(Bullets([f"not run: {theory['error']}"]))
        return section
    rows = []
    slack = THEORY_SLACK
    for title, sweep in theory["theorem1"].items():
        for n in sorted({r["n"] for r in sweep["rows"]}):
            at_n = [r for r in sweep["rows"] if r["n"] == n]
            learners = [r for r in at_n if r["learner"] != "oracle" and r.get("robust") is not None]
            best = max(learners, key=lambda r: r["robust"]) if learners else None
            bound = min(at_n[0]["bound"], 1)
            verdict = CANNOT if best is None else HOLDS if best["robust"] <= bound + slack else FAILS
            rows.append(
                {
                    "claim": f"Theorem 1, {title}, n = {n}: every learner's robust accuracy is at most the bound",
                    "paper": f"<= {bound:.3f}",
                    "ours": f"{best['robust']:.3f} ({best['learner']}, the best learner)" if best else "n/a",
                    "verdict": verdict,
                    "rule": f"holds if the best learner's measured robust accuracy is at most the bound + {slack:g} "
                    "(the Monte-Carlo error of the test draws)",
                }
            )
    two = theory["theorem2"]
    sufficient = two["settings"]["sufficient_n"]
    enough = [r for r in two["rows"] if r["n"] >= sufficient]
    if enough:
        value = enough[0]["robust"]
        rows.append(
            {
                "claim": f"Theorem 2, d = {two['settings']['d']}, n = {enough[0]['n']} >= {sufficient}: "
                "1-NN robust accuracy is at least 0.99",
                "paper": ">= 0.99",
                "ours": f"{value:.3f}",
                "verdict": HOLDS if value >= 0.99 - slack else FAILS,
                "rule": f"holds if the measured robust accuracy is at least 0.99 - {slack:g}",
            }
        )
    section.blocks.append(Table(rows, CLAIM_COLUMNS, "The theorems' bounds, tested"))
    section.blocks += [Figure(path, path.stem.replace("theorem", "Theorem ")) for path in theory["figures"]]
    settings = THEORY_SETTINGS[scale]
    section.blocks.append(
        Bullets(
            [
                f"command: robustlab theory theorem1 {_flags(settings.theorem1)} --fixed-d {settings.fixed_d}",
                f"command: robustlab theory theorem2 {_flags(settings.theorem2)}",
                f"code: {_commit()}; hardware: {_hardware()}; {duration(theory['seconds'])} here",
            ]
        )
    )
    return section


def _flags(arguments: dict[str, Any]) -> str:
    """A sweep's keyword arguments as `robustlab theory` flags (``ns`` is ``--sizes``)."""
    names = {"ns": "sizes"}
    return " ".join(f"--{names.get(k, k).replace('_', '-')} {param_text(v)}" for k, v in arguments.items())


def _provenance(result: PartResult, scale: str, runs_root: Path, overrides: list[str]) -> Bullets:
    items = [f"command: {job.command(scale, runs_root, overrides)}" for job in result.jobs]
    for report in result.reports:
        p = report.provenance
        items.append(
            f"{report.experiment} ({p.get('dataset')}): {report.runs_done} runs done, {report.runs_missing} missing; "
            f"trained on {', '.join(p.get('devices') or ['-'])} (torch {', '.join(p.get('torch') or ['-'])}), "
            f"{p.get('train_hours', 0):.2f} training hours in all"
        )
    items.append(f"code: {_commit()}; hardware of this invocation: {_hardware()}")
    items.append(f"time in this invocation: {duration(result.seconds)}")
    return Bullets(items)


def _dataset(report: Report) -> str:
    return str(report.provenance.get("dataset", ""))


def _commit() -> str:
    """The git commit of the robustlab source, with a mark for uncommitted changes; else the version."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return f"robustlab {_version()} (not a git checkout)"
    if commit.returncode != 0:
        return f"robustlab {_version()} (not a git checkout)"
    return f"commit {commit.stdout.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robustlab")
    except PackageNotFoundError:
        return "(not installed)"


def _hardware() -> str:
    import torch

    cpus = f"{platform.processor() or platform.machine()}, {_cpu_count()} CPU cores"
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"{cpus}; {torch.cuda.device_count()} GPU(s): {', '.join(names)}"
    return f"{cpus}; no GPU"


def duration(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )
