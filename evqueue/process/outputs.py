"""Reading a task's capture files ``<logs>/<tid>.stdout|.stderr|.log`` (blocking helpers).

The Spawner opens them on the loop, then reads inline when they are small and in a worker
thread when they are big.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TRUNCATED = b"...TRUNCATED..."
KINDS = ("stdout", "stderr", "log")


@dataclass(frozen=True, slots=True)
class TaskOutputs:
    """What a task wrote. ``stdout`` is None when its file could not be read: the original then
    ends the task with retval -1 ("Could not read task log")."""

    stdout: bytes | None
    stderr: bytes
    log: bytes


def output_path(logs_dir: str, tid: int, kind: str) -> str:
    return os.path.join(logs_dir, f"{tid}.{kind}")


def delete_outputs(logs_dir: str, tid: int) -> None:
    """Remove the task's capture files (those it has: the log file may never exist)."""
    for kind in KINDS:
        try:
            os.unlink(output_path(logs_dir, tid, kind))
        except FileNotFoundError:
            pass


@dataclass(slots=True)
class OpenedOutputs:
    """The three files opened (fd -1: missing) and their total size: whoever reads them
    decides between the loop (small) and a thread (big) without another stat."""

    paths: list[str]
    fds: list[int]
    size: int


def open_outputs(logs_dir: str, tid: int) -> OpenedOutputs:
    prefix = os.path.join(logs_dir, str(tid))
    paths = [f"{prefix}.{kind}" for kind in KINDS]
    fds = []
    size = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        else:
            size += os.fstat(fd).st_size
        fds.append(fd)
    return OpenedOutputs(paths, fds, size)


def read_outputs(opened: OpenedOutputs, max_size: int, delete: bool) -> TaskOutputs:
    """Read, close (and optionally delete) the files.

    A file longer than ``max_size`` is cut to ``max_size`` bytes followed by ``...TRUNCATED...``
    (datastore.db.maxsize; as in the original, 0 truncates every non-empty file). A missing
    stderr or log file reads as empty: the log file only exists once the task wrote to fd 3.
    An unreadable file is left in place (stdout None tells the engine).
    """
    data: list[bytes | None] = [None, None, None]
    for i, (path, fd) in enumerate(zip(opened.paths, opened.fds, strict=True)):
        if fd < 0:
            continue
        try:
            raw = _read_upto(fd, max_size + 1)
        except OSError:
            continue
        finally:
            os.close(fd)
            opened.fds[i] = -1
        data[i] = raw[:max_size] + TRUNCATED if len(raw) > max_size else raw
        if delete:
            try:
                os.unlink(path)
            except OSError:
                pass
    return TaskOutputs(data[0], data[1] or b"", data[2] or b"")


def _read_upto(fd: int, limit: int) -> bytes:
    chunks = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def tail(logs_dir: str, tid: int, kind: str, size: int) -> bytes:
    """Last ``size`` bytes of a running task's file (``processmanager action="tail"``).

    Raises ValueError("Unknown log type : X") for a bad kind and OSError when the file cannot be
    opened, except the log file, which reads as empty until the task first writes to fd 3.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown log type : {kind}")
    try:
        f = open(output_path(logs_dir, tid, kind), "rb")
    except FileNotFoundError:
        if kind == "log":
            return b""
        raise
    with f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - size))
        return f.read(size)
