"""What the nodes of a cluster sharing one database do together (protocol.md §5, ops.md §4).

* Reload broadcasts: after a definition change this node tells every node of
  ``cluster.nodes`` to reload that module, over the ordinary client protocol with
  ``notify='no'`` (no loops), authenticated as ``cluster.notify.user``. A node whose greeting
  carries our own name is skipped. Unreachable nodes are logged and skipped: they reload
  everything from the database when they start.
* One-node-only actions (an ``any`` schedule occurrence, a garbage collection) are won through
  the database (:func:`claim`, :func:`take_lease`), not by an election among peers. Both only
  rely on a unique key: no ``GET_LOCK`` (not replicated by Galera) and no read-then-write
  decision. On Galera the loser of a conflicting commit gets a deadlock error; the storage runs
  the batch again, and the rerun meets the winner's row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from evqueue.storage.base import DuplicateEntry, Storage, Tx, now

if TYPE_CHECKING:
    from evqueue.client import AsyncClient
    from evqueue.server import Server

log = logging.getLogger(__name__)

#: How long the answer to a definition change waits for the other nodes to reload it. A live
#: node takes milliseconds; one that takes longer (its host is down, a TCP connection hangs)
#: is finished with in the background instead of delaying the answer up to
#: ``cluster.cnx.timeout``.
SYNC_TIMEOUT = 2.0


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

    def notify(self, *queries: str) -> list[asyncio.Task]:
        """Send ``queries`` to every other node (one connection each), in the background;
        returns the tasks, for callers that wait for them."""
        if not self.enabled:
            return []
        tasks = [asyncio.ensure_future(self._send(url, queries)) for url in self.nodes]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tasks

    async def reload_everywhere(self, modules: Iterable[str]) -> None:
        """Tell the other nodes to reload ``modules`` and wait until they did (at most
        :data:`SYNC_TIMEOUT`): a client that got the answer to a definition change can use
        the new definition on any live node at once."""
        tasks = self.notify(*(f"<control action='reload' module='{m}' notify='no' />"
                              for m in modules))
        if tasks:
            await asyncio.wait(tasks, timeout=SYNC_TIMEOUT)

    def _client(self, url: str) -> AsyncClient:
        """A client of node ``url`` (the client library is imported on the first use: a
        single-node daemon never needs it)."""
        from evqueue.client import AsyncClient

        return AsyncClient(url, self.user or None, self.password or None, timeout=self.timeout)

    async def _send(self, url: str, queries: Iterable[str]) -> None:
        client = self._client(url)
        try:
            if (await client.connect()).node == self.node:
                return
            for query in queries:
                await client.query(query)
        except Exception as e:
            log.warning("Cluster: could not notify %s: %s", url, e)
        finally:
            await client.close()

    async def claim(self, name: str) -> bool:
        """Win a one-node-only action (an ``any`` schedule occurrence, a GC pass); see
        :func:`claim`."""
        return await claim(self.storage, name, self.node)

    async def node_alive(self, name: str) -> bool:
        """Whether node ``name`` answers on one of ``cluster.nodes``. ``instance migrate``
        asks it: an instance taken from a live node would run twice."""

        async def greets(url: str) -> bool:
            client = self._client(url)
            try:
                return (await client.connect()).node == name
            except Exception:
                return False
            finally:
                await client.close()

        return any(await asyncio.gather(*(greets(url) for url in self.nodes)))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)


_INSERT_CLAIM = ("INSERT INTO t_evqueue_claim (claim_name, node_name, claim_time) "
                 "VALUES (%s, %s, %s)")


async def claim(storage: Storage, name: str, node: str) -> bool:
    """Whether ``node`` wins the action ``name`` (unique per occurrence, e.g.
    ``scheduledwf_<id>_<fire time>``): the first claim row to land wins, the unique key refuses
    every later claim, the winner's own included (one run per occurrence)."""
    try:
        await storage.execute(_INSERT_CLAIM, (name[:128], node, now()))
    except DuplicateEntry:
        return False
    return True


async def take_lease(storage: Storage, name: str, node: str, ttl: float) -> bool:
    """Take (or keep) the lease ``name`` for ``node``: refused while another node holds it
    and renewed it less than ``ttl`` seconds ago. Only a stale lease or our own is deleted
    before our row is inserted, and the insert decides: of two nodes taking over a stale lease
    at once, the second's delete waits for the first's commit, then matches nothing (the row is
    fresh and not its own) and its insert hits the unique key."""
    stamp, stale = now(), now(time.time() - ttl)

    def take(tx: Tx) -> bool:
        tx.execute("DELETE FROM t_evqueue_claim WHERE claim_name = %s AND "
                   "(node_name = %s OR claim_time < %s)", (name, node, stale))
        try:
            tx.execute(_INSERT_CLAIM, (name, node, stamp))
        except DuplicateEntry:
            return False
        return True

    return await storage.transaction(take)


def renew_leases(storage: Storage, names: list[str], node: str) -> None:
    """Queue the renewal of ``node``'s leases ``names`` (a lease taken over by another node
    meanwhile is left alone)."""
    if names:
        storage.write(f"UPDATE t_evqueue_claim SET claim_time = %s WHERE node_name = %s AND "
                      f"claim_name IN ({', '.join(['%s'] * len(names))})", (now(), node, *names))


def release_lease(storage: Storage, name: str, node: str) -> None:
    """Queue the release of ``node``'s lease ``name`` (never another node's)."""
    storage.write("DELETE FROM t_evqueue_claim WHERE claim_name = %s AND node_name = %s",
                  (name, node))
