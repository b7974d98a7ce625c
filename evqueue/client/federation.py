"""Several evQueue servers used as one: the nodes of a cluster, or independent servers.

* launches go to a server picked at random, then to the next ones on connection errors (only
  while the launch query cannot have reached a server, so nothing is launched twice);
* instance ids are routed to the node that owns them, found by asking each node's
  ``instance query`` until one answers without UNKNOWN_INSTANCE/WRONG_NODE, then cached;
* read-only views (ping, status, statistics, queue statistics, instance lists) are asked of
  every server in parallel and merged; servers that cannot be reached are skipped and listed
  in :attr:`AsyncFederation.unreachable`. Instance lists ask each server for the rows of its
  own node, so a cluster sharing one database lists every instance once;
* definitions (queues, schedules, workflows) are read from any one server.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Literal, TypeVar

from lxml import etree

from evqueue.client.aio import DEFAULT_MAX_SIZE, AsyncClient, ProgressCallback, Query
from evqueue.client.errors import AllServersFailed, EvqConnectionError, EvqError
from evqueue.client.model import (
    Instance,
    InstanceRow,
    Ping,
    Queue,
    QueueStatistics,
    Schedule,
    Statistics,
    Workflow,
)
from evqueue.client.wire import to_element

T = TypeVar("T")

SERVERS_ENV = "EVQUEUE_SERVERS"
_OWNER_CACHE_SIZE = 4096
_NOT_HERE = ("UNKNOWN_INSTANCE", "WRONG_NODE")


def server_list(servers: list[str] | str | None = None) -> list[str]:
    """URLs from a list, a comma-separated string, or (None) ``$EVQUEUE_SERVERS``."""
    if servers is None:
        servers = os.environ.get(SERVERS_ENV, "")
    if isinstance(servers, str):
        servers = servers.split(",")
    return [s.strip() for s in servers if s.strip()]


class AsyncFederation:
    """asyncio client for several servers; same helpers as :class:`AsyncClient`.

    ``servers`` is a list of URLs, a comma-separated string, or None for
    ``$EVQUEUE_SERVERS``. ``rng`` picks the launch server (pass a seeded one to reproduce).
    """

    def __init__(
        self,
        servers: list[str] | str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 30.0,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        urls = server_list(servers)
        if not urls:
            raise ValueError(f"no server given (pass a list or set {SERVERS_ENV})")
        self.clients = [AsyncClient(u, user, password, timeout, max_size=max_size) for u in urls]
        self._rng = rng or random.Random()
        self._owners: OrderedDict[int, AsyncClient] = OrderedDict()
        #: Servers the last aggregated call could not reach, by URL.
        self.unreachable: dict[str, EvqConnectionError] = {}

    def __repr__(self) -> str:
        return f"AsyncFederation({[c.url for c in self.clients]!r})"

    async def __aenter__(self) -> AsyncFederation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))

    # ------------------------------------------------------------------ strategies

    async def _failover(
        self, op: Callable[[AsyncClient], Awaitable[T]], *, idempotent: bool
    ) -> tuple[AsyncClient, T]:
        """Run ``op`` on a random server, then on the next ones after connection errors. A
        non-``idempotent`` op stops at the first error that happened after sending."""
        start = self._rng.randrange(len(self.clients))
        errors: dict[str, EvqConnectionError] = {}
        for client in self.clients[start:] + self.clients[:start]:
            try:
                return client, await op(client)
            except EvqConnectionError as e:
                if e.sent and not idempotent:
                    raise
                errors[client.url] = e
        raise AllServersFailed(errors)

    async def _gather(
        self,
        op: Callable[[AsyncClient], Awaitable[T]],
        clients: list[AsyncClient] | None = None,
        *,
        fresh: bool = True,
    ) -> list[tuple[AsyncClient, T]]:
        """``op`` on every server at once; unreachable ones are skipped and recorded in
        :attr:`unreachable` (reset first unless not ``fresh``); all down: raise."""
        clients = self.clients if clients is None else clients
        results = await asyncio.gather(*(op(c) for c in clients), return_exceptions=True)
        done: list[tuple[AsyncClient, T]] = []
        if fresh:
            self.unreachable = {}
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, EvqConnectionError):
                self.unreachable[client.url] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                done.append((client, result))
        if not done:
            raise AllServersFailed(dict(self.unreachable))
        return done

    def _remember(self, instance_id: int, client: AsyncClient) -> None:
        self._owners[instance_id] = client
        self._owners.move_to_end(instance_id)
        if len(self._owners) > _OWNER_CACHE_SIZE:
            self._owners.popitem(last=False)

    async def _locate(self, instance_id: int) -> tuple[AsyncClient, Instance]:
        """The node that owns the instance (cached owner asked first), with its document."""
        cached = self._owners.get(instance_id)
        order = self.clients if cached is None else [cached] + [
            c for c in self.clients if c is not cached
        ]
        not_here: EvqError | None = None
        errors: dict[str, EvqConnectionError] = {}
        for client in order:
            try:
                instance = await client.instance(instance_id)
            except EvqError as e:
                if e.code not in _NOT_HERE:
                    raise
                if not_here is None or e.code == "WRONG_NODE":
                    not_here = e
                continue
            except EvqConnectionError as e:
                errors[client.url] = e
                continue
            self._remember(instance_id, client)
            return client, instance
        if not_here is not None:
            raise not_here
        raise AllServersFailed(errors)

    async def owner(self, instance_id: int) -> AsyncClient:
        """The client of the node that owns ``instance_id``."""
        cached = self._owners.get(instance_id)
        return cached if cached is not None else (await self._locate(instance_id))[0]

    # ------------------------------------------------------------------ raw queries

    async def query_raw(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        """Send one query: ``instance`` queries naming an ``id`` go to the instance's owner,
        launches and everything else to a random server (with failover before sending)."""
        request = to_element(query)
        if request.tag == "instance" and request.get("id") and request.get("action") != "launch":
            try:
                client = await self.owner(int(request.get("id", "")))
            except EvqError as e:
                if e.response is None:
                    raise
                return e.response
            except ValueError:
                client = self.clients[0]
            return await client.query_raw(request, timeout=timeout)
        client, response = await self._failover(
            lambda c: c.query_raw(request, timeout=timeout), idempotent=False
        )
        if request.tag == "instance" and response.get("workflow-instance-id", "").isdigit():
            self._remember(int(response.get("workflow-instance-id", "")), client)
        return response

    async def query(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        """Like :meth:`query_raw`, but a KO answer raises :class:`EvqError`."""
        response = await self.query_raw(query, timeout=timeout)
        if response.get("status") != "OK":
            raise EvqError.from_response(response)
        return response

    # ------------------------------------------------------------------ instances

    async def launch(
        self,
        name: str,
        parameters: Mapping[str, object] | None = None,
        *,
        mode: Literal["asynchronous", "synchronous"] = "asynchronous",
        timeout: int = 0,
        comment: str | None = None,
        host: str | None = None,
        user: str | None = None,
    ) -> int:
        """See :meth:`AsyncClient.launch`; the server is picked at random."""
        client, instance_id = await self._failover(
            lambda c: c.launch(
                name, parameters, mode=mode, timeout=timeout, comment=comment, host=host,
                user=user,
            ),
            idempotent=False,
        )
        self._remember(instance_id, client)
        return instance_id

    async def instance(self, instance_id: int) -> Instance:
        return (await self._locate(instance_id))[1]

    async def wait(
        self,
        instance_id: int,
        timeout: float = 0,
        *,
        progress: ProgressCallback | None = None,
        interval: float = 1.0,
    ) -> Instance:
        client = await self.owner(instance_id)
        return await client.wait(instance_id, timeout, progress=progress, interval=interval)

    async def cancel(self, instance_id: int) -> None:
        await (await self.owner(instance_id)).cancel(instance_id)

    async def instances(
        self,
        *,
        limit: int = 30,
        offset: int = 0,
        parameters: Mapping[str, object] | None = None,
        **filters: object,
    ) -> tuple[int, list[InstanceRow]]:
        """Merged instance history (see :meth:`AsyncClient.instances`): ``rows`` is the sum of
        the servers' totals; rows are ordered by end time, newest first, running ones last."""
        node = filters.pop("node", None)
        greetings = await self._gather(lambda c: c.connect())
        if node is None:
            targets = [(c, g.node) for c, g in greetings]
        else:
            named = [c for c, g in greetings if g.node == node]
            targets = [(c, str(node)) for c in (named or [greetings[0][0]])]
        by_client = dict(targets)
        parts = await self._gather(
            lambda c: c.instances(
                limit=offset + limit, offset=0, parameters=parameters, node=by_client[c],
                **filters,
            ),
            [c for c, _ in targets],
            fresh=False,
        )
        rows = [row for _, (_, part) in parts for row in part]
        rows.sort(key=lambda r: (r.end_time or datetime.min, r.id), reverse=True)
        return sum(total for _, (total, _) in parts), rows[offset : offset + limit]

    # ------------------------------------------------------------------ aggregated views

    async def ping(self) -> list[Ping]:
        """One answer per reachable server."""
        return [p for _, p in await self._gather(lambda c: c.ping())]

    async def status(self, limit: int = 0) -> list[Instance]:
        """Instances executing on any node, by id."""
        parts = await self._gather(lambda c: c.status(limit))
        return sorted((i for _, part in parts for i in part), key=lambda i: i.id)

    async def statistics(self) -> Statistics:
        """Counters summed over the nodes (``parts`` has each node's)."""
        return Statistics.combine([s for _, s in await self._gather(lambda c: c.statistics())])

    async def queue_statistics(self) -> list[QueueStatistics]:
        parts = await self._gather(lambda c: c.queue_statistics())
        return [q for _, part in parts for q in part]

    # ------------------------------------------------------------------ definitions

    async def queues(self) -> list[Queue]:
        return (await self._failover(lambda c: c.queues(), idempotent=True))[1]

    async def schedules(self) -> list[Schedule]:
        return (await self._failover(lambda c: c.schedules(), idempotent=True))[1]

    async def workflows(self) -> list[Workflow]:
        return (await self._failover(lambda c: c.workflows(), idempotent=True))[1]
