"""TCP and unix-socket API listeners: an asyncio protocol around the sans-I/O session.

Queries of one connection are answered strictly in order (pipelined queries included), and a
slow or hostile peer only ever stalls itself: when queries pile up behind a pending answer or the
peer does not read its answers, the connection stops reading. Answers go out in a single write with
TCP_NODELAY set (no 40 ms Nagle stall as in the original).

Speed: a query is answered inside ``data_received``; its handler runs without a Task of its
own until its first real suspension (most queries never suspend), and only then does a Task
finish it. So a handler's synchronous first step sees no current Task: code that needs one
(``asyncio.timeout``) belongs in a task the handler creates or awaits (the cluster client does
this already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import types
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, cast

from lxml import etree

from evqueue.api.dispatch import dispatch
from evqueue.api.ping import ping_answer
from evqueue.protocol.framing import Framer
from evqueue.protocol.session import (
    Authenticated,
    CloseConnection,
    Event,
    QueryReady,
    SendData,
)

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

_WRITE_HIGH = 65536  # unsent answer bytes above which the connection stops answering
_CLOSE_GRACE = 5.0  # seconds a closed connection may take to flush its last answer
# Queries parsed ahead while an answer is pending, above which the connection stops reading
# (a lock-step client never gets there: no pause/resume syscalls per suspended query).
_PENDING_HIGH = 16


class StreamListeners:
    """The TCP (``network.bind.ip/port``) and unix (``network.bind.path``) API listeners."""

    def __init__(self, server: Server) -> None:
        self.server = server
        cfg = server.config
        self._max = cfg["network.connections.max"]
        self._rcv_timeout: float | None = cfg["network.rcv.timeout"] or None
        self._snd_timeout: float | None = cfg["network.snd.timeout"] or None
        self._dpd = cfg["dpd.interval"]
        self._max_size = cfg["network.query.maxsize"]
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[Connection] = set()
        self._unix_path = ""

    async def start(self) -> None:
        cfg = self.server.config
        loop = asyncio.get_running_loop()
        backlog = cfg["network.listen.backlog"]
        ip = cfg["network.bind.ip"]
        if ip:
            srv = await loop.create_server(
                lambda: Connection(self), host=None if ip == "*" else ip,
                port=cfg["network.bind.port"], backlog=backlog, reuse_address=True,
                family=socket.AF_INET,
            )
            self._servers.append(srv)
            log.log(25, "API (tcp) accepting connections on port %s", cfg["network.bind.port"])
        path = cfg["network.bind.path"]
        if path:
            await _remove_stale_socket(path)
            srv = await loop.create_unix_server(lambda: Connection(self), path=path,
                                                backlog=backlog)
            os.chmod(path, 0o777)
            self._unix_path = path
            self._servers.append(srv)
            log.log(25, "API (unix) accepting connections on %s", path)

    async def close_listeners(self) -> None:
        """Stop accepting (first step of a graceful shutdown)."""
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
        if self._unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)

    async def close_connections(self) -> None:
        tasks = [c.task for c in self._connections if c.task is not None]
        for connection in list(self._connections):
            connection.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


class Connection(asyncio.Protocol):
    """One API client: bytes in → session events → dispatched queries → bytes out."""

    def __init__(self, listeners: StreamListeners) -> None:
        self.listeners = listeners
        self.server = listeners.server
        self.stats = self.server.statistics
        self.loop = asyncio.get_running_loop()
        self.user = self.server.anonymous_user
        self.session = self.server.new_session(Framer(listeners._max_size), newline=True)
        self.transport: asyncio.Transport | None = None
        #: the query being answered by a Task (it suspended), None when none is
        self.task: asyncio.Task | None = None
        self._events: deque[Event] = deque()
        self._open = False  # counted in the statistics and still usable
        self._eof = False
        self._write_paused = False
        self._reading_paused = False
        self._idle_since = 0.0  # last input, or end of the last answer (network.rcv.timeout)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._dpd_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not registered as asyncio.Transport subclasses)
        self.transport = transport = cast(asyncio.Transport, transport)
        listeners = self.listeners
        if len(listeners._connections) >= listeners._max:
            log.warning("Max API connections reached, dropping connection")
            transport.abort()
            return
        listeners._connections.add(self)
        self._open = True
        self.stats.accepted_api_connections += 1
        self.stats.current_api_connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        transport.write(self.session.start())
        self._become_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None and self in self.listeners._connections:
            self.listeners._connections.discard(self)
            self.stats.current_api_connections -= 1
        self._open = False
        self._events.clear()
        for timer in (self._idle_timer, self._send_timer, self._dpd_timer):
            if timer is not None:
                timer.cancel()
        if self.task is not None:
            self.task.cancel()  # nobody is left to read the answer

    def data_received(self, data: bytes) -> None:
        if not self._open:
            return
        self._idle_since = self.loop.time()
        if (not self._events and self.task is None and not self._write_paused
                and self.session.is_bare_ping(data)):  # monitoring loops: no parse, no dispatch
            self.stats.api_queries += 1
            self._write(self.session.frame(ping_answer(self.server)))
            return
        try:
            self._events.extend(self.session.receive_data(data))
        except Exception:
            log.exception("Unexpected exception on API connection")
            self.abort()
            return
        self._run()

    def eof_received(self) -> bool:
        self._eof = True
        self._run()
        return True  # half-closed: answers still pending go out before we close

    def pause_writing(self) -> None:
        self._write_paused = True
        timeout = self.listeners._snd_timeout
        if timeout is not None:
            self._send_timer = self.loop.call_later(timeout, self.abort)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self._run()

    # -- answering ------------------------------------------------------------------------
    def _run(self) -> None:
        """Act on the pending events in order, as far as nothing waits."""
        events, stats = self._events, self.stats
        while events and self._open and self.task is None and not self._write_paused:
            event = events.popleft()
            if type(event) is QueryReady:
                stats.api_queries += 1
                self._answer(event.query)
            elif type(event) is SendData:
                self._write(event.data)
            elif type(event) is Authenticated:
                self.user = event.user
            elif type(event) is CloseConnection:
                if event.error:
                    stats.api_exceptions += 1
                self._close()
        if not self._open:
            return
        if self._write_paused or (self.task is not None and len(events) >= _PENDING_HIGH):
            if not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        if self.task is not None:
            return
        if self._eof:  # the peer left without <quit/>: a connection-level failure
            stats.api_exceptions += 1
            self._close()
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._become_idle()

    def _answer(self, query: etree._Element) -> None:
        """Answer at once if the handler does not suspend, else finish it in a Task.

        Queries that wait for an instance (``instance wait``, synchronous launches) get
        ``<ping />`` keep-alives every ``dpd.interval``; a failed ping abandons the wait."""
        coro = dispatch(self.server, self.user, query, "api")
        try:
            first = coro.send(None)
        except StopIteration as done:
            self._write(self.session.send_response(done.value))
            return
        except BaseException:
            coro.close()
            raise
        self.task = self.loop.create_task(_finish(coro, first))
        self.task.add_done_callback(self._task_done)
        if self.listeners._dpd > 0 and _may_wait(query):
            self._dpd_timer = self.loop.call_later(self.listeners._dpd, self._keepalive)

    def _task_done(self, task: asyncio.Task) -> None:
        self.task = None
        if self._dpd_timer is not None:
            self._dpd_timer.cancel()
            self._dpd_timer = None
        if task.cancelled() or not self._open:
            return
        exc = task.exception()
        if exc is not None:
            log.error("Unexpected exception on API connection", exc_info=exc)
            self.abort()
            return
        self._write(self.session.send_response(task.result()))
        self._run()

    def _keepalive(self) -> None:
        transport = self.transport
        assert transport is not None and self.task is not None
        transport.write(self.session.keepalive())
        if transport.is_closing():
            # asyncio drops writes to a lost connection silently; DPD must see the failure
            self.task.cancel()
            return
        self._dpd_timer = self.loop.call_later(self.listeners._dpd, self._keepalive)

    def _write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    # -- idle timeout and closing ---------------------------------------------------------
    def _become_idle(self) -> None:
        """Start counting ``network.rcv.timeout`` from now (one timer, re-armed lazily)."""
        timeout = self.listeners._rcv_timeout
        if timeout is None:
            return
        self._idle_since = now = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if not self._open or self.task is not None or self._write_paused or self._events:
            return  # busy: _run() re-arms the timer when the connection is idle again
        deadline = self._idle_since + self.listeners._rcv_timeout  # type: ignore[operator]
        if self.loop.time() < deadline:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)
            return
        self.stats.api_exceptions += 1
        self._write(self.session.timeout_error())
        self._close()

    def _close(self) -> None:
        """Close after the answers already written are sent (bounded by a grace delay)."""
        transport = self.transport
        assert transport is not None
        self._open = False
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(_CLOSE_GRACE, transport.abort)

    def abort(self) -> None:
        """Drop the connection at once (send timeout, shutdown, internal error)."""
        self._open = False
        if self.transport is not None:
            self.transport.abort()


async def _finish(coro: Coroutine[Any, Any, etree._Element], first: Any) -> etree._Element:
    """Run the rest of ``coro``, whose first step already ran and yielded ``first``."""
    return await _resume(coro, first)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Hand what ``coro`` yields to the Task running us, and what the Task sends (or throws,
    e.g. a cancellation) back to ``coro``: the Task finishes what the first step began."""
    while True:
        try:
            value = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as done:
                return done.value


def _may_wait(query: etree._Element) -> bool:
    """Whether answering ``query`` may block until an instance ends."""
    action = query.get("action")
    if query.tag == "instance" and action == "wait":
        return True
    return (query.tag in ("instance", "launcher") and action == "launch"
            and query.get("mode") == "synchronous")


async def _remove_stale_socket(path: str) -> None:
    """Unlink a leftover socket file, but refuse to steal the socket of a live daemon."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(path), 2)
    except (OSError, TimeoutError):
        os.unlink(path)
        return
    w.close()
    raise OSError(f"{path} is in use by another running daemon")
