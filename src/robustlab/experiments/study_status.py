"""Where a whole reproduction stands (``robustlab reproduce --status``): per section of the
paper, its runs queued, pending in SLURM (with SLURM's reason), running, done, failed or
interrupted, and the device-hours spent and left. Read from the run store, its claims and
squeue; nothing is trained or submitted."""

from __future__ import annotations

from collections import Counter
from typing import Any

from robustlab.experiments import slurm
from robustlab.experiments.experiment import get_experiment
from robustlab.experiments.launch import point_states
from robustlab.runs.store import RunStore, point_key

STATES = ("queued", "pending", "running", "interrupted", "done", "failed")


def study_status(sections: list[tuple[str, list[Any]]], store: RunStore) -> list[dict[str, Any]]:
    """One row per section: ``sections`` are (section id, its experiments' setups), and a
    setup that cannot be built yet (lr=searched before the search is done) is an exception
    in place of the setup."""
    rows = []
    for section, setups in sections:
        configs, waits = [], []
        for setup in setups:
            if isinstance(setup, Exception):
                waits.append(str(setup))
                continue
            try:  # a sweep's points, too, may need what is not there yet (a lazy grid's data)
                sweeps = get_experiment(setup.experiment).sweeps(setup)
                configs += [point.config for sweep in sweeps for point in sweep.points()]
            except (ValueError, KeyError, FileNotFoundError) as error:  # lr=searched before the search is done
                waits.append(str(error))
        rows.append(_section_row(section, configs, waits, store))
    return rows


def _section_row(section: str, configs: list, waits: list[str], store: RunStore) -> dict[str, Any]:
    states = point_states(configs, store)
    keys = {point_key(config) for config, state in zip(configs, states) if state["state"] == "queued"}
    reasons = slurm.pending_reasons(store, keys) if keys and slurm.submitted(store) else {}
    counts: Counter[str] = Counter()
    why: Counter[str] = Counter()
    for config, state in zip(configs, states):
        reason = reasons.get(point_key(config)) if state["state"] == "queued" else None
        counts["pending" if reason else state["state"]] += 1
        if reason:
            why[reason] += 1
    hours = [state["row"].results.train_time_s / 3600 for state in states if state["row"] and state["row"].results]
    left = len(configs) - counts["done"]
    row: dict[str, Any] = {"section": section, "runs": len(configs), **{state: counts[state] for state in STATES}}
    row["reason"] = ", ".join(f"{reason} ({n})" for reason, n in why.items()) or (
        _first_clause(waits[0]) if waits else ""
    )
    row["hours spent"] = sum(hours)
    row["hours left"] = left * sum(hours) / len(hours) if hours else (0.0 if not left and not waits else None)
    return row


def _first_clause(error: str, width: int = 70) -> str:
    """Why a section cannot list its runs yet, short enough for a table cell (--json has no more)."""
    text = "not ready: " + error.split(": expected")[0].split("; ")[0]
    return text if len(text) <= width else text[: width - 3] + "..."
