"""The forker's journal: which tasks run and which exits the daemon has not acknowledged yet.

An append-only file of JSON lines, so a crash at any point leaves a readable prefix:

    {"op":"s","tid":T,"pid":P,"start":S}   task T was spawned
    {"op":"exit","n":N,"tid":T,...}        its exit record (the very line sent to the daemon)
    {"op":"a","n":[N,...]}                 the daemon acknowledged these exits
    {"op":"h","n":N}                       header written by compaction: next exit sequence

Lines are written with plain ``write`` when the forker's loop iteration ends, which survives a
crash of the forker itself. ``fdatasync`` (for machine crashes) runs in a dedicated thread that
syncs whatever accumulated, then waits SYNC_INTERVAL before the next sync: a group commit that
costs the loop one flag per batch, not a thread hop per record. When the file holds mostly dead
entries it is rewritten (tmp + rename) with only the live ones. Hot lines are formatted with
f-strings: this is on the per-task path.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from evqueue.process.wire import encode

_COMPACT_MIN_LINES = 2000
SYNC_INTERVAL = 0.01
"""Seconds between two syncs: exits of a burst share one fdatasync."""

log = logging.getLogger(__name__)


class Journal:
    """Spawns, exits and acks; ``running`` and ``exits`` are its live state."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.running: dict[int, tuple[int, float]] = {}
        """tid -> (pid, start) of tasks spawned and not exited."""
        self.exits: dict[int, tuple[int, bytes]] = {}
        """exit sequence n -> (tid, exit line as JSON + newline), not yet acknowledged."""
        self.skipped = 0
        """Unreadable lines found at load (a torn last line after a crash)."""
        self._exit_tids: dict[int, int] = {}
        self._next_n = 1
        self._pending: list[bytes] = []
        self._lines = 0
        self._compact_at = _COMPACT_MIN_LINES
        self._dirty = False
        self._load()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._fd_lock = threading.Lock()
        self._wake = threading.Condition()
        self._sync_wanted = False
        self._stopping = False
        self._syncer = threading.Thread(target=self._sync_loop, name="journal-sync", daemon=True)
        self._syncer.start()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a write torn by a crash: drop it, or our next line would join it
            os.truncate(self.path, end)
            self.skipped += 1
            data = data[:end]
        for line in data.splitlines():
            try:
                rec = json.loads(line)
                op = rec["op"]
                if op == "s":
                    self.running[int(rec["tid"])] = (int(rec["pid"]), float(rec["start"]))
                elif op == "exit":
                    self._add_exit(int(rec["n"]), int(rec["tid"]), line + b"\n")
                elif op == "a":
                    self._drop_exits(rec["n"])
                elif op == "h":
                    self._next_n = max(self._next_n, int(rec["n"]))
            except (ValueError, KeyError, TypeError):
                self.skipped += 1
                continue
            self._lines += 1

    def _add_exit(self, n: int, tid: int, line: bytes) -> None:
        self.running.pop(tid, None)
        self.exits[n] = (tid, line)
        self._exit_tids[tid] = n
        self._next_n = max(self._next_n, n + 1)

    def _drop_exits(self, ns: list[int]) -> list[int]:
        dropped = []
        for n in ns:
            entry = self.exits.pop(n, None)
            if entry is not None:
                dropped.append(n)
                if self._exit_tids.get(entry[0]) == n:
                    del self._exit_tids[entry[0]]
        return dropped

    def busy(self, tid: int) -> bool:
        """True while tid runs or has an exit the daemon has not acknowledged."""
        return tid in self.running or tid in self._exit_tids

    def spawned(self, tid: int, pid: int, start: float) -> None:
        self.running[tid] = (pid, start)
        self._write(_spawn_line(tid, pid, start))

    def exited(
        self,
        tid: int,
        pid: int,
        status: int | None,
        retval: int,
        start: float,
        end: float,
        lost: str | None = None,
    ) -> bytes:
        """Number and record an exit; returns its line (also what the daemon is sent)."""
        n = self._next_n
        extra = "" if lost is None else f',"lost":{json.dumps(lost)}'
        line = (
            f'{{"op":"exit","n":{n},"tid":{tid},"pid":{pid},'
            f'"status":{"null" if status is None else status},"retval":{retval},'
            f'"start":{start!r},"end":{end!r}{extra}}}\n'
        ).encode()
        self._add_exit(n, tid, line)
        self._write(line)
        self._dirty = True
        return line

    def acked(self, ns: list[int]) -> None:
        dropped = self._drop_exits(ns)
        if dropped:
            self._write(f'{{"op":"a","n":[{",".join(map(str, dropped))}]}}\n'.encode())

    def _write(self, line: bytes) -> None:
        self._pending.append(line)
        self._lines += 1

    def flush(self) -> None:
        """Write what accumulated (one syscall); have new exits synced soon."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            _write_all(self._fd, data)
        if self._dirty:
            self._dirty = False
            with self._wake:
                self._sync_wanted = True
                self._wake.notify()
        if self._lines > self._compact_at and self._lines > 4 * (
            len(self.running) + len(self.exits)
        ):
            try:
                self._compact()
            except OSError as exc:
                self._compact_at = 2 * self._lines
                log.error("journal %s: compaction failed: %s", self.path, exc)

    def _sync_loop(self) -> None:
        while True:
            with self._wake:
                while not (self._sync_wanted or self._stopping):
                    self._wake.wait()
                if not self._sync_wanted:
                    return
                self._sync_wanted = False
            with self._fd_lock:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    log.error("journal %s: sync failed: %s", self.path, exc)
            time.sleep(SYNC_INTERVAL)

    def _compact(self) -> None:
        """Rewrite the file with only live entries (never while a sync uses the fd)."""
        lines = [encode({"op": "h", "n": self._next_n})]
        lines += [_spawn_line(tid, pid, start) for tid, (pid, start) in self.running.items()]
        lines += [line for _, line in self.exits.values()]
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, b"".join(lines))
            os.fdatasync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        with self._fd_lock:
            os.close(self._fd)
            self._fd = fd
        self._lines = len(lines)
        self._compact_at = _COMPACT_MIN_LINES
        self._dirty = False
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Write and sync everything, then stop the sync thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._syncer.join()
        if self._pending:
            _write_all(self._fd, b"".join(self._pending))
            self._pending.clear()
        os.fdatasync(self._fd)
        os.close(self._fd)


def _spawn_line(tid: int, pid: int, start: float) -> bytes:
    return f'{{"op":"s","tid":{tid},"pid":{pid},"start":{start!r}}}\n'.encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
