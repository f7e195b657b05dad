"""Tables of the experiments: markdown text for people, JSON for programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.files import atomic_write_json, atomic_write_text
from robustlab.progress import decimals_needed

SD = " sd"  # suffix of a column holding the standard deviation over seeds of another column


def with_spread(rows: list[dict[str, Any]], columns: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns without their `` sd`` partners, and rows whose values that have a standard
    deviation read ``mean ± sd`` (two decimals); for people, the JSON keeps both numbers."""
    shown = [c for c in columns if not (c.endswith(SD) and c.removesuffix(SD) in columns)]
    merged = []
    for row in rows:
        line = {}
        for column in shown:
            value, spread = row.get(column), row.get(column + SD)
            both = isinstance(value, float) and isinstance(spread, float)
            line[column] = f"{value:.2f} ± {spread:.2f}" if both else value
        merged.append(line)
    return shown, merged


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; floats with up to two decimals (as many as the column
    needs), missing cells empty, a value
    with a standard-deviation column as ``mean ± sd``."""
    if not rows:
        return "(no rows)"
    columns, rows = with_spread(rows, columns or list(rows[0]))
    decimals = {c: decimals_needed([row.get(c) for row in rows], 2) for c in columns}  # 20 epochs, not 20.00
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c), decimals[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_table(
    rows: list[dict[str, Any]],
    path_stem: str | Path,
    columns: list[str] | None = None,
    notes: list[str] | None = None,
    fits: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json`` (rows, notes and any scaling-law ``fits``) and ``<stem>.md`` (table, then notes)."""
    stem = Path(path_stem)
    text = markdown_table(rows, columns) + "".join(f"\n\n{note}" for note in notes or [])
    paths = {"json": stem.with_suffix(".json"), "text": stem.with_suffix(".md")}
    atomic_write_json(paths["json"], {"rows": rows, "notes": notes or [], **({"fits": fits} if fits else {})})
    atomic_write_text(paths["text"], text + "\n")
    return paths


def _cell(value: Any, decimals: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return "" if value is None else str(value)
