"""asyncio transports of the client: a document pipe over TCP, unix sockets or a websocket.

A transport only moves whole documents; the session logic (handshake, ping skipping, KO
detection) lives in :mod:`evqueue.client.aio`. Documents are split as bytes arrive, so the
client can tell before sending a query whether the server has closed the connection or sent
something unsolicited (e.g. the idle-timeout error the server sends before closing) and use a
fresh connection instead of reading a stale answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

import websockets
from lxml import etree
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from evqueue.client.errors import EvqConnectionError, EvqTimeout, ProtocolError
from evqueue.client.wire import Endpoint, encode_message, encode_stream
from evqueue.protocol.framing import Framer, FramingError, parse_document

_QUIT = encode_stream(etree.Element("quit"))


class Transport:
    """Common state: a queue of received documents and the reason the pipe broke, if it did."""

    def __init__(self, url: str, max_size: int) -> None:
        self.url = url
        self.max_size = max_size
        self._documents: deque[etree._Element] = deque()
        self._failure: EvqConnectionError | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: Text of a websocket close 1011: how the server rejects authentication there.
        self.rejection: str | None = None

    def stale(self) -> bool:
        """True if the connection cannot carry a new query: it is closed, or the server
        sent a document nobody asked for (anything but a late keep-alive ``<ping />``)."""
        while self._documents and self._documents[0].tag == "ping":
            self._documents.popleft()
        return self._failure is not None or bool(self._documents)

    async def recv(self, timeout: float | None) -> etree._Element:
        """The next document; raises EvqConnectionError (EvqTimeout after ``timeout``)."""
        while not self._documents:
            if self._failure is not None:
                raise type(self._failure)(str(self._failure))
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                raise EvqTimeout(f"{self.url}: no answer within {timeout:g} s") from None
            finally:
                self._waiter = None
        return self._documents.popleft()

    def _malformed(self, error: FramingError) -> None:
        self._fail(ProtocolError(f"{self.url}: malformed document from server: {error}"))
        self.abort()

    def _fail(self, error: EvqConnectionError) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def send(self, query: etree._Element) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Polite close (``<quit />`` where the protocol has it)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once (after an error its state is unknown)."""
        raise NotImplementedError


class StreamTransport(Transport, asyncio.Protocol):
    """TCP or unix-socket API connection (documents end with ``"\\n"``)."""

    _transport: asyncio.Transport

    def __init__(self, url: str, max_size: int) -> None:
        super().__init__(url, max_size)
        self._framer = Framer(max_size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not registered as asyncio.Transport subclasses)
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._documents.extend(self._framer.feed(data))
        except FramingError as e:
            self._malformed(e)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(EvqConnectionError(f"{self.url}: connection closed by server{reason}"))

    async def send(self, query: etree._Element) -> None:
        self._transport.write(encode_stream(query))

    async def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(_QUIT)
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


class WebSocketTransport(Transport):
    """Websocket ``api`` sub-protocol connection (one document per text message)."""

    def __init__(self, url: str, max_size: int) -> None:
        super().__init__(url, max_size)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    def start(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                self._documents.append(parse_document(message, self.max_size))
                self._wake()
        except FramingError as e:
            self._malformed(e)
        except websockets.ConnectionClosed:
            pass
        code, reason = self._ws.close_code, self._ws.close_reason or ""
        if code == 1011:
            self.rejection = reason
        self._fail(EvqConnectionError(f"{self.url}: websocket closed ({code} {reason})"))

    def stale(self) -> bool:
        assert self._ws is not None
        return self._ws.state is not State.OPEN or super().stale()

    async def send(self, query: etree._Element) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(encode_message(query))
        except websockets.ConnectionClosed as e:
            raise EvqConnectionError(f"{self.url}: websocket closed: {e}") from None

    async def close(self) -> None:
        assert self._ws is not None
        await self._ws.close()

    def abort(self) -> None:
        if self._ws is not None:
            self._ws.transport.abort()


async def open_transport(endpoint: Endpoint, timeout: float | None, max_size: int) -> Transport:
    """Connect to ``endpoint``; every failure is an EvqConnectionError naming the URL."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            if endpoint.websocket:
                assert isinstance(endpoint.address, str)
                wst = WebSocketTransport(endpoint.url, max_size)
                ws = await websockets.connect(
                    endpoint.address, subprotocols=[websockets.Subprotocol("api")],
                    max_size=max_size, proxy=None, open_timeout=None,
                )
                if ws.subprotocol != "api":
                    await ws.close()
                    raise ProtocolError(f"{endpoint.url}: server refused the 'api' sub-protocol")
                wst.start(ws)
                return wst
            if endpoint.scheme == "unix":
                assert isinstance(endpoint.address, str)
                _, proto = await loop.create_unix_connection(
                    lambda: StreamTransport(endpoint.url, max_size), endpoint.address
                )
            else:
                host, port = endpoint.address
                _, proto = await loop.create_connection(
                    lambda: StreamTransport(endpoint.url, max_size), host, port
                )
            return proto
    except TimeoutError:
        raise EvqTimeout(f"{endpoint.url}: connection timed out after {timeout:g} s") from None
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as e:
        if isinstance(e, EvqConnectionError):
            raise
        raise EvqConnectionError(f"{endpoint.url}: cannot connect: {e}") from e
