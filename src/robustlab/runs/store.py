"""The one results store: a directory per run and a SQLite index over all runs.

A run directory holds::

    config.yaml       the resolved ExperimentConfig
    metrics.jsonl     one JSON object per logged step/epoch (append-only)
    results.json      final results (written atomically)
    checkpoint.pt     the resumable training state (written atomically)
    model.pt          the final weights (written atomically)

Every whole-file write goes to a temporary file in the same folder, is fsynced and then
renamed over the target (``robustlab.files``), so a killed process leaves either the old or
the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import ConfigError, ExperimentConfig, from_dict, read_yaml
from robustlab.files import append_json_lines, atomic_write_json, atomic_write_text, json_default, read_json
from robustlab.runs.results import RunResults

DEFAULT_ROOT_ENV = "ROBUSTLAB_RUNS"
INDEX_NAME = "index.sqlite"


# ---------------------------------------------------------------------------------------
# Run directories


class Run:
    """One run directory: its config, metrics log, results and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    model_path = property(lambda self: self.path / "model.pt")

    @property
    def id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return self.config_path.exists()

    def load_config(self) -> ExperimentConfig:
        if not self.config_path.exists():
            raise FileNotFoundError(
                f"{self.path} is not a robustlab run directory (no config.yaml); "
                "give the folder that `robustlab train` created"
            )
        data = read_yaml(self.config_path)  # a damaged file is a one-line error naming it
        try:
            return from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{self.config_path}: {error}") from None

    def save_config(self, config: ExperimentConfig) -> None:
        atomic_write_text(self.config_path, config.to_yaml())

    def log_metrics(self, record: dict[str, Any]) -> None:
        append_json_lines(self.metrics_path, [{"time": time.time(), **record}])

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill
                continue
        return records

    def save_results(self, results: RunResults) -> None:
        atomic_write_json(self.results_path, results.to_dict())

    def load_results(self) -> RunResults:
        if not self.results_path.exists():
            raise FileNotFoundError(f"{self.path} has no results.json yet: the run has not finished")
        return RunResults.from_dict(read_json(self.results_path))

    def write_json(self, name: str, data: Any) -> Path:
        """An extra result file of this run (e.g. certify.json), written atomically."""
        path = self.path / name
        atomic_write_json(path, data)
        return path


# ---------------------------------------------------------------------------------------
# The store: creates runs and keeps the SQLite index


@dataclass
class StoredRun:
    """One run as the index knows it."""

    path: str
    name: str
    status: str  # created | running | failed | done
    config: dict[str, Any]  # the config as stored (``config.config_from_dict`` parses it)
    results: RunResults | None  # None until the run is done


class RunStore:
    """A folder of runs with a SQLite index, so sweeps can be queried by config values."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(DEFAULT_ROOT_ENV, "runs"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / INDEX_NAME
        with self._connect() as db:
            db.execute(
                """CREATE TABLE IF NOT EXISTS runs (
                    run_id TEXT PRIMARY KEY, path TEXT NOT NULL, name TEXT,
                    status TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
                    config TEXT NOT NULL, results TEXT)"""
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.index_path, timeout=60)
        try:
            with db:  # commits, or rolls back on error
                yield db
        finally:
            db.close()

    def create(self, config: ExperimentConfig, run_dir: str | Path | None = None) -> Run:
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = self.root / f"{config.name}-{stamp}-{uuid.uuid4().hex[:6]}"
        run = Run(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_config(config)
        self.record(run, config, status="created")
        return run

    def record(
        self,
        run: Run,
        config: ExperimentConfig,
        status: str,
        results: RunResults | None = None,
    ) -> None:
        now = time.time()
        with self._connect() as db:
            db.execute(
                """INSERT INTO runs (run_id, path, name, status, created, updated, config, results)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status=excluded.status,
                   updated=excluded.updated, config=excluded.config,
                   results=COALESCE(excluded.results, runs.results)""",
                (
                    str(run.path.resolve()),
                    str(run.path.resolve()),
                    config.name,
                    status,
                    now,
                    now,
                    json.dumps(config.to_dict()),
                    None if results is None else json.dumps(results.to_dict(), default=json_default),
                ),
            )

    def query(self, status: str | None = None, **where: Any) -> list[StoredRun]:
        """Runs whose config matches, e.g. ``query(**{"optim.lr": 0.1, "data.subset_size": 390})``."""
        sql, args = "SELECT path, name, status, config, results FROM runs WHERE 1=1", []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        for key, value in where.items():
            sql += " AND json_extract(config, ?) IS ?"
            args += [f"$.{key}", value]
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY created", args).fetchall()
        return [
            StoredRun(
                path, name, state, json.loads(config), RunResults.from_dict(json.loads(results)) if results else None
            )
            for path, name, state, config, results in rows
        ]
