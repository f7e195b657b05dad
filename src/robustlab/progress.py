"""Progress on stderr that reads well anywhere.

On a terminal a unit of work (a sweep's runs, a run's steps, certification batches) shows
a tqdm bar. Anywhere else (a log file, CI, a pipe) bars would write escape codes and a
redraw every few steps, so the outermost unit prints one plain line per step of its own
(an epoch of a run, a run of a sweep) and nested units print nothing. ``--quiet`` (the
``enabled`` argument) and ``ROBUSTLAB_PROGRESS=0`` silence both.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")

ENV = "ROBUSTLAB_PROGRESS"
_open: list[Progress] = []  # the units now running, outermost first


def wanted(enabled: bool = True) -> bool:
    """Whether progress is shown at all: not --quiet and not ROBUSTLAB_PROGRESS=0."""
    return enabled and os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """A tqdm bar on a terminal; elsewhere ``line`` prints plain lines if this unit is the outermost.

    Use it as a context manager (or call ``close``) so that nesting is tracked.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        initial: int = 0,
        unit_scale: bool = False,
    ):
        show = wanted(enabled)
        nested = bool(_open)
        self.desc = desc
        self.lines = show and not on_terminal() and not nested
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            disable=not (show and on_terminal()),
            leave=not nested,  # a nested bar disappears when done, so its parent's stays readable
            unit_scale=unit_scale,
            dynamic_ncols=True,
        )
        self._start = time.perf_counter()
        self.total, self.done = total, 0  # done: since this unit started (a resumed one's pace is its own)
        self._initial = initial
        _open.append(self)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n  # counted here too: a disabled tqdm bar (off a terminal) counts nothing

    def set_postfix(self, values: dict[str, Any] | None = None, text: str | None = None) -> None:
        if text is not None:
            self.bar.set_postfix_str(text)
        else:
            self.bar.set_postfix(values)

    def line(self, message: str) -> None:
        """One plain line (off a terminal, outermost unit only), stamped with the time elapsed and,
        once some of a known total is done, an estimate of the time left at the same pace."""
        if self.lines:
            elapsed = time.perf_counter() - self._start
            print(f"{self.desc}: {message} [{elapsed:.0f}s{self._time_left(elapsed)}]", file=sys.stderr, flush=True)

    def _time_left(self, elapsed: float) -> str:
        left = (self.total or 0) - self._initial - self.done
        if self.done <= 0 or left <= 0:
            return ""
        return f", about {duration(elapsed / self.done * left)} left"

    def close(self) -> None:
        self.bar.close()
        if self in _open:
            _open.remove(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable[Item], desc: str, unit: str = "it", enabled: bool = True, total: int | None = None
) -> Iterator[Item]:
    """Iterate ``iterable`` under a nested-style bar: shown on a terminal only, never as lines."""
    with Progress(total if total is not None else _length(iterable), desc, unit, enabled) as progress:
        progress.lines = False
        for item in iterable:
            yield item
            progress.update()


def note(message: str, enabled: bool = True) -> None:
    """A message about the work about to start (such as where a run is written), shown unless
    progress is off or this work is part of a larger unit (a sweep's runs: its lines say enough)."""
    if wanted(enabled) and not _open:
        tqdm.write(message, file=sys.stderr)


def duration(seconds: float) -> str:
    """``45s``, ``12 min``, ``2.5 h``: a time as a person reads it."""
    if seconds < 100:
        return f"{seconds:.0f}s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def readable(key: str, value: Any) -> str:
    """A config value as a progress line shows it: 1.96 epochs, not 1.9591002044989776; a size
    left at None (the whole set) as ``all``."""
    if value is None:
        return "all" if key.endswith(("_size", "components")) else "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def decimals_needed(values: list[Any], most: int) -> int:
    """The fewest decimals (up to ``most``) that show every float of ``values`` as it would
    show with ``most``: a column of 20.0 epochs gets 0, of 4.1 s gets 1, of 0.9333 gets 4."""
    needed = 0
    for value in values:
        if isinstance(value, float) and math.isfinite(value):
            shown = round(value, most)
            needed = max(needed, next(d for d in range(most + 1) if round(value, d) == shown))
    return needed


def _length(iterable: Iterable[object]) -> int | None:
    try:
        return len(iterable) if isinstance(iterable, Sized) else None
    except TypeError:  # a 0-d tensor has __len__ but no length
        return None
