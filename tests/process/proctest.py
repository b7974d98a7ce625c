"""Helpers for the forker/Spawner tests: a node's directories, exit collectors, process probes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from evqueue.process.spawner import ExitRecord, Spawner


class Exits:
    """on_exit / on_progress callbacks that remember everything and let a test wait."""

    def __init__(self) -> None:
        self.records: list[ExitRecord] = []
        self.progress: list[tuple[int, int]] = []
        self._queue: asyncio.Queue[ExitRecord] = asyncio.Queue()

    def __call__(self, rec: ExitRecord) -> None:
        self.records.append(rec)
        self._queue.put_nowait(rec)

    def on_progress(self, tid: int, pct: int) -> None:
        self.progress.append((tid, pct))

    async def get(self, timeout: float = 10.0) -> ExitRecord:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def collect(self, n: int, timeout: float = 10.0) -> list[ExitRecord]:
        deadline = time.monotonic() + timeout
        return [await self.get(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    async def none_within(self, seconds: float) -> bool:
        try:
            await self.get(seconds)
        except TimeoutError:
            return True
        return False


@dataclass
class Node:
    """A node's run directory (short path: unix sockets are limited to 108 bytes) and logs."""

    run_dir: str
    logs_dir: str
    spawners: list[Spawner] = field(default_factory=list)

    @property
    def pidfile(self) -> str:
        return os.path.join(self.run_dir, "forker.pid")

    @property
    def socket(self) -> str:
        return os.path.join(self.run_dir, "forker.sock")

    @property
    def journal(self) -> str:
        return os.path.join(self.run_dir, "forker.journal")

    def forker_pid(self) -> int | None:
        try:
            with open(self.pidfile) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    async def start(self, exits: Exits | None = None, **kw: object) -> tuple[Spawner, Exits]:
        exits = exits or Exits()
        kw.setdefault("idle_timeout", 5.0)
        sp = await Spawner.start(
            self.run_dir,
            self.logs_dir,
            on_exit=exits,
            on_progress=exits.on_progress,
            **kw,  # type: ignore[arg-type]
        )
        self.spawners.append(sp)
        return sp, exits


def is_forker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"evqueue.process.forker" in f.read()
    except OSError:
        return False


def is_dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (our init may be slow to reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
