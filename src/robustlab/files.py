"""Files every layer writes and reads: atomic writes, JSON, JSON lines and safe checkpoint loads.

Every whole-file write goes to a temporary file in the same folder, is fsynced and then
renamed over the target, so a killed process leaves either the old or the new file,
never a torn one. Checkpoints load with ``weights_only=True``: a file never runs code.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file's data; a file that is not JSON is a ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-create it") from None


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise ValueError(
            f"cannot load checkpoint {path}: {error}. The file is truncated, corrupt, or holds "
            "objects other than tensors and plain data; re-create it with robustlab."
        ) from None


def append_json_lines(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Append records as JSON lines in one fsynced write: a kill loses at most this write
    (a torn last line, which the readers skip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record, default=json_default) + "\n" for record in records)
    with open(path, "a") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def json_default(obj: Any) -> Any:
    """``json.dump``'s ``default``: tensors and numpy arrays or scalars as lists and numbers, paths as text."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # a numpy scalar's tolist() is the Python number
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
