"""Tables of the experiments: markdown text for people, JSON for programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.files import atomic_write_json, atomic_write_text


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; floats with two decimals, missing cells empty."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_table(
    rows: list[dict[str, Any]],
    path_stem: str | Path,
    columns: list[str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json`` (rows and notes) and ``<stem>.md`` (table, then notes)."""
    stem = Path(path_stem)
    text = markdown_table(rows, columns) + "".join(f"\n\n{note}" for note in notes or [])
    paths = {"json": stem.with_suffix(".json"), "text": stem.with_suffix(".md")}
    atomic_write_json(paths["json"], {"rows": rows, "notes": notes or []})
    atomic_write_text(paths["text"], text + "\n")
    return paths


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)
