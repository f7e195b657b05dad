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

The run folders are the source of truth. ``index.sqlite`` in the runs root indexes them by
their path relative to the root (so a root can be copied, moved and merged with another),
and holds the claims and heartbeats that let many processes train from one root
(``robustlab.runs.claims``); ``RunStore.reindex`` rebuilds it from the folders.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from robustlab.config import SPEED_OPTIONS, ConfigError, ExperimentConfig, config_from_dict, from_dict, read_yaml
from robustlab.errors import RobustlabError, one_line
from robustlab.files import (
    DiskFullError,
    append_json_lines,
    atomic_write_json,
    atomic_write_text,
    disk_full_error,
    free_bytes,
    is_disk_full,
    json_default,
    mount_of,
    read_json,
    remove_stale_temporaries,
)
from robustlab.records import ARCHITECTURE_VERSION
from robustlab.registry import did_you_mean
from robustlab.runs.claims import WORKER_COLUMNS, WORKER_JOIN, is_live, worker_id
from robustlab.runs.result_files import RunResults

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
            runs = [p.parent.name for p in self.path.parent.glob("*/config.yaml")]  # for a typo's "did you mean"
            raise FileNotFoundError(
                f"{self.path} is not a robustlab run directory (no config.yaml)"
                f"{did_you_mean(self.path.name, runs)}; give the folder that "
                "`robustlab train` created (`robustlab runs list` lists them)"
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
        """The logged records. Damaged lines at the end (a write that a kill cut short) are
        left out; a damaged line that sound records follow, or bytes that are not UTF-8, is a
        ``MetricsError`` naming the file and line: history is never dropped unseen."""
        return self._read_metrics()[0]

    def rewind_metrics(self, step: int) -> Path | None:
        """Keep the records up to ``step`` (a resumed run trains the later ones again). Damaged
        lines at the end move to ``metrics.jsonl.damaged-N`` (returned), never deleted."""
        records, damaged = self._read_metrics()
        aside = None
        if damaged:
            aside = next(
                path
                for n in range(1, 10**6)
                if not (path := self.metrics_path.with_name(f"{self.metrics_path.name}.damaged-{n}")).exists()
            )
            atomic_write_text(aside, "".join(damaged))
        kept = [record for record in records if record.get("step", 0) <= step and not record.get("final")]
        atomic_write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in kept))
        return aside

    def _read_metrics(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(the records, the damaged lines after the last sound one)."""
        path = self.metrics_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], []
        try:
            text = data.decode()
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise MetricsError(
                f"{path} line {line} is not UTF-8 text (byte {error.start}): the file was damaged; "
                "repair or delete that line, then retry"
            ) from None
        parts = text.split("\n")  # not splitlines(): a line separator inside a JSON string is no line end
        lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = _metrics_record(line)
            if record is None:
                following = sum(_metrics_record(later) is not None for later in lines[number:])
                if following:
                    raise MetricsError(
                        f"{path} line {number} is not a metrics record ({line.strip()[:40]!r}) and {following} "
                        "records follow it: repair or delete that line, then retry"
                    )
                return records, lines[number - 1 :]
            records.append(record)
        return records, []

    def save_results(self, results: RunResults) -> None:
        atomic_write_json(self.results_path, results.to_dict())

    def load_results(self) -> RunResults:
        """``results.json``; a file that is not a robustlab results file is a ``ResultsFileError``."""
        if not self.results_path.exists():
            raise FileNotFoundError(f"{self.path} has no results.json yet: the run has not finished")
        data = read_json(self.results_path)
        try:
            return RunResults.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            problem = f"no {error}" if isinstance(error, KeyError) else one_line(error)
            raise ResultsFileError(
                f"{self.results_path} is not a robustlab results file ({problem}); "
                "train the run again or restore the file"
            ) from None

    def write_json(self, name: str, data: Any) -> Path:
        """An extra result file of this run (e.g. certify.json), written atomically."""
        path = self.path / name
        atomic_write_json(path, data)
        return path


class ResultsFileError(RobustlabError, ValueError):
    """A results.json that is JSON but not a run's results."""


class MetricsError(RobustlabError):
    """A run's metrics.jsonl is damaged where dropping the damage would drop history."""


def _metrics_record(line: str) -> dict[str, Any] | None:
    """One line of metrics.jsonl as a record, or None for a damaged line."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step", 0)
    return record if isinstance(step, int) and not isinstance(step, bool) else None


# ---------------------------------------------------------------------------------------
# Which runs are the same

# Keys that change where or how fast a run executes, never its result. (The speed options
# run other kernels, so the last digits may differ, as they do between devices;
# train.precision changes the arithmetic itself and stays part of a run's identity.)
EXECUTION_KEYS = (
    "name",
    "train.device",
    "train.checkpoint_every",
    "train.log_to",
    "data.data_dir",
    "data.download",
    *(f"train.{option}" for option in SPEED_OPTIONS),
)


def result_key(config: ExperimentConfig | dict[str, Any]) -> dict[str, Any]:
    """The config as plain data without the keys that cannot change its result."""
    data = json.loads(json.dumps(config.to_dict() if isinstance(config, ExperimentConfig) else config))
    for dotted in EXECUTION_KEYS:
        *sections, last = dotted.split(".")
        node = data
        for section in sections:
            node = node.get(section, {})
        node.pop(last, None)
    if data.get("data", {}).get("subset_size") is None:  # epochs are scaled to a subset's size only
        data.get("train", {}).pop("scale_epochs", None)
    return data


def point_key(config: ExperimentConfig) -> str:
    """A short name of ``result_key(config)``: the key of a sweep point's claim."""
    return hashlib.sha256(json.dumps(result_key(config), sort_keys=True).encode()).hexdigest()[:32]


def _match_name(key: dict[str, Any]) -> str:
    """A short name of a result key that two keys share when they are equal (``==``: the
    YAML of a config may write 1 where the config held 1.0): the ``points`` cache's key."""
    return hashlib.sha256(json.dumps(_integral(key), sort_keys=True).encode()).hexdigest()[:32]


def _integral(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@functools.cache
def config_schema() -> str:
    """A name of what ``point_key`` depends on: the config's keys and defaults and the
    execution keys. Point keys cached under another schema are computed again."""
    described = {"defaults": ExperimentConfig().to_dict(), "execution": EXECUTION_KEYS}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stored_point(config_json: str) -> str:
    """The point key of a config as the index stores it ('' for one this robustlab cannot read)."""
    key = _stored_result_key(json.loads(config_json))
    return "" if key is None else _match_name(key)


def _stored_result_key(stored: dict[str, Any]) -> dict[str, Any] | None:
    # Parsed again so that a config key added since the run was stored takes its default:
    # a new option whose default keeps the old behaviour leaves finished runs matched.
    try:
        return result_key(config_from_dict(stored))
    except ConfigError:  # written by a robustlab with other config keys: not comparable
        return None


def _size(path: Path) -> int:
    """A file's size in bytes; 0 for one that does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _current_architecture(row: StoredRun) -> bool:
    # A finished run of an older architecture version measured another function; an
    # unfinished one is left to resuming, which refuses weights that no longer fit.
    version = row.results.architecture_version if row.results else 1
    return row.status != DONE or version == ARCHITECTURE_VERSION


# ---------------------------------------------------------------------------------------
# The store: creates runs and keeps the SQLite index

DONE, INTERRUPTED = "done", "interrupted"
IN_PROGRESS = ("created", "running")  # statuses of a run whose process is (or was) training it
RESUMABLE = ("failed", INTERRUPTED)
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0  # how long a write waits for another process's transaction
SQLITE_FULL = 13  # sqlite3.SQLITE_FULL (Python 3.11+; written out for 3.10)
# SQLite's own verdicts on a file that is no index: SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)
NOT_A_DATABASE = {11: "database disk image is malformed", 26: "file is not a database"}
LOW_SPACE_BYTES = 1 << 20  # an I/O error of the index with less space left than this is a full disk
TABLES = {
    # run_id: the run folder's path relative to the root (absolute for a folder outside it)
    "runs": "run_id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, "
    "config TEXT NOT NULL, results TEXT, error TEXT, worker TEXT",
    "claims": "key TEXT PRIMARY KEY, sweep TEXT, state TEXT NOT NULL, worker TEXT, run_id TEXT, "
    "attempts INTEGER NOT NULL, error TEXT, updated REAL NOT NULL",
    "workers": "worker TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL",
}
COLUMNS = {table: [column.split()[0] for column in spec.split(", ")] for table, spec in TABLES.items()}
# A cache beside the tables above: each run's point key (``point_key`` of its stored config) as
# this robustlab's config schema computes it, so that a sweep finds its runs by key without
# parsing every config of the store. Robustlabs that do not know it ignore it; a key that
# another schema computed is computed again when first needed.
POINTS = "points"
REBUILD_BATCH = 500  # run folders read between two writes of a rebuild
POINTS_SPEC = "run_id TEXT PRIMARY KEY, schema TEXT NOT NULL, config TEXT NOT NULL, point TEXT NOT NULL"
# a cached key holds while its run's stored config is the text it was computed from
FRESH_POINT = "p.run_id = r.run_id AND p.schema = ? AND p.config = r.config"
# robustlab 0.1's index: one table, runs keyed by their absolute path (a copied root lost its runs)
SCHEMA_1_RUNS = ["run_id", "path", "name", "status", "created", "updated", "config", "results"]
# WAL needs memory shared between the processes, which these file systems do not give across hosts
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "fuse.sshfs"}


class IndexBusyError(RobustlabError):
    """Another process held the index's write lock for longer than ``BUSY_TIMEOUT_S``."""


class DamagedIndexError(RobustlabError):
    """The index file is not a robustlab index; the run folders can rebuild it."""


@dataclass
class StoredRun:
    """One run as the index knows it."""

    path: str  # absolute
    name: str
    status: str  # created | running | failed | interrupted | done
    config: dict[str, Any]  # the config as stored (``config.config_from_dict`` parses it)
    results_data: dict[str, Any] | None  # results.json's data as indexed; None until the run is done
    id: str = ""  # the run folder relative to the runs root (the index's key)
    error: str | None = None  # why it failed, in one line
    created: float = 0.0
    updated: float = 0.0

    @property
    def results(self) -> RunResults | None:
        """The typed results, parsed when first read (a listing of 10,000 runs parses none)."""
        if self.results_data is None:
            return None
        if "_results" not in self.__dict__:
            self.__dict__["_results"] = RunResults.from_dict(self.results_data)
        return self.__dict__["_results"]

    def to_dict(self) -> dict[str, Any]:
        # shallow (no deep copy through asdict): a listing of 10,000 runs spent seconds copying configs
        return {"results" if f.name == "results_data" else f.name: getattr(self, f.name) for f in fields(self)}


class RunStore:
    """A folder of runs with a SQLite index, so sweeps can be queried by config values.

    The run folders are the source of truth; the index (``index.sqlite``) lists them by their
    path relative to the root, so a root can be copied or moved, and ``RunStore.reindex``
    rebuilds it from the folders. Many processes may write it at once: it runs in WAL mode
    (the rollback journal on network file systems) and every write waits up to
    ``BUSY_TIMEOUT_S`` for the others. It also holds the claims on sweep points and the
    heartbeats of the processes that train (``robustlab.runs.claims``).
    """

    def __init__(self, root: str | Path | None = None, create: bool = True):
        """``create=False`` (every command that only reads) refuses a root that does not
        exist: a typo must not look like an empty store."""
        self._locate(root, create)
        self._open()

    def _locate(self, root: str | Path | None, create: bool) -> None:
        self.root = Path(root or os.environ.get(DEFAULT_ROOT_ENV, "runs"))
        if self.root.exists() and not self.root.is_dir():
            raise RobustlabError(f"runs root {self.root} is a file; give a folder (--runs-root or ${DEFAULT_ROOT_ENV})")
        if not create and not self.root.exists():
            raise RobustlabError(
                f"runs root {self.root} does not exist; give the folder of an existing run store "
                f"(--runs-root or ${DEFAULT_ROOT_ENV})"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(self.root) from None
            raise
        self._resolved_root = self.root.resolve()
        self.index_path = self.root / INDEX_NAME

    # -- the index file ------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode; write through ``transaction``."""
        db = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            yield db
        except sqlite3.OperationalError as error:
            if self._disk_full(error):
                raise self._index_disk_full() from None
            if "locked" in str(error) or "busy" in str(error):
                raise IndexBusyError(
                    f"{self.index_path} is locked by another process ({error}, after waiting {BUSY_TIMEOUT_S:g} s)"
                ) from None
            if "unable to open" in str(error):
                raise RobustlabError(f"{self.index_path}: {error}") from None
            raise self._damaged(str(error)) from None
        except sqlite3.DatabaseError as error:
            raise self._damaged(str(error)) from None
        finally:
            db.close()

    def _index_disk_full(self) -> DiskFullError:
        # SQLite does not say how much it wanted to write: a transaction writes the pages it
        # changes (to the -wal file, or the journal and the file), up to the whole index when
        # ``reindex`` replaces every row, so the index's size is the figure a user can act on.
        index_bytes = sum(_size(Path(f"{self.index_path}{suffix}")) for suffix in ("", "-wal"))
        return disk_full_error(
            self.index_path, index_bytes, estimate="the size of the index, which a write may rewrite"
        )

    def _disk_full(self, error: sqlite3.OperationalError) -> bool:
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(error):
            return True
        # a -shm or -wal file that cannot grow is reported as an I/O error: look at the space left
        return "disk I/O error" in str(error) and free_bytes(self.root) < LOW_SPACE_BYTES

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its start (no lock upgrade can fail)."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _damaged(self, problem: str) -> DamagedIndexError:
        return DamagedIndexError(
            f"{self.index_path} is not a usable robustlab index ({problem}); the run folders are the source "
            f"of truth: rebuild it with `robustlab runs reindex --runs-root {self.root}`"
        )

    def _open(self) -> None:
        with self.connect() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                name: [column[1] for column in db.execute(f"PRAGMA table_info('{name}')")]
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        if tables == {"runs": SCHEMA_1_RUNS} and version == 0:
            self._rebuild(upgrade=True)  # an index of robustlab 0.1: its paths were absolute
        elif not tables:
            with self.transaction() as db:
                _create_tables(db)
        elif version != SCHEMA_VERSION or any(tables.get(table) != columns for table, columns in COLUMNS.items()):
            found = ", ".join(f"{name}({', '.join(columns)})" for name, columns in sorted(tables.items()))
            raise self._damaged(f"its tables are {found}, schema version {version}; expected version {SCHEMA_VERSION}")
        elif tables.get(POINTS) != [column.split()[0] for column in POINTS_SPEC.split(", ")]:
            with self.transaction() as db:  # an index of a robustlab without the cache (or another one)
                db.execute(f"DROP TABLE IF EXISTS {POINTS}")
                _create_tables(db)
        self._set_journal_mode()

    def _set_journal_mode(self) -> None:
        mode = "DELETE" if mount_of(self._resolved_root)[1] in NETWORK_FILE_SYSTEMS else "WAL"
        with self.connect() as db:
            db.execute(f"PRAGMA journal_mode={mode}")

    # -- runs ----------------------------------------------------------------------------

    def run_id(self, path: str | Path) -> str:
        """A run's key in the index: its folder relative to the root (absolute outside it)."""
        path = Path(path).resolve()
        return (
            path.relative_to(self._resolved_root).as_posix() if path.is_relative_to(self._resolved_root) else str(path)
        )

    def create(self, config: ExperimentConfig, run_dir: str | Path | None = None) -> Run:
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = self.root / f"{config.name}-{stamp}-{uuid.uuid4().hex[:6]}"
        run = Run(run_dir)
        made = not run.path.exists()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            run.save_config(config)
            self.record(run, config, status="created")
        except BaseException:  # a full disk, a locked index: no folder is left behind
            run.config_path.unlink(missing_ok=True)
            if made:
                with suppress(OSError):
                    run.path.rmdir()
            raise
        return run

    def record(
        self,
        run: Run,
        config: ExperimentConfig,
        status: str,
        results: RunResults | None = None,
        error: str | None = None,
    ) -> None:
        """Index the run's status (``error``: one line, for a failed run). A ``created`` or
        ``running`` run belongs to this process, and reads ``interrupted`` once it stops beating."""
        now = time.time()
        stored_config = json.dumps(config.to_dict())
        with self.transaction() as db:
            db.execute(
                """INSERT INTO runs (run_id, name, status, created, updated, config, results, error, worker)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET name = excluded.name, status = excluded.status,
                   updated = excluded.updated, config = excluded.config,
                   results = COALESCE(excluded.results, runs.results), error = excluded.error,
                   worker = excluded.worker""",
                (
                    self.run_id(run.path),
                    config.name,
                    status,
                    now,
                    now,
                    stored_config,
                    None if results is None else json.dumps(results.to_dict(), default=json_default),
                    error,
                    worker_id() if status in IN_PROGRESS else None,
                ),
            )
            db.execute(
                f"INSERT OR REPLACE INTO {POINTS} VALUES (?, ?, ?, ?)",
                (self.run_id(run.path), config_schema(), stored_config, _match_name(result_key(config))),
            )

    def discard(self, run: Run) -> None:
        """Forget a run that never trained: its index row, its config, and its folder if now empty."""
        run.config_path.unlink(missing_ok=True)
        with suppress(OSError):  # a folder the user gave that holds other files stays
            run.path.rmdir()
        with self.transaction() as db:  # last: on a full disk this may fail, and the folder is gone already
            db.execute("DELETE FROM runs WHERE run_id = ?", (self.run_id(run.path),))
            db.execute(f"DELETE FROM {POINTS} WHERE run_id = ?", (self.run_id(run.path),))

    def query(self, status: str | None = None, **where: Any) -> list[StoredRun]:
        """Runs whose config matches, e.g. ``query(**{"optim.lr": 0.1, "data.subset_size": 390})``.

        A run whose process died reads ``interrupted`` (also for ``status``)."""
        return list(self.iter_query(status, **where))

    def iter_query(self, status: str | None = None, **where: Any) -> Iterator[StoredRun]:
        """``query``, one run at a time (a listing of many runs holds one in memory)."""
        sql, args = "", []
        for key, value in where.items():
            sql += " AND json_extract(r.config, ?) IS ?"
            args += [f"$.{key}", value]
        return self._select(status, sql, args)

    def _select(self, status: str | None, where_sql: str, args: list[Any]) -> Iterator[StoredRun]:
        sql = f"""SELECT r.run_id, r.name, r.status, r.created, r.updated, r.config, r.results, r.error,
                  {WORKER_COLUMNS} FROM runs r {WORKER_JOIN.format(table="r")} WHERE 1=1"""
        if status is not None and status not in (INTERRUPTED, *IN_PROGRESS):
            sql += " AND r.status = ?"
            args = [status, *args]
        root, now = str(self._resolved_root), time.time()
        with self.connect() as db:
            for run_id, name, state, created, updated, config, results, error, host, pid, beat in db.execute(
                sql + where_sql + " ORDER BY r.created", args
            ):
                if state in IN_PROGRESS and not is_live(host, pid, beat, now):
                    state = INTERRUPTED
                if status is None or state == status:
                    yield StoredRun(
                        os.path.join(root, run_id),  # an absolute run id (a folder outside the root) stays
                        name,
                        state,
                        json.loads(config),
                        json.loads(results) if results else None,
                        run_id,
                        error,
                        created,
                        updated,
                    )

    def find(self, config: ExperimentConfig, status: str | None = None) -> list[StoredRun]:
        """Rows (oldest first) of runs with the same result-relevant config (``result_key``);
        finished ones only when trained by this robustlab's architecture version."""
        return self.find_many([config], status)[0]

    def find_done(self, config: ExperimentConfig) -> StoredRun | None:
        return self.find_done_many([config])[0]

    def find_done_many(self, configs: list[ExperimentConfig]) -> list[StoredRun | None]:
        """``find_done`` of each config, in one pass over the index (a sweep's status)."""
        return [rows[-1] if rows else None for rows in self.find_many(configs, status=DONE)]

    def find_many(self, configs: list[ExperimentConfig], status: str | None = None) -> list[list[StoredRun]]:
        """``find`` of each config. The runs are found by their cached point keys (the
        ``points`` table), not by parsing every stored config."""
        wanted = [_match_name(result_key(config)) for config in configs]
        point_of = self._points_of(set(wanted))
        run_ids = sorted(point_of)
        rows: list[StoredRun] = []
        for start in range(0, len(run_ids), 500):  # SQLite limits the number of parameters
            part = run_ids[start : start + 500]
            rows += self._select(status, f" AND r.run_id IN ({', '.join('?' * len(part))})", part)
        by_point: dict[str, list[StoredRun]] = {}
        for row in sorted(rows, key=lambda row: row.created):
            if _current_architecture(row):
                by_point.setdefault(point_of[row.id], []).append(row)
        return [by_point.get(point, []) for point in wanted]

    def _points_of(self, points: set[str]) -> dict[str, str]:
        """{run id: point key} of the runs whose point key is one of ``points``."""
        schema = config_schema()
        with self.connect() as db:
            stale = db.execute(
                f"SELECT r.run_id, r.config FROM runs r LEFT JOIN {POINTS} p ON {FRESH_POINT} WHERE p.run_id IS NULL",
                (schema,),
            ).fetchall()
            found: dict[str, str] = {}
            for point in points:
                found.update(
                    db.execute(
                        f"""SELECT p.run_id, p.point FROM {POINTS} p JOIN runs r ON {FRESH_POINT}
                            WHERE p.schema = ? AND p.point = ?""",
                        (schema, schema, point),
                    ).fetchall()
                )
        if stale:  # runs indexed by merge or by another robustlab: their keys are computed once
            computed = [(run_id, schema, config, _stored_point(config)) for run_id, config in stale]
            found.update((run_id, point) for run_id, _, _, point in computed if point in points)
            # only a cache: a locked or read-only index computes them again next time
            with suppress(RobustlabError), self.transaction() as db:
                db.executemany(f"INSERT OR REPLACE INTO {POINTS} VALUES (?, ?, ?, ?)", computed)
        return found

    def find_unfinished(self, config: ExperimentConfig) -> StoredRun | None:
        """The newest interrupted or failed run of this config that left a checkpoint to resume
        from (never one that a live process trains)."""
        for row in reversed(self.find(config)):
            if row.status in RESUMABLE and Run(row.path).checkpoint_path.exists():
                return row
        return None

    # -- rebuilding and merging ----------------------------------------------------------

    @classmethod
    def reindex(cls, root: str | Path | None = None) -> tuple[RunStore, list[Path]]:
        """Rebuild the index of ``root`` from its run folders (a missing, damaged or foreign index
        included; a root that does not exist is an error); returns the store and the folders
        that could not be read. The claims of
        running sweeps stay when the file was a sound index."""
        store = cls.__new__(cls)
        store._locate(root, create=False)
        return store, store._rebuild()

    def _rebuild(self, upgrade: bool = False) -> list[Path]:
        if self.index_path.exists() and not self._is_database():
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
        unreadable: list[Path] = []
        run_columns = ", ".join("?" * len(COLUMNS["runs"]))
        with self.connect() as db:
            # The folders' rows go to a temporary table in batches (memory stays flat in the
            # number of runs, and no lock is held while folders are read), then replace the
            # index's rows in one short transaction: a reader sees the old index or the new one.
            db.execute("PRAGMA temp_store = FILE")
            db.execute(f"CREATE TEMP TABLE rebuilt ({TABLES['runs']})")
            db.execute(f"CREATE TEMP TABLE rebuilt_points ({POINTS_SPEC})")
            for batch in _batches(self._folder_rows(unreadable), REBUILD_BATCH):
                db.executemany(f"INSERT INTO temp.rebuilt VALUES ({run_columns})", [row for row, _ in batch])
                db.executemany(
                    "INSERT INTO temp.rebuilt_points VALUES (?, ?, ?, ?)",
                    [(row[0], config_schema(), row[5], point) for row, point in batch],
                )
            db.execute("BEGIN IMMEDIATE")
            try:
                if upgrade and db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                    db.execute("ROLLBACK")
                    return unreadable  # another process upgraded it first
                for table, columns in COLUMNS.items():  # claims and heartbeats of running sweeps stay
                    if table == "runs" or [c[1] for c in db.execute(f"PRAGMA table_info('{table}')")] != columns:
                        db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"DROP TABLE IF EXISTS {POINTS}")
                _create_tables(db)
                db.execute("INSERT INTO runs SELECT * FROM temp.rebuilt")
                db.execute(f"INSERT INTO {POINTS} SELECT * FROM temp.rebuilt_points")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        self._set_journal_mode()
        return unreadable

    def _is_database(self) -> bool:
        """Whether the index file is an SQLite database. Only SQLite's verdict on the file's
        contents says no: any other error (a full disk that cannot make the -shm file is a
        "disk I/O error") is raised as the store's one-line error, for ``_rebuild`` deletes
        what is no database, and a sound index holds the claims of running sweeps."""
        with self.connect() as db:
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as error:
                if _not_a_database(error):
                    return False
                raise
        return True

    def _folder_rows(self, unreadable: list[Path]) -> Iterator[tuple[tuple, str]]:
        """(index row, point key) of each run folder of the root; unreadable ones are added to ``unreadable``."""
        for folder in _run_folders(self.root):
            remove_stale_temporaries(folder)  # writes that a killed process left unfinished
            row = self._folder_row(folder)
            if row is None:
                unreadable.append(folder)
            else:
                yield row, _stored_point(row[5])

    def _folder_row(self, folder: Path) -> tuple | None:
        """The index row of a run folder, read from its files alone."""
        run = Run(folder)
        try:
            config = read_yaml(run.config_path)
        except ConfigError:
            return None
        try:
            results = run.load_results().to_dict() if run.results_path.exists() else None
        except (OSError, ValueError, KeyError, TypeError):  # unreadable results: the run did not finish
            results = None
        files = (run.config_path, run.metrics_path, run.checkpoint_path, run.results_path)
        times = [path.stat().st_mtime for path in files if path.exists()]
        return (
            self.run_id(folder),
            config.get("name"),
            DONE if isinstance(results, dict) else INTERRUPTED,
            min(times),
            max(times),
            json.dumps(config, default=str),
            json.dumps(results) if isinstance(results, dict) else None,
            None,
            None,
        )

    def merge(self, source: str | Path) -> dict[str, list[str]]:
        """Copy the runs of another runs root (e.g. filled on another node) into this one.

        A run already here by id is kept, unless only the other root finished it; a run of a
        point this root has finished (same ``result_key``) is a duplicate and stays out.
        Returns the run ids by outcome: copied, replaced, duplicate, present, unreadable.
        """
        source = Path(source)
        if not source.is_dir():
            raise RobustlabError(f"{source} is not a folder of runs; give the runs root to merge from")
        if source.resolve() == self._resolved_root:
            raise RobustlabError(f"cannot merge {source} into itself")
        outcome: dict[str, list[str]] = {
            key: [] for key in ("copied", "replaced", "duplicate", "present", "unreadable")
        }
        for folder in _run_folders(source):
            run_id = folder.relative_to(source).as_posix()
            theirs = self._folder_row(folder)
            if theirs is None:
                outcome["unreadable"].append(run_id)
                continue
            finished = theirs[2] == DONE
            ours = self._status_of(run_id)
            if ours is not None:
                kind = "replaced" if finished and ours != DONE else "present"
            else:
                kind = "duplicate" if self._has_finished_twin(theirs[5]) else "copied"
            if kind in ("copied", "replaced"):
                self._copy_in(folder, self.root / run_id)
                with self.transaction() as db:
                    db.execute(
                        f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(COLUMNS['runs']))})",
                        (run_id, *theirs[1:]),
                    )
            outcome[kind].append(run_id)
        return outcome

    def _status_of(self, run_id: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def _has_finished_twin(self, config_json: str) -> bool:
        try:
            config = config_from_dict(json.loads(config_json))
        except ConfigError:
            return False
        return self.find_done(config) is not None

    @staticmethod
    def _copy_in(folder: Path, target: Path) -> None:
        """Copy a run folder to ``target`` (replacing it) so that no half-copied folder is ever visible."""
        staging = target.with_name(f".{target.name}.merging-{uuid.uuid4().hex[:6]}")
        shutil.copytree(folder, staging)
        if target.exists():
            old = target.with_name(f".{target.name}.replaced-{uuid.uuid4().hex[:6]}")
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old)
        else:
            os.rename(staging, target)


def _create_tables(db: sqlite3.Connection) -> None:
    for table, columns in TABLES.items():
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    db.execute(f"CREATE TABLE IF NOT EXISTS {POINTS} ({POINTS_SPEC})")
    db.execute(f"CREATE INDEX IF NOT EXISTS {POINTS}_by_point ON {POINTS} (schema, point)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_folders(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("*/config.yaml") if not path.parent.name.startswith("."))


def _not_a_database(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+; 3.10 has the message only
    if code is not None:
        return code & 0xFF in NOT_A_DATABASE
    return any(message in str(error) for message in NOT_A_DATABASE.values())
