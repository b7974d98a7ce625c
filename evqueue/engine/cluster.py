"""Reload broadcasts to the other nodes of a cluster (protocol.md §5.2, ops.md §4).

After a definition change this node tells every node of ``cluster.nodes`` to reload that
module, over the ordinary client protocol with ``notify='no'`` (no loops), authenticated as
``cluster.notify.user``. A node whose greeting carries our own name is skipped. Unreachable
nodes are logged and skipped: they reload everything from the database when they start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from evqueue.client import AsyncClient
from evqueue.storage.base import DuplicateEntry, now

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)


class Cluster:
    def __init__(self, server: Server) -> None:
        cfg = server.config
        self.node = server.node
        self.storage = server.storage
        self.nodes = [n for n in cfg["cluster.nodes"].split(",") if n]
        self.enabled: bool = cfg["cluster.notify"] and bool(self.nodes)
        self.user: str = cfg["cluster.notify.user"]
        self.password: str = cfg["cluster.notify.password"]
        self.timeout: float = float(cfg["cluster.cnx.timeout"])
        self._tasks: set[asyncio.Task] = set()

    def notify_reload(self, module: str) -> None:
        self.notify(f"<control action='reload' module='{module}' notify='no' />")

    def notify(self, query: str) -> None:
        """Send ``query`` to every other node, in the background."""
        if not self.enabled:
            return
        for url in self.nodes:
            task = asyncio.ensure_future(self._send(url, query))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, url: str, query: str) -> None:
        client = AsyncClient(url, self.user or None, self.password or None,
                             timeout=self.timeout)
        try:
            if (await client.connect()).node == self.node:
                return
            await client.query(query)
        except Exception as e:
            log.warning("Cluster: could not notify %s: %s", url, e)
        finally:
            await client.close()

    async def claim(self, name: str) -> bool:
        """Win a one-node-only action (an ``any`` schedule occurrence) through the database:
        the first node to insert the claim row wins; the unique key refuses the others. No
        peer pinging, so it stays correct on Galera and when a node dies."""
        try:
            await self.storage.execute(
                "INSERT INTO t_evqueue_claim (claim_name, node_name, claim_time) "
                "VALUES (%s, %s, %s)", (name[:128], self.node, now()))
        except DuplicateEntry:
            return False
        return True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)
