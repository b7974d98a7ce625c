"""Garbage collector (ops.md §3.5): old instances and logs are deleted in bounded batches.

A timer on the loop fires every ``gc.interval`` seconds (first run one interval after start,
like the original). Each DELETE takes at most ``gc.limit`` rows and runs in the storage's
writer thread, with ``gc.delay`` seconds between productive passes, so the loop is never
blocked. In a cluster one node purges per interval: the one whose claim row for that interval
lands first (a database claim, not the original's ping-based election).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

_DAY = 86400
_ORPHANS = ("t_workflow_instance_parameters", "t_workflow_instance_filters", "t_datastore",
            "t_workflow_instance_tag")


class GarbageCollector:
    def __init__(self, server: Server) -> None:
        self.server = server
        cfg = server.config
        self.enabled: bool = cfg["gc.enable"]
        self.interval: int = cfg["gc.interval"]
        self.limit: int = cfg["gc.limit"]
        self.delay: int = cfg["gc.delay"]
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.enabled and self.interval > 0:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._due)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            self._task.cancel()

    def _due(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._due)

    async def _run(self) -> None:
        bucket = int(time.time()) // self.interval
        try:
            if not await self.server.cluster.claim(f"gc_{self.interval}_{bucket}"):
                return
            while (removed := await self.collect()) > 0:
                log.log(25, "GarbageCollector: Removed %d expired entries", removed)
                await asyncio.sleep(self.delay)
        except Exception as e:
            log.error("GarbageCollector: %s", e)

    async def collect(self) -> int:
        """One purge pass; returns the number of rows removed (orphans not counted)."""
        cfg = self.server.config
        storage = self.server.storage
        cutoff = lambda days: now(time.time() - days * _DAY)  # noqa: E731
        removed = 0
        ids = [r[0] for r in await storage.query(
            "SELECT workflow_instance_id FROM t_workflow_instance WHERE "
            "workflow_instance_status = 'TERMINATED' AND workflow_instance_end < %s "
            "ORDER BY workflow_instance_end LIMIT %s",
            (cutoff(cfg["gc.workflowinstance.retention"]), self.limit))]
        if ids:
            marks = ",".join(str(i) for i in ids)
            removed += (await storage.execute(
                f"DELETE FROM t_workflow_instance WHERE workflow_instance_id IN ({marks})"
            )).rowcount
            for table in _ORPHANS:
                await storage.execute(
                    f"DELETE FROM {table} WHERE workflow_instance_id IN ({marks})")
        for table, column, key in (
            ("t_log", "log_timestamp", "gc.logs.retention"),
            ("t_log_api", "log_api_timestamp", "gc.logsapi.retention"),
            ("t_log_notifications", "log_notifications_timestamp",
             "gc.logsnotifications.retention"),
            ("t_uniqueaction", "uniqueaction_time", "gc.uniqueaction.retention"),
            ("t_evqueue_claim", "claim_time", "gc.uniqueaction.retention"),
        ):
            rows = await storage.query(
                f"SELECT {column} FROM {table} WHERE {column} < %s ORDER BY {column} "
                "LIMIT 1 OFFSET %s", (cutoff(cfg[key]), self.limit - 1))
            bound = rows[0][0] if rows else cutoff(cfg[key])
            op = "<=" if rows else "<"
            removed += (await storage.execute(
                f"DELETE FROM {table} WHERE {column} {op} %s", (bound,))).rowcount
        return removed
