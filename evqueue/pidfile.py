"""PID file with an exclusive lock, so a second daemon on the same node refuses to start.

The original truncated the running daemon's PID file and then unlinked it (ops.md §1.7). Here a
``flock`` on ``<pidfile>.lock`` is held for the daemon's lifetime and the PID file itself is
replaced atomically (write + rename), so readers never see it empty.
"""

from __future__ import annotations

import fcntl
import os


class AlreadyRunning(Exception):
    """Another live daemon holds the lock."""


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` naming the other daemon's pid."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        lock_path = self.path + ".lock"
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(
                    f"another evqueue daemon (pid {self.read() or '?'}) holds {self.path}"
                ) from None
            # a daemon exiting meanwhile unlinks the lock file: a lock on that old inode
            # would not exclude the next daemon, so lock the file that is there now
            if _same_file(fd, lock_path):
                break
            os.close(fd)
        self._lock_fd = fd

    def write(self, pid: int | None = None) -> None:
        """Publish our pid; called after daemonising, once the pid is final."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{pid or os.getpid()}\n")
        os.replace(tmp, self.path)

    def read(self) -> int | None:
        try:
            with open(self.path) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Remove the PID file and drop the lock (clean exit)."""
        if self._lock_fd is None:
            return
        for path in (self.path, self.path + ".lock"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.close(self._lock_fd)
        self._lock_fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)
