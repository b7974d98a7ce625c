"""Detach from the terminal (``--daemon``) without losing start-up errors.

Double fork + ``setsid`` with stdio on /dev/null, like the original's ``daemon()``, but the
foreground process waits on a pipe until the daemon reports that it is serving (exit 0) or
that start-up failed (the message is printed and the exit status is 255). The original exited
0 before binding its listeners, hiding bind failures from init scripts.
"""

from __future__ import annotations

import os
import sys


class Readiness:
    """The daemon side of the start-up pipe."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._failure: str | None = None

    def ready(self) -> None:
        self._send(b"OK")

    def failed(self, message: str) -> None:
        """Record a start-up failure; :meth:`close` reports it once the daemon has cleaned
        up, so that the PID file is gone when the foreground process exits."""
        self._failure = message

    def close(self) -> None:
        """Report a recorded failure, or just close (the foreground then reports that the
        daemon exited during start-up, unless it was ready)."""
        failure = self._failure
        self._send(b"" if failure is None else b"KO" + failure.encode("utf-8", "replace"))

    def _send(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, data)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def daemonize() -> Readiness:
    """Fork into the background; only the final daemon process returns."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child > 0:
        os.close(wfd)
        os.waitpid(child, 0)  # the intermediate process exits at once: reap it
        chunks = [os.read(rfd, 65536)]
        if chunks[0].startswith(b"OK"):
            os._exit(0)  # at once: a process started by the daemon may hold the pipe open
        while chunk := os.read(rfd, 65536):
            chunks.append(chunk)
        status = b"".join(chunks)
        message = status[2:].decode("utf-8", "replace") or "daemon exited during start-up"
        sys.stderr.write(message + "\n")
        os._exit(255)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    return Readiness(wfd)
