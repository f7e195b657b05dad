"""Files every layer writes and reads: atomic writes, JSON, JSON lines and safe checkpoint loads.

Every whole-file write goes to a temporary sibling (``.NAME.PID@HOST.TOKEN.tmp``), is fsynced
and then renamed over the target, so a killed process leaves either the old or the new file,
never a torn one. The temporary gets the mode a plain ``open`` would give (the umask's, or
the mode of the file it replaces), and its name says which process writes it, so that
``remove_stale_temporaries`` can delete the ones a killed process left. A full disk is a
``DiskFullError`` naming the device, the file and the size, never a torn file.
Checkpoints load with ``weights_only=True``: a file never runs code.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A temporary whose writer cannot be checked (another host, or a name without its writer)
# is taken for abandoned once untouched this long: no atomic write takes minutes.
STALE_TEMPORARY_S = 3600.0
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^.]*)\.[0-9a-f]{8}\.tmp$")
_OLD_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's, robustlab <= 0.4


class DiskFullError(RobustlabError):
    """A write failed because its file system is full (or the user's quota is spent)."""


def disk_full_error(
    path: str | Path, needed: int | None = None, exact: bool = True, estimate: str | None = None
) -> DiskFullError:
    """The one-line error for a write of ``needed`` bytes to ``path`` that found no space.

    ``exact=False``: ``needed`` is what was written before the disk filled, a lower bound;
    ``estimate`` says what ``needed`` is where a write's size cannot be known in advance."""
    mount, _ = mount_of(Path(path))
    if needed is None:
        size = ""
    elif estimate is not None:
        size = f" (about {needed / 1e6:.3g} MB needed: {estimate})"
    else:
        size = f" ({'' if exact else 'at least '}{needed / 1e6:.3g} MB needed)"
    return DiskFullError(f"no space left on {mount or 'the device'} writing {path}{size}; free space there and retry")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


# ---------------------------------------------------------------------------------------
# Atomic writes


def _host_tag() -> str:
    return socket.gethostname().replace(".", "_")


def temporary_path(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` that names this process."""
    return path.with_name(f".{path.name}.{os.getpid()}@{_host_tag()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", size: int | None = None) -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    ``size`` (bytes, when known) is what a full disk's error says was needed."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL with 0o666: the kernel applies the umask, as for a plain open (mkstemp would give 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with suppress(FileNotFoundError):  # a replaced file keeps its mode, as a plain open keeps it
            os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        written = _size(tmp)
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full_error(path, size or written, exact=size is not None) from None
        raise


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_open(path, "wb", size=len(data)) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries of atomic writes in ``folder`` that no live process writes (a
    writer killed mid-write leaves one); returns them. A temporary of another host, or of a
    robustlab that did not name its writer, goes once untouched for ``STALE_TEMPORARY_S``."""
    removed = []
    now = time.time()
    with suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")) or not entry.is_file():
                continue
            if _abandoned(entry, now):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _abandoned(entry: os.DirEntry, now: float) -> bool:
    named = _TEMPORARY.match(entry.name)
    if named and named["host"] == _host_tag():
        return int(named["pid"]) != os.getpid() and not process_running(int(named["pid"]))
    if named or _OLD_TEMPORARY.match(entry.name):
        return now - entry.stat().st_mtime > STALE_TEMPORARY_S
    return False


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return True


def free_bytes(path: str | Path) -> int:
    """Bytes this user may still write on the file system holding ``path``."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 1 << 62  # unknown: plenty
    return info.f_bavail * info.f_frsize


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, file system type) holding ``path`` (Linux; ('', '') elsewhere)."""
    path = Path(os.path.abspath(path))
    best, kind = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return "", ""
    for line in mounts:
        fields = line.split()
        inside = f"{path}/".startswith(fields[1].rstrip("/") + "/") if len(fields) >= 3 else False
        if inside and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return best, kind


# ---------------------------------------------------------------------------------------
# Reading


def read_json(path: str | Path) -> Any:
    """A JSON file's data; a file that is not JSON (or not UTF-8 text) is a ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode())
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); re-create it") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-create it") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid JSON (nested too deeply); re-create it") from None


# ---------------------------------------------------------------------------------------
# Checkpoints (torch is imported when they are written or read: the run store's listing
# reads none and starts without it)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    buffer = io.BytesIO()  # serialized first: its size is known, and torch's writer hides the errno
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``)."""
    import torch

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
    (a torn last line, which the readers set aside); a full disk leaves the file as it was."""
    path = Path(path)
    data = "".join(json.dumps(record, default=json_default) + "\n" for record in records).encode()
    before = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            before = handle.tell()
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if not is_disk_full(error):
            raise
        if before is not None:
            with suppress(OSError):
                os.truncate(path, before)  # no torn line: shrinking needs no space
        raise disk_full_error(path, len(data)) from None


def json_default(obj: Any) -> Any:
    """``json.dump``'s ``default``: tensors and numpy arrays or scalars as lists and numbers, paths as text."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # a numpy scalar's tolist() is the Python number
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
