"""Every 1-Lipschitz layer family in one architecture under one budget, after "1-Lipschitz
layers compared" ([31]): accuracy, CRA at 36, 72, 108 and 255 (/255), seconds per epoch,
peak training memory and parameters; one table and one figure (CRA against training time).

The families are the ``LAYER_FAMILIES`` registry's at the time of the call, so a family
added there appears here unchanged (``--param families=aol,bro`` picks some). Each family
fills the architecture templates of the scale (``{family}`` in a model name).

Budget: ``epochs`` per run, or ``budget_s`` seconds of training per run, [31]'s protocol: it
measured each model's time per epoch and trained it for budget / that many epochs. The
measurement (``robustlab.train.cost``: parameters, seconds per step, peak memory, on the
config's device) is kept in ``<runs>/layer_comparison/costs.json``, so later calls see the
same epochs and find the runs they trained; the table reports the runs' own measured
seconds per epoch. [31] also tuned lr and weight decay per family and size by random
search; here every family trains with one lr (``--param lr``), so a family that wants
another can lose on lr alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from robustlab.config import ConfigError, ExperimentConfig
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup
from robustlab.experiments.readout import cra_column, mean_over_seeds, seed_mean_table
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.files import atomic_write_json
from robustlab.report.plots import Curve, Panel, plot_panels

REPORT_EPS = (36 / 255, 72 / 255, 108 / 255, 1.0)
COSTS_FILE = Path("layer_comparison") / "costs.json"
OFFSET_31 = 2 * math.sqrt(2) * 36 / 255  # [31]'s OffsetCrossEntropy offset (temperature 1/4)

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "models": ("lipconvnet-{family}",),
        "kwargs": {"width": 4, "depth": 1},
        "families": (),  # (): every registered family
        "epochs": 0.3,
        "budget_s": 0.0,  # > 0: seconds of training per run instead of ``epochs``
        "lr": 0.1,
        "seeds": (0,),
    },
    "demo": {  # the CPU miniature: every family for the same seconds, on built-in data
        "dataset": "digits",
        "preset": "digits",
        "models": ("lipconvnet-{family}",),
        "kwargs": {"width": 16, "depth": 1},
        "families": (),
        "epochs": 0.0,
        "budget_s": 20.0,
        "lr": 0.1,
        "seeds": (0,),
    },
    "small": {
        "dataset": "cifar10",
        "models": ("convnet-xs-{family}",),
        "kwargs": {},
        "families": (),
        "epochs": 0.0,
        "budget_s": 120.0,
        "lr": 0.1,
        "seeds": (0,),
        "config": {"loss.offset": OFFSET_31},
    },
    "paper": {
        "dataset": "cifar10",
        "models": tuple(f"convnet-{size}-{{family}}" for size in ("xs", "s", "m", "l")),
        "kwargs": {},
        "families": (),
        "epochs": 0.0,
        "budget_s": 24 * 3600.0,
        "lr": 0.1,
        "seeds": (0,),
        "config": {"loss.offset": OFFSET_31},
    },
}


def families(setup: Setup) -> list[str]:
    # The registry fills as the layer modules load, with torch: imported here, not at the top,
    # so that the other experiments' sweeps (and --status) do without torch.
    from robustlab.nn.lipschitz import LAYER_FAMILIES

    chosen = list(setup.params["families"]) or LAYER_FAMILIES.names()
    for name in chosen:
        LAYER_FAMILIES.get(name)  # an unknown family fails here, naming the known ones
    return chosen


def sweeps(setup: Setup) -> list[Sweep]:
    params = setup.params
    if (params["budget_s"] > 0) == (params["epochs"] > 0):
        raise ConfigError(
            "layer_comparison: give exactly one budget, --param epochs=E or --param budget_s=SECONDS "
            f"(got epochs={params['epochs']}, budget_s={params['budget_s']}); set the other to 0"
        )
    result = []
    for family in families(setup):
        for template in params["models"]:
            model = template.format(family=family)
            settings = {"model.name": model, "model.kwargs": params["kwargs"], "optim.lr": params["lr"]}
            base = setup.base_config({**settings, "train.epochs": params["epochs"] or 1.0})
            if params["budget_s"] > 0:
                from robustlab.runtime import resolve_device  # torch: only when a budget is to be measured

                cost = training_cost(setup, base, resolve_device(base.train.device).type)
                assert cost is not None  # on the config's own device it is measured when not kept
                epochs = float(f"{params['budget_s'] / cost['seconds_per_epoch']:.3g}")
                base = setup.base_config({**settings, "train.epochs": epochs})
            name = setup.slug(model)
            result.append(Sweep(name=name, label=family, base=base, grid={"seed": list(params["seeds"])}))
    return result


def training_cost(setup: Setup, config: ExperimentConfig, device_type: str) -> dict[str, Any] | None:
    """The measured cost of ``config``'s model on ``device_type``: from the store's costs file,
    else measured now (and kept) when that device is here; None otherwise."""
    model, train = config.model, config.train
    key = json.dumps([model.name, model.kwargs, config.data.name, train.batch_size, train.precision, device_type])
    path = setup.store.root / COSTS_FILE if setup.store is not None else None
    known = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if key not in known:
        # torch and the data: only when a cost is measured here, not when it is kept
        from robustlab.data.splits import prepare_data
        from robustlab.runtime import resolve_device
        from robustlab.train.cost import measure_training_cost

        if device_type != resolve_device(config.train.device).type:
            return None
        known[key] = measure_training_cost(config, prepare_data(config.data)).to_dict()
        if path is not None:
            atomic_write_json(path, known)
    return known[key]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table = []
    for line in seed_mean_table(rows, "architecture", lambda config: config.model.name, REPORT_EPS):
        group = [r for r in rows if r.label == line["model"] and r.config.model.name == line["architecture"]]
        family, architecture, seeds = line.pop("model"), line.pop("architecture"), line.pop("seeds")
        table.append({"family": family, "architecture": architecture, **_costs(setup, group), "seeds": seeds, **line})
    times = [row["train time (s)"] for row in table if row["train time (s)"]]
    figure = plot_panels(
        _time_panels(table),
        out_dir / f"{setup.slug()}.png",
        xlabel="training time per run (s)",
        logx=bool(times) and max(times) > 10 * min(times),
        title=f"1-Lipschitz layers compared on {setup.dataset} ({setup.scale})",
    )
    return Report(
        "layer_comparison",
        f"1-Lipschitz layer families under one budget ({setup.dataset})",
        list(table[0]) if table else [],
        table,
        _notes(setup, rows),
        [figure],
    )


def _costs(setup: Setup, group: list[SweepRow]) -> dict[str, Any]:
    """Parameters and peak memory (measured), epochs, seconds per epoch and training time (the runs')."""
    results = [r.results for r in group if r.results is not None]
    cost = training_cost(setup, group[0].config, results[0].device.split(":")[0]) or {}  # "cuda" of "cuda:0"
    return {
        "parameters": cost.get("parameters"),
        "peak memory (MB)": cost.get("peak_memory_mb"),
        "s/epoch": mean_over_seeds([r.time_per_epoch_s for r in results]),
        "epochs": mean_over_seeds([r.epochs for r in results]),
        "train time (s)": mean_over_seeds([r.train_time_s for r in results]),
    }


def _time_panels(table: list[dict[str, Any]]) -> list[Panel]:
    """CRA at each radius against training time; one curve per family (across architectures)."""
    panels = []
    for eps in REPORT_EPS:
        column = cra_column(eps)
        curves = []
        for family in dict.fromkeys(row["family"] for row in table):
            points = sorted((r["train time (s)"], r[column]) for r in table if r["family"] == family)
            if points and all(value is not None for point in points for value in point):
                curves.append(Curve(family, [time for time, _ in points], [value for _, value in points]))
        panels.append(Panel(f"{column} (%)", curves))
    return panels


def _notes(setup: Setup, rows: list[SweepRow]) -> list[str]:
    """What every run had in common, read from the runs' configs (``--set`` may change them)."""
    params, configs = setup.params, [row.config for row in rows]
    budget = f"{params['budget_s']:g} s of training" if params["budget_s"] > 0 else f"{params['epochs']:g} epochs"
    kwargs = sorted({json.dumps(c.model.kwargs, sort_keys=True) for c in configs})
    lrs = sorted({c.optim.lr for c in configs})
    return [
        f"every family: {', '.join(params['models'])} with kwargs {', '.join(kwargs)}, {budget} per run, "
        f"batch {', '.join(sorted({str(c.train.batch_size) for c in configs}))}, peak lr "
        f"{', '.join(f'{lr:g}' for lr in lrs)}, seeds {', '.join(map(str, params['seeds']))}; "
        "[31] tuned lr and weight decay per family, this table does not.",
        "s/epoch and train time: the runs' own; parameters and peak memory: measured over a few training steps "
        "by robustlab.train.cost (CUDA: allocator peak; CPU: weights and optimizer state plus the resident set's rise).",
    ]


EXPERIMENTS.add(
    "layer_comparison",
    Experiment(
        name="layer_comparison",
        summary='[31] "1-Lipschitz layers compared": every layer family in one architecture under one budget',
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
