"""A fake evQueue server for the client tests: real sockets (tcp, unix, websocket), the real
challenge/response handshake, canned answers chosen per test.

It runs its own event loop in a thread so that blocking clients and the CLI (which block the
test's thread) can talk to it too.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets
from lxml import etree
from websockets.asyncio.server import ServerConnection, serve

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer, parse_document

#: What a handler may return: a document (str) or a list of documents, pauses (float seconds)
#: and None (close the connection at that point).
Reply = str | list[str | float | None] | None
Handler = Callable[[etree._Element], Reply]


def response(node: str, status: str = "OK", body: str = "", **attrs: object) -> str:
    """A ``<response>`` document with ``node``/``status`` and the given attributes."""
    attrs = {"node": node, "status": status, **{k.replace("_", "-"): v for k, v in attrs.items()}}
    elem = etree.Element("response")
    for key in sorted(attrs):
        elem.set(key, str(attrs[key]))
    text = etree.tostring(elem, encoding="unicode")
    return text[:-2] + f">{body}</response>" if body else text


def ko(node: str, error: str, code: str | None = None) -> str:
    return response(node, "KO", error=error, **({"error_code": code} if code else {}))


class _Stream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server: FakeServer) -> None:
        self.reader, self.writer, self.server = reader, writer, server
        self.framer = Framer(1 << 24)
        self.pending: deque[etree._Element] = deque()

    async def send(self, doc: str) -> None:
        self.writer.write(doc.encode() + b"\n")
        await self.writer.drain()

    async def recv(self) -> etree._Element | None:
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.server.received += data
            self.pending.extend(self.framer.feed(data))
        return self.pending.popleft()

    async def reject(self, doc: str) -> None:
        await self.send(doc)
        await self.close()

    async def close(self) -> None:
        self.writer.close()


class _Ws:
    def __init__(self, ws: ServerConnection, server: FakeServer) -> None:
        self.ws, self.server = ws, server

    async def send(self, doc: str) -> None:
        await self.ws.send(doc)

    async def recv(self) -> etree._Element | None:
        try:
            message = await self.ws.recv()
        except websockets.ConnectionClosed:
            return None
        self.server.received += message.encode() if isinstance(message, str) else message
        return parse_document(message)

    async def reject(self, doc: str) -> None:
        await self.ws.close(1011, etree.fromstring(doc).get("error", ""))

    async def close(self) -> None:
        await self.ws.close()


class FakeServer:
    """Listens on tcp, unix and websocket; ``answers[(tag, action)]`` (or ``handler``)
    decides the reply to each query. ``users`` None disables authentication; ``refuse``
    makes it close every new connection at once (a broken node)."""

    def __init__(self, node: str = "fake", users: dict[str, str] | None = None) -> None:
        self.node = node
        self.users = {"admin": "admin"} if users is None else users
        self.answers: dict[tuple[str, str | None], Handler] = {
            ("ping", None): lambda q: response(
                self.node, version="3.3", uptime="12", git_support="disabled"
            ),
        }
        self.handler: Handler | None = None
        self.refuse = False
        self.queries: list[etree._Element] = []
        self.received = b""
        self.connections = 0
        self.quits = 0
        self._dir = tempfile.mkdtemp(prefix="evqfake")
        self.socket_path = os.path.join(self._dir, "api.sock")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[Any] = []
        self._sessions: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        tcp = await asyncio.start_server(self._on_stream, "127.0.0.1", 0)
        unix = await asyncio.start_unix_server(self._on_stream, self.socket_path)
        ws = await serve(self._on_ws, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol("api")])
        self._servers = [tcp, unix, ws]
        self.tcp_url = f"tcp://127.0.0.1:{tcp.sockets[0].getsockname()[1]}"
        self.unix_url = f"unix://{self.socket_path}"
        self.ws_url = f"ws://127.0.0.1:{ws.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        async def _stop() -> None:
            for server in self._servers:
                server.close()
            for task in self._sessions:
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            for server in self._servers:
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        for name in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, name))
        os.rmdir(self._dir)

    def url(self, kind: str) -> str:
        return {"tcp": self.tcp_url, "unix": self.unix_url, "ws": self.ws_url}[kind]

    def attrs(self, tag: str) -> list[dict[str, str]]:
        """Root attributes of the received queries whose root is ``tag``."""
        return [dict(q.attrib) for q in self.queries if q.tag == tag]

    # ---------------------------------------------------------------- sessions

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._session(_Stream(reader, writer, self))

    async def _on_ws(self, ws: ServerConnection) -> None:
        await self._session(_Ws(ws, self))

    def _ready(self) -> str:
        return (
            f'<ready node="{self.node}" profile="ADMIN" status="OK" time="2024-05-02 14:03:11" '
            'version="3.3"><modules><module name="storage" version="3.3"/></modules></ready>'
        )

    async def _session(self, conn: _Stream | _Ws) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._exchange(conn)
        finally:
            self._sessions.discard(task)
            await conn.close()

    async def _exchange(self, conn: _Stream | _Ws) -> None:
        self.connections += 1
        if self.refuse:
            await conn.close()
            return
        if self.users:
            challenge = os.urandom(20).hex()
            await conn.send(f'<auth challenge="{challenge}" node="{self.node}" status="OK"/>')
            auth = await conn.recv()
            password = self.users.get(auth.get("user", "")) if auth is not None else None
            if auth is None or password is None or auth.get("response") != expected_response(
                sha1_hex(password), challenge
            ):
                await conn.reject(ko(self.node, "Invalid authentication", "AUTH_ERROR"))
                return
        await conn.send(self._ready())
        while True:
            query = await conn.recv()
            if query is None:
                return
            if query.tag == "quit":
                self.quits += 1
                await conn.close()
                return
            self.queries.append(query)
            reply = self._reply(query)
            for item in reply if isinstance(reply, list) else [reply]:
                if item is None:
                    await conn.close()
                    return
                if isinstance(item, float | int):
                    await asyncio.sleep(item)
                else:
                    await conn.send(item)

    def _reply(self, query: etree._Element) -> Reply:
        if self.handler is not None:
            return self.handler(query)
        answer = self.answers.get((query.tag, query.get("action"))) or self.answers.get(
            (query.tag, None)
        )
        if answer is None:
            return ko(self.node, "Unknown command or action", "UNKNOWN_COMMAND")
        return answer(query)


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` (state changed by the fake server's thread) until true or timeout."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
