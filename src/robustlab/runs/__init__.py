"""Run folders and their SQLite index: ``RunStore(root)`` (``runs.store``), results
(``runs.results``), checkpoints and weights files (``runs.checkpoint``)."""

from robustlab.runs.store import Run, RunStore, StoredRun

__all__ = ["Run", "RunStore", "StoredRun"]
