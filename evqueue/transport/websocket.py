"""Websocket listener: the ``api`` and ``events`` subprotocols (protocol.md §4).

Same session as TCP (challenge, ``<auth>``, ready), one XML document per text message and no
newline. ``api`` answers queries in order; ``events`` registers subscriptions whose API command
is re-run, as the subscriber, whenever the event fires. Failures close with 1011 and the reason.
A subscriber that cannot keep up is dropped, never waited for. Plain HTTP gets 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING

from lxml import etree
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from evqueue.api.dispatch import dispatch
from evqueue.api.subscriptions import EventsSession, Push, push_attributes
from evqueue.protocol.errors import ApiError
from evqueue.protocol.framing import FramingError, parse_document
from evqueue.protocol.session import Authenticated, CloseConnection, QueryReady, SendData
from evqueue.protocol.xmlout import error_response

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

SERVER_HEADER = "evQueue websockets server"


#: ``<event action="ack" event_id="N"/>`` in either attribute order, either quotes
_ACK = re.compile(r"""\s*<event\s+(?:action=(["'])ack\1\s+event_id=(["'])(\d+)\2"""
                  r"""|event_id=(["'])(\d+)\4\s+action=(["'])ack\6)\s*/>\s*\Z""")


@functools.lru_cache(maxsize=4096)
def _api_command(text: str) -> tuple[etree._Element | None, str]:
    """A subscription's API command, parsed once however many times it is pushed (handlers
    only read their query)."""
    try:
        return parse_document(text), ""
    except FramingError as e:
        return None, str(e)


class WebsocketListener:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._ws: WsServer | None = None
        self._connections: set[ServerConnection] = set()
        self._max = server.config["ws.connections.max"]
        self._throttling: bool = server.config["ws.events.throttling"]
        self._max_size: int = server.config["network.query.maxsize"]

    async def start(self) -> None:
        cfg = self.server.config
        ip = cfg["ws.bind.ip"]
        if not ip:
            return
        context = None
        if cfg["ws.ssl.crt"]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cfg["ws.ssl.crt"], cfg["ws.ssl.key"])
        self._ws = await serve(
            self._handle, None if ip == "*" else ip, cfg["ws.bind.port"],
            subprotocols=["api", "events"], process_request=self._process_request,
            server_header=SERVER_HEADER, max_size=self._max_size, ssl=context,
            compression=None,  # as the original; deflating every push costs more than it saves
            backlog=cfg["ws.listen.backlog"], ping_interval=cfg["ws.keepalive"] or None,
            open_timeout=cfg["ws.rcv.timeout"] or None,
        )
        log.log(25, "API (ws) accepting connections on port %s", cfg["ws.bind.port"])

    async def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
            self._ws = None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        return Response(HTTPStatus.FORBIDDEN.value, "Forbidden",
                        Headers([("Content-Type", "text/plain"), ("Server", SERVER_HEADER)]),
                        b"Forbidden\n")

    async def _handle(self, ws: ServerConnection) -> None:
        stats = self.server.statistics
        if len(self._connections) >= self._max:
            log.warning("Max websocket connections reached, dropping connection")
            await ws.close(1013, "Too many connections")
            return
        self._connections.add(ws)
        stats.accepted_ws_connections += 1
        stats.current_ws_connections += 1
        conn = WsConnection(self, ws)
        try:
            await conn.run()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("Unexpected exception on websocket connection")
            with contextlib.suppress(Exception):
                await ws.close(1011, "Unexpected exception")
        finally:
            conn.detach()
            self._connections.discard(ws)
            stats.current_ws_connections -= 1


class WsConnection:
    """One websocket client."""

    def __init__(self, listener: WebsocketListener, ws: ServerConnection) -> None:
        self.server = listener.server
        self.ws = ws
        self.protocol = ws.subprotocol
        self.session = self.server.new_session(None, newline=False)
        self.user = self.server.anonymous_user
        self.events: EventsSession | None = None
        self._wakeup = asyncio.Event()
        self._pusher: asyncio.Task | None = None

    async def run(self) -> None:
        if self.protocol not in ("api", "events"):
            await self.ws.close(1002, "A subprotocol (api or events) is required")
            return
        await self.ws.send(self.session.start().decode("utf-8"))
        async for message in self.ws:
            if self.events is not None and isinstance(message, str):
                ack = _ACK.match(message)
                if ack is not None:  # every push is acknowledged: skip the XML parser
                    self.events.ack(int(ack.group(3) or ack.group(5)))
                    self._wakeup.set()
                    continue
            events = self.session.receive_message(message)
            outgoing: list[bytes] = []
            for event in events:
                if isinstance(event, SendData):
                    outgoing.append(event.data)
                elif isinstance(event, Authenticated):
                    self.user = event.user
                    if self.protocol == "events":
                        self._start_events()
                elif isinstance(event, CloseConnection):
                    if event.error:
                        await self.ws.close(1011, (event.reason or "error")[:120])
                        return
                    outgoing.clear()
                elif isinstance(event, QueryReady):
                    for data_out in outgoing:
                        await self.ws.send(data_out.decode("utf-8"))
                    outgoing.clear()
                    if not await self._query(event.query):
                        return
            for data_out in outgoing:
                await self.ws.send(data_out.decode("utf-8"))

    async def _query(self, query: etree._Element) -> bool:
        """Handle one document after authentication; False when the connection must end."""
        if self.protocol == "api":
            if query.tag == "quit":
                return True
            self.server.statistics.ws_queries += 1
            answer = await dispatch(self.server, self.user, query, "ws")
            await self.ws.send(self.session.send_response(answer).decode("utf-8"))
            return True
        if self.events is None:
            self._start_events()
        assert self.events is not None
        try:
            delta = self.events.command(query)
        except ApiError as e:
            await self.ws.close(1011, e.message[:120])
            return False
        self.server.statistics.ws_subscriptions += delta
        self._wakeup.set()
        return True

    # -- events --------------------------------------------------------------------------
    def _start_events(self) -> None:
        if self.events is not None:
            return
        self.events = EventsSession(throttling=self.server.config["ws.events.throttling"])
        self.server.events.subscribe(self._on_event)
        self._pusher = asyncio.ensure_future(self._push_loop())

    def _on_event(self, name: str, object_id: int) -> None:
        assert self.events is not None
        n = self.events.event(name, object_id)
        if n:
            self.server.statistics.ws_events += n
            if self.events.overflowed:
                log.warning("Websocket subscriber too slow, dropping its connection")
                self.detach()
                asyncio.ensure_future(self.ws.close(1008, "Subscriber too slow"))
                return
            self._wakeup.set()

    async def _push_loop(self) -> None:
        assert self.events is not None
        queue = self.events.queue
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while queue:
                    await self._push(queue.popleft())
        except ConnectionClosed:
            pass

    async def _push(self, push: Push) -> None:
        query, error = _api_command(push.api_cmd)
        if query is None:
            answer = error_response(self.server.node, ApiError(
                "UNEXPECTED_EXCEPTION", f"Invalid query XML structure : {error}"))
        else:
            self.server.statistics.ws_queries += 1
            answer = await dispatch(self.server, self.user, query, "ws")
        for k, v in push_attributes(push).items():
            answer.set(k, v)
        await self.ws.send(self.session.send_response(answer).decode("utf-8"))

    def detach(self) -> None:
        """Stop receiving engine events (connection closing)."""
        if self.events is not None:
            self.server.events.unsubscribe(self._on_event)
            self.server.statistics.ws_subscriptions -= len(self.events.subscriptions)
            self.events.subscriptions.clear()
        if self._pusher is not None:
            self._pusher.cancel()
            self._pusher = None
