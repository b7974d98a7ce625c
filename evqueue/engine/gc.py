"""Garbage collector (ops.md §3.5): old instances and logs are deleted in bounded batches.

A timer on the loop fires at every multiple of ``gc.interval`` seconds of the epoch (unlike the
original, which waits one interval after start, so a daemon restarted more often than the
interval still collects). Each pass deletes at most ``gc.limit`` rows per table, by key, in the
storage's writer thread, with ``gc.delay`` seconds between productive passes, so the loop is
never blocked. Every node of a cluster fires at the same instants; the one whose claim row for
that interval lands first purges (a database claim, not the original's ping-based election).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evqueue.log import NOTICE
from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

_DAY = 86400
#: Keys per DELETE statement (SQLite builds older than 3.32 allow 999 parameters).
_CHUNK = 500
#: Rows of an instance, deleted with it (the original's orphans pass).
_INSTANCE_ROWS = ("t_workflow_instance_parameters", "t_workflow_instance_filters",
                  "t_datastore", "t_workflow_instance_tag")
#: Time-stamped tables: (table, key, timestamp column, retention key in days).
_EXPIRING = (
    ("t_log", "log_id", "log_timestamp", "gc.logs.retention"),
    ("t_log_api", "log_api_id", "log_api_timestamp", "gc.logsapi.retention"),
    ("t_log_notifications", "log_notifications_id", "log_notifications_timestamp",
     "gc.logsnotifications.retention"),
    ("t_uniqueaction", "uniqueaction_id", "uniqueaction_time", "gc.uniqueaction.retention"),
    ("t_evqueue_claim", "claim_name", "claim_time", "gc.uniqueaction.retention"),
)


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
            self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()

    def _arm(self) -> None:
        wall = time.time()
        bucket = int(wall) // self.interval + 1
        self._handle = asyncio.get_running_loop().call_later(
            bucket * self.interval - wall, self._due, bucket)

    def _due(self, bucket: int) -> None:
        self._arm()
        if self._task is not None and not self._task.done():
            log.warning("GarbageCollector: previous run still going, skipping this one")
            return
        self._task = asyncio.ensure_future(self._run(bucket))

    async def _run(self, bucket: int) -> None:
        try:
            if not await self.server.cluster.claim(f"gc_{self.interval}_{bucket}"):
                return
            while (removed := await self.collect()) > 0:
                log.log(NOTICE, "GarbageCollector: Removed %d expired entries", removed)
                await asyncio.sleep(self.delay)
        except Exception as e:
            log.error("GarbageCollector: %s", e)

    async def collect(self) -> int:
        """One purge pass; returns the number of rows removed (an instance's parameters,
        filters, datastore entries and tags are removed with it, not counted)."""
        cfg = self.server.config
        storage = self.server.storage

        def cutoff(key: str) -> str:
            return now(time.time() - cfg[key] * _DAY)

        ids = [r[0] for r in await storage.query(
            "SELECT workflow_instance_id FROM t_workflow_instance WHERE "
            "workflow_instance_status = 'TERMINATED' AND workflow_instance_end < %s "
            "ORDER BY workflow_instance_end LIMIT %s",
            (cutoff("gc.workflowinstance.retention"), self.limit))]
        for table in _INSTANCE_ROWS:
            await self._delete(table, "workflow_instance_id", ids)
        removed = await self._delete("t_workflow_instance", "workflow_instance_id", ids)
        for table, key, column, retention in _EXPIRING:
            keys = [r[0] for r in await storage.query(
                f"SELECT {key} FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s",
                (cutoff(retention), self.limit))]
            removed += await self._delete(table, key, keys)
        return removed

    async def _delete(self, table: str, key: str, values: Sequence[object]) -> int:
        removed = 0
        for i in range(0, len(values), _CHUNK):
            chunk = values[i:i + _CHUNK]
            removed += (await self.server.storage.execute(
                f"DELETE FROM {table} WHERE {key} IN ({', '.join(['%s'] * len(chunk))})",
                tuple(chunk))).rowcount
        return removed
