"""The asyncio client: one lazily (re)opened connection to one server, typed helpers on top.

Every other flavour (the blocking :class:`~evqueue.client.Client`, federation, the CLI) is
built on this class, so the session rules live here once: answer the challenge, send queries
lock-step, skip ``<ping />`` keep-alives, and drop the connection whenever an exchange did not
complete (its state is then unknown; the next query reconnects).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

from lxml import etree

from evqueue.client.errors import EvqConnectionError, EvqError, ProtocolError
from evqueue.client.model import (
    TIME_FORMAT,
    Greeting,
    Instance,
    InstanceRow,
    Ping,
    Queue,
    QueueStatistics,
    Schedule,
    Statistics,
    Workflow,
)
from evqueue.client.transport import Transport, open_transport
from evqueue.client.wire import (
    auth_request,
    check_response,
    parse_greeting,
    parse_url,
    to_element,
)

#: Largest document accepted from a server (instance documents can be big).
DEFAULT_MAX_SIZE = 1 << 30

#: ``instances()`` keyword filters and the attribute each one sets.
INSTANCE_FILTERS = {
    name: f"filter_{name}"
    for name in (
        "id", "node", "workflow", "status", "error", "tag_id", "schedule_id",
        "launched_from", "launched_until", "ended_from", "ended_until",
    )
}

Query = str | bytes | etree._Element
ProgressCallback = Callable[[Instance], object]


def _attr(value: object) -> str:
    """A Python value as the API writes it (booleans are yes/no, times server-local)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime(TIME_FORMAT)
    return str(value)


def _with_parameters(elem: etree._Element, parameters: Mapping[str, object] | None) -> None:
    for name, value in (parameters or {}).items():
        etree.SubElement(elem, "parameter", name=name, value=_attr(value))


class AsyncClient:
    """asyncio client for one evQueue server.

    ``url`` is ``tcp://host[:port]``, ``unix:///path`` or ``ws://host[:port]``. ``user`` and
    ``password`` (clear text) answer the server's challenge when it sends one. ``timeout``
    bounds connecting and each wait for an answer (keep-alive pings restart it; 0 or None: no
    limit); helpers that block on purpose (``wait``, synchronous ``launch``) extend it by their
    own timeout.

    Queries on one client run one at a time, in order. KO answers raise :class:`EvqError`;
    failures to get an answer raise :class:`EvqConnectionError` (a ``ConnectionError``).
    """

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 30.0,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.endpoint = parse_url(url)
        self.url = url
        self.user = user
        self._password = password
        self.timeout = timeout or None
        self.max_size = max_size
        #: The last ``<ready>`` greeting (node, profile, version, modules); None before connecting.
        self.greeting: Greeting | None = None
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r}, user={self.user!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ session

    async def connect(self) -> Greeting:
        """Open the connection now (queries otherwise do it lazily); return the greeting."""
        async with self._lock:
            await self._connected()
        assert self.greeting is not None
        return self.greeting

    async def close(self) -> None:
        """Send ``<quit />`` and close. The client stays usable: a later query reconnects."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    async def _connected(self) -> Transport:
        transport = self._transport
        if transport is not None and not transport.stale():
            return transport
        self._drop()
        transport = await open_transport(self.endpoint, self.timeout, self.max_size)
        try:
            self.greeting = await self._handshake(transport)
        except BaseException:
            transport.abort()
            raise
        self._transport = transport
        return transport

    async def _handshake(self, transport: Transport) -> Greeting:
        doc = await transport.recv(self.timeout)
        if doc.tag == "auth":
            if not (self.user and self._password):
                raise EvqError(
                    "AUTH_ERROR",
                    "Authentication is required but no user/password has been provided",
                )
            await transport.send(auth_request(self.user, self._password, doc.get("challenge", "")))
            try:
                doc = await transport.recv(self.timeout)
            except EvqConnectionError:
                if transport.rejection is None:
                    raise
                reason = transport.rejection or "Invalid authentication"
                raise EvqError("AUTH_ERROR", reason) from None
        return parse_greeting(doc)

    # ------------------------------------------------------------------ raw queries

    async def query_raw(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        """Send one query, return the ``<response>`` root whatever its status.

        ``timeout`` overrides the client's for this answer; ``0`` waits forever.
        """
        request = to_element(query)
        if request.tag == "quit":
            raise ValueError("<quit> gets no answer: use close() to end the session")
        limit = self.timeout if timeout is None else (timeout or None)
        async with self._lock:
            transport = await self._connected()
            sent = False
            try:
                await transport.send(request)
                sent = True
                doc = await transport.recv(limit)
                while doc.tag == "ping":
                    doc = await transport.recv(limit)
                return check_response(doc)
            except BaseException as e:  # the exchange did not complete: its state is unknown
                if isinstance(e, EvqConnectionError):
                    e.sent = sent
                self._drop()
                raise

    async def query(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        """Like :meth:`query_raw`, but a KO answer raises :class:`EvqError`."""
        response = await self.query_raw(query, timeout=timeout)
        if response.get("status") != "OK":
            raise EvqError.from_response(response)
        return response

    def _blocking_timeout(self, seconds: float) -> float:
        """Answer timeout of a query the server holds for ``seconds`` (0 = forever)."""
        return seconds + self.timeout if seconds and self.timeout else 0

    # ------------------------------------------------------------------ helpers

    async def ping(self) -> Ping:
        return Ping.from_response(await self.query(etree.Element("ping")))

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
        """Launch workflow ``name``; return the instance id. ``parameters`` must match the
        workflow's declaration exactly. ``mode="synchronous"`` returns once the instance ended
        (or after ``timeout`` seconds, 0 = no limit); ``host``/``user`` run it over SSH."""
        request = etree.Element("instance", action="launch", name=name, mode=mode)
        for attr, value in (("timeout", timeout), ("comment", comment), ("host", host),
                            ("user", user)):
            if value:
                request.set(attr, str(value))
        _with_parameters(request, parameters)
        wait = self._blocking_timeout(timeout) if mode == "synchronous" else None
        response = await self.query(request, timeout=wait)
        try:
            return int(response.get("workflow-instance-id", ""))
        except ValueError:
            raise ProtocolError(f"{self.url}: launch answer without an instance id") from None

    async def instance(self, instance_id: int) -> Instance:
        """The instance document (live if it runs on this node, else from the database)."""
        response = await self.query(etree.Element("instance", action="query", id=str(instance_id)))
        workflow = response.find("workflow")
        if workflow is None:
            raise ProtocolError(f"{self.url}: instance answer without a <workflow> document")
        return Instance.from_element(workflow, response.get("node", ""))

    async def wait(
        self,
        instance_id: int,
        timeout: float = 0,
        *,
        progress: ProgressCallback | None = None,
        interval: float = 1.0,
    ) -> Instance:
        """Block until the instance ends and return its final document.

        ``timeout`` in seconds (0 = no limit) raises ``EvqError("TIMED_OUT")``. With
        ``progress``, the instance is polled every ``interval`` seconds and each state is
        passed to the callback (the final one included). An instance that already ended is
        returned at once; one running on another node raises ``WRONG_NODE``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        while True:
            if progress is not None:
                current = await self.instance(instance_id)
                progress(current)
                if current.terminated:
                    return current
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise EvqError("TIMED_OUT", "Wait timed out")
            step = left if progress is None else min(interval, left or interval)
            outcome = await self._wait_step(instance_id, step)
            if outcome == "timeout":
                continue
            final = await self.instance(instance_id)
            if final.terminated:
                if progress is not None:
                    progress(final)
                return final
            if isinstance(outcome, EvqError):
                raise outcome

    async def _wait_step(
        self, instance_id: int, seconds: float | None
    ) -> Literal["ended", "timeout"] | EvqError:
        """One server-side ``wait``; an UNKNOWN_INSTANCE answer (not running here) is returned."""
        whole = math.ceil(seconds) if seconds else 0
        request = etree.Element("instance", action="wait", id=str(instance_id), timeout=str(whole))
        response = await self.query_raw(request, timeout=self._blocking_timeout(whole))
        if response.get("status") == "OK":
            return "ended"
        error = EvqError.from_response(response)
        if error.code == "TIMED_OUT":
            return "timeout"
        if error.code == "UNKNOWN_INSTANCE":
            return error
        raise error

    async def cancel(self, instance_id: int) -> None:
        """Stop launching new tasks of a running instance (running tasks go on)."""
        await self.query(etree.Element("instance", action="cancel", id=str(instance_id)))

    async def instances(
        self,
        *,
        limit: int = 30,
        offset: int = 0,
        parameters: Mapping[str, object] | None = None,
        **filters: object,
    ) -> tuple[int, list[InstanceRow]]:
        """``(total matching rows, rows)`` of the instance history, newest end first.

        Filters (None = unset): ``id``, ``node``, ``workflow``, ``status`` (EXECUTING or
        TERMINATED), ``error`` (bool), ``tag_id``, ``schedule_id``, ``launched_from``,
        ``launched_until``, ``ended_from``, ``ended_until`` (datetime or server-format text);
        ``parameters`` keeps instances launched with these parameter values.
        """
        request = etree.Element("instances", action="list", limit=str(limit), offset=str(offset))
        for name, value in filters.items():
            if name not in INSTANCE_FILTERS:
                raise TypeError(f"unknown instances() filter {name!r}")
            if value is not None:
                request.set(INSTANCE_FILTERS[name], _attr(value))
        _with_parameters(request, parameters)
        response = await self.query(request)
        rows = [InstanceRow.from_element(wf, self.url) for wf in response.iterfind("workflow")]
        total = response.get("rows", "")
        return int(total) if total.isdigit() else len(rows), rows

    async def status(self, limit: int = 0) -> list[Instance]:
        """Instances executing on this node (shallow documents with the task counters)."""
        request = etree.Element("status", action="query", type="workflows")
        if limit:
            request.set("limit", str(limit))
        response = await self.query(request)
        node = response.get("node", "")
        return [Instance.from_element(wf, node) for wf in response.iterfind("workflow")]

    async def statistics(self) -> Statistics:
        response = await self.query(etree.Element("statistics", action="query", type="global"))
        return Statistics.from_response(response)

    async def queue_statistics(self) -> list[QueueStatistics]:
        """Live queues of this node (dynamic sub-queues ``name@host`` included)."""
        response = await self.query(etree.Element("statistics", action="query", type="queue"))
        node = response.get("node", "")
        queues = response.iterfind("statistics/queue")
        return [QueueStatistics.from_element(q, node) for q in queues]

    async def queues(self) -> list[Queue]:
        response = await self.query(etree.Element("queuepool", action="list"))
        return [Queue.from_element(q) for q in response.iterfind("queue")]

    async def schedules(self) -> list[Schedule]:
        """Workflow schedules of all nodes, with their parameters (needs ADMIN)."""
        request = etree.Element("workflow_schedules", action="list", display_parameters="yes")
        response = await self.query(request)
        return [Schedule.from_element(s) for s in response.iterfind("workflow_schedule")]

    async def workflows(self) -> list[Workflow]:
        response = await self.query(etree.Element("workflows", action="list"))
        return [Workflow.from_element(w) for w in response.iterfind("workflow")]
