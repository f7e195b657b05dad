"""Who is working on what: live processes, and the claim each sweep point needs before it trains.

Many processes may train from one run store at once (local workers, SLURM jobs, two sweeps
started together). Before a process trains a sweep point it claims the point in the index,
keyed by the point's result key, so that no two processes ever train the same point.

A process that trains (or holds a claim) beats: a thread refreshes its row in the ``workers``
table every ``HEARTBEAT_S`` seconds. A claim or a ``running`` run belongs to a process, and
counts as live while that process beats. It goes stale when the beats stop for ``LEASE_S``
seconds (a node that died), or at once when its process is gone from this host (a worker
killed with SIGKILL); a stale claim is taken over by the next worker that asks for the point,
which resumes the point's run from its checkpoint. A run whose process died shows as
``interrupted``.

Claim states: ``running`` (held), ``done``, ``failed`` (with a one-line error), ``released``
(given back by an interrupted process: free at once). A sweep retries points that failed or
finished before it started (their run may have been deleted since), never ones that failed
during it, so one broken point does not loop.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from robustlab.files import process_running


class IndexAccess(Protocol):
    """An index that claims are read from and written to: what claims need of
    ``robustlab.runs.store.RunStore`` (which imports this module, so it cannot be named here)."""

    index_path: Path

    def connect(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


HEARTBEAT_S = 15.0  # how often a live process refreshes its row
LEASE_S = 120.0  # a process whose row is older than this is taken for dead (on other hosts)

RUNNING, DONE, FAILED, RELEASED = "running", "done", "failed", "released"

_IDENTITY: tuple[int, str] | None = None
_BEATS: dict[tuple[int, str], _Heartbeat] = {}


def worker_id() -> str:
    """This process: ``host:pid:token`` (the token tells apart two processes that reused a pid)."""
    global _IDENTITY
    if _IDENTITY is None or _IDENTITY[0] != os.getpid():
        _IDENTITY = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    return _IDENTITY[1]


def is_live(host: str | None, pid: int | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Whether the process with this workers row still works: it beat recently, and, on this
    host, it still runs."""
    if heartbeat is None or pid is None or (now or time.time()) - heartbeat > LEASE_S:
        return False
    return host != socket.gethostname() or process_running(pid)


# SQL that joins a row's process (column ``worker``) with its heartbeat
WORKER_JOIN = "LEFT JOIN workers w ON w.worker = {table}.worker"
WORKER_COLUMNS = "w.host, w.pid, w.heartbeat"


class _Heartbeat(threading.Thread):
    def __init__(self, store: IndexAccess):
        super().__init__(name="robustlab-heartbeat", daemon=True)
        self.store, self.users, self.stopped = store, 0, threading.Event()
        self.beat()  # the row exists before the first claim

    def beat(self) -> None:
        host, pid, _ = worker_id().split(":")
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (worker, host, pid, heartbeat) VALUES (?, ?, ?, ?)",
                (worker_id(), host, int(pid), time.time()),
            )

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with suppress(Exception):  # a busy or vanished index: try again at the next beat
                self.beat()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)  # a beat in flight would write the row again
        with suppress(Exception), self.store.transaction() as db:  # nothing of this process is in progress any more
            db.execute("DELETE FROM workers WHERE worker = ?", (worker_id(),))


@contextmanager
def alive(store: IndexAccess) -> Iterator[None]:
    """While inside, this process beats in ``store``'s index (nested uses share one thread)."""
    key = (os.getpid(), str(store.index_path.resolve()))
    beat = _BEATS.get(key)
    if beat is None:
        beat = _BEATS[key] = _Heartbeat(store)
        beat.start()
    beat.users += 1
    try:
        yield
    finally:
        beat.users -= 1
        if not beat.users:
            beat.stop()
            del _BEATS[key]


# ---------------------------------------------------------------------------------------
# Claims on sweep points


def claim(store: IndexAccess, key: str, sweep: str, since: float) -> bool:
    """Take the point ``key`` for this process, unless another live process holds it or it
    was settled since ``since`` (the sweep's start). Call inside ``alive(store)``."""
    with store.transaction() as db:
        row = db.execute(
            f"SELECT c.state, c.updated, {WORKER_COLUMNS} FROM claims c {WORKER_JOIN.format(table='c')} WHERE key = ?",
            (key,),
        ).fetchone()
        if row is not None:
            state, updated, host, pid, heartbeat = row
            if not _claimable(state, updated, host, pid, heartbeat, since):
                return False
        db.execute(
            """INSERT INTO claims (key, sweep, state, worker, run_id, attempts, error, updated)
               VALUES (?, ?, 'running', ?, NULL, 1, NULL, ?)
               ON CONFLICT(key) DO UPDATE SET sweep = excluded.sweep, state = 'running', worker = excluded.worker,
               attempts = claims.attempts + 1, error = NULL, updated = excluded.updated""",
            (key, sweep, worker_id(), time.time()),
        )
    return True


def _claimable(
    state: str, updated: float, host: str | None, pid: int | None, heartbeat: float | None, since: float
) -> bool:
    if state == RUNNING:
        return not is_live(host, pid, heartbeat)
    return state == RELEASED or updated < since


def hold(store: IndexAccess, key: str, run_id: str | None = None) -> bool:
    """Whether this process still holds ``key`` (records the run it trains, when given)."""
    with store.transaction() as db:
        held = db.execute(
            "UPDATE claims SET run_id = COALESCE(?, run_id) WHERE key = ? AND worker = ? AND state = 'running'",
            (run_id, key, worker_id()),
        )
        return held.rowcount == 1


def settle(store: IndexAccess, key: str, state: str, error: str | None = None) -> None:
    """End this process's claim on ``key``: ``done``, ``failed`` (with its error) or ``released``."""
    with store.transaction() as db:
        db.execute(
            "UPDATE claims SET state = ?, error = ?, updated = ? WHERE key = ? AND worker = ? AND state = 'running'",
            (state, error, time.time(), key, worker_id()),
        )


def claims(store: IndexAccess, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The claims on ``keys``; a held claim whose process died reads ``interrupted``."""
    rows = {}
    with store.connect() as db:
        for start in range(0, len(keys), 500):  # SQLite limits the number of parameters
            part = keys[start : start + 500]
            rows.update(
                {
                    key: {
                        "state": state if state != RUNNING or is_live(host, pid, beat) else "interrupted",
                        "updated": updated,
                        "worker": worker,
                        "run_id": run_id,
                        "attempts": attempts,
                        "error": error,
                    }
                    for key, state, updated, worker, run_id, attempts, error, host, pid, beat in db.execute(
                        f"""SELECT key, state, updated, c.worker, run_id, attempts, error, {WORKER_COLUMNS}
                            FROM claims c {WORKER_JOIN.format(table="c")}
                            WHERE key IN ({",".join("?" * len(part))})""",
                        part,
                    )
                }
            )
    return rows


def settled_since(claim_row: dict[str, Any] | None, since: float) -> bool:
    """Whether a point was finished or given up during the sweep that started at ``since``."""
    return claim_row is not None and claim_row["state"] in (DONE, FAILED) and claim_row["updated"] >= since
