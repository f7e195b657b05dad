"""`robustlab runs`: list a run store, rebuild its index from the run folders, merge stores."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from robustlab.cli.common import Subparsers, add_json_flag, emit, format_table
from robustlab.config import PAPER_EPS, ConfigError, parse_override
from robustlab.files import json_default

if TYPE_CHECKING:
    from robustlab.runs.store import StoredRun

STATUSES = ("created", "running", "interrupted", "failed", "done")


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list runs, rebuild the run index, merge run stores",
        description="The run folders are the source of truth; index.sqlite in the runs root lists them "
        "(by their path relative to the root, so a root can be copied, moved and merged).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the runs of a store, oldest first")
    _add_root(listing)
    listing.add_argument("--status", choices=STATUSES, help="only runs in this state")
    listing.add_argument("--name", help="only runs whose name contains this text")
    listing.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has this value, e.g. --where data.subset_size=390 (repeatable)",
    )
    add_json_flag(listing)
    listing.set_defaults(func=list_runs)

    reindex = actions.add_parser(
        "reindex",
        help="rebuild index.sqlite from the run folders (after it was deleted or damaged)",
        description="Reads every run folder of the root and writes a new index of them. A run that trains "
        "meanwhile is listed as interrupted until it next records its progress.",
    )
    _add_root(reindex)
    add_json_flag(reindex)
    reindex.set_defaults(func=rebuild_index)

    merge = actions.add_parser(
        "merge",
        help="copy the runs of other stores (e.g. filled on other nodes) into one",
        description="Copies each run folder of FROM into INTO and indexes it, except a run of a point that "
        "INTO has finished (same result-relevant config), and a run INTO already holds.",
    )
    merge.add_argument("into", metavar="INTO", help="the runs root to merge into (created if missing)")
    merge.add_argument("sources", nargs="+", metavar="FROM", help="runs roots to copy from")
    add_json_flag(merge)
    merge.set_defaults(func=merge_stores)


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-root", help="run store folder (default: $ROBUSTLAB_RUNS or ./runs)")


def list_runs(args: argparse.Namespace) -> int:
    from robustlab.runs.store import RunStore  # imported when the command runs, not for --help

    where = {}
    for text in args.where:
        path, value = parse_override(text)
        if value is None:
            raise ConfigError(f"--where '{text}': expected KEY=VALUE, e.g. data.subset_size=390")
        where[".".join(path)] = value
    store = RunStore(args.runs_root, create=False)
    rows = (
        row for row in store.iter_query(status=args.status, **where) if not args.name or args.name in (row.name or "")
    )
    if args.json:  # streamed: a store of 10,000 runs is never in memory at once
        _print_json_array(json.dumps(row.to_dict(), indent=2, default=json_default) for row in rows)
    else:
        summaries, interrupted = [], []  # the table's widths need every row: keep only its cells
        for row in rows:
            summaries.append(_summary(row))
            if row.status == "interrupted":
                interrupted.append(row)
        print(format_table(summaries) + _resume_hint(interrupted))
    return 0


def _print_json_array(items: Iterator[str]) -> None:
    """Write what ``json.dump(list(items), indent=2)`` writes, one item at a time."""
    count = 0
    for count, item in enumerate(items, 1):
        sys.stdout.write(("[\n  " if count == 1 else ",\n  ") + item.replace("\n", "\n  "))
    sys.stdout.write("\n]\n" if count else "[]\n")


def _resume_hint(rows: list) -> str:
    """How to continue each interrupted run, one command a line (its own checkpoint resumes it)."""
    return "".join(
        f"\n{row.id} was interrupted; continue it with: robustlab train --resume {shlex.quote(row.path)}"
        for row in rows
        if row.status == "interrupted"
    )


def _summary(row: StoredRun) -> dict[str, Any]:
    config, results = row.config, row.results_data or {}
    cra = _cra_at(results.get("cra") or [], PAPER_EPS)
    accuracy = results.get("accuracy")
    return {
        "run": row.id,
        "status": row.status,
        "model": config.get("model", {}).get("name"),
        "data": config.get("data", {}).get("name"),
        "N": config.get("data", {}).get("subset_size"),
        "epochs": config.get("train", {}).get("epochs"),
        "seed": config.get("seed"),
        "accuracy": None if accuracy is None else 100 * accuracy,
        "CRA 36/255": None if cra is None else 100 * cra,
        "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(row.updated)),
        "error": row.error,
    }


def _cra_at(points: list[dict[str, Any]], eps: float) -> float | None:
    """``RunResults.cra_at`` on the stored data: a listing of thousands of runs builds no result objects."""
    for point in points:
        if math.isclose(point["eps"], eps, rel_tol=1e-9, abs_tol=1e-12):
            return point["cra"]
    return None


def rebuild_index(args: argparse.Namespace) -> int:
    from robustlab.runs.store import RunStore

    store, unreadable = RunStore.reindex(args.runs_root)
    indexed = sum(1 for _ in store.iter_query())  # counted one run at a time: memory flat in the store's size
    summary = {"index": str(store.index_path), "runs": indexed, "unreadable": [str(p) for p in unreadable]}
    emit(
        args,
        summary,
        lambda s: (
            f"{s['index']}: {s['runs']} runs indexed"
            + "".join(f"\nskipped {path}: its config.yaml cannot be read" for path in s["unreadable"])
        ),
    )
    return 0


def merge_stores(args: argparse.Namespace) -> int:
    from robustlab.runs.store import RunStore

    store = RunStore(args.into)
    outcomes = {str(source): store.merge(source) for source in args.sources}
    emit(
        args,
        outcomes,
        lambda merged: "\n".join(
            f"{source}: " + ", ".join(f"{len(ids)} {kind}" for kind, ids in outcome.items())
            for source, outcome in merged.items()
        ),
    )
    return 0
