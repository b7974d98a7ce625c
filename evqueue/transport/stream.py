"""TCP and unix-socket API listeners: a thin asyncio adapter around the sans-I/O session.

Each connection is its own task: queries of one connection run strictly in order (pipelined
queries included), and a slow or hostile peer only ever stalls itself. Answers go out in a
single write with TCP_NODELAY set (no 40 ms Nagle stall as in the original).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.api.dispatch import dispatch
from evqueue.protocol.framing import Framer
from evqueue.protocol.session import (
    Authenticated,
    CloseConnection,
    QueryReady,
    SendData,
)

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024


class StreamListeners:
    """The TCP (``network.bind.ip/port``) and unix (``network.bind.path``) API listeners."""

    def __init__(self, server: Server) -> None:
        self.server = server
        cfg = server.config
        self._max = cfg["network.connections.max"]
        self._rcv_timeout = cfg["network.rcv.timeout"] or None
        self._snd_timeout = cfg["network.snd.timeout"] or None
        self._dpd = cfg["dpd.interval"]
        self._max_size = cfg["network.query.maxsize"]
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[asyncio.Task] = set()
        self._unix_path = ""

    async def start(self) -> None:
        cfg = self.server.config
        backlog = cfg["network.listen.backlog"]
        ip = cfg["network.bind.ip"]
        if ip:
            srv = await asyncio.start_server(
                self._accept, host=None if ip == "*" else ip, port=cfg["network.bind.port"],
                backlog=backlog, reuse_address=True, family=socket.AF_INET,
            )
            self._servers.append(srv)
            log.log(25, "API (tcp) accepting connections on port %s", cfg["network.bind.port"])
        path = cfg["network.bind.path"]
        if path:
            await _remove_stale_socket(path)
            srv = await asyncio.start_unix_server(self._accept, path=path, backlog=backlog)
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
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.server.statistics
        if len(self._connections) >= self._max:
            log.warning("Max API connections reached, dropping connection")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        stats.accepted_api_connections += 1
        stats.current_api_connections += 1
        try:
            await Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.CancelledError, TimeoutError):
            pass
        except Exception:
            log.exception("Unexpected exception on API connection")
        finally:
            stats.current_api_connections -= 1
            self._connections.discard(task)
            writer.transport.abort()


class Connection:
    """One API client: bytes in → session events → dispatched queries → bytes out."""

    def __init__(
        self, listeners: StreamListeners, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.listeners = listeners
        self.server = listeners.server
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = self.server.new_session(Framer(listeners._max_size), newline=True)
        self.user = self.server.anonymous_user

    async def run(self) -> None:
        stats = self.server.statistics
        await self._send(self.session.start())
        quit_cleanly = False
        while True:
            try:
                data = await asyncio.wait_for(
                    self.reader.read(_READ_SIZE), self.listeners._rcv_timeout
                )
            except TimeoutError:
                stats.api_exceptions += 1
                await self._send(self.session.timeout_error())
                return
            if not data:
                if not quit_cleanly:
                    stats.api_exceptions += 1
                return
            for event in self.session.receive_data(data):
                if isinstance(event, QueryReady):
                    stats.api_queries += 1
                    answer = await self._answer(event.query)
                    if answer is None:
                        return
                    await self._send(self.session.send_response(answer))
                elif isinstance(event, SendData):
                    await self._send(event.data)
                elif isinstance(event, Authenticated):
                    self.user = event.user
                elif isinstance(event, CloseConnection):
                    if event.error:
                        stats.api_exceptions += 1
                    quit_cleanly = True
                    return

    async def _answer(self, query: etree._Element) -> etree._Element | None:
        """Dispatch one query. Queries that wait for an instance (``instance wait``,
        synchronous launches) get ``<ping />`` keep-alives every ``dpd.interval``; a failed
        ping abandons the wait. Every other query is answered without that machinery."""
        interval = self.listeners._dpd
        if interval <= 0 or not _may_wait(query):
            return await dispatch(self.server, self.user, query, "api")
        task = asyncio.ensure_future(dispatch(self.server, self.user, query, "api"))
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            try:
                await self._send(self.session.keepalive())
            except (ConnectionError, TimeoutError):
                task.cancel()
                return None

    async def _send(self, data: bytes) -> None:
        transport = self.writer.transport
        self.writer.write(data)
        if transport.is_closing():
            # asyncio drops writes to a lost connection silently; DPD must see the failure
            raise ConnectionResetError("connection lost")
        if transport.get_write_buffer_size() > 65536:
            await asyncio.wait_for(self.writer.drain(), self.listeners._snd_timeout)


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
