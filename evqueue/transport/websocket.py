"""Websocket listener: the ``api`` and ``events`` subprotocols (protocol.md §4).

Same session as TCP (challenge, ``<auth>``, ready), one XML document per text message and no
newline. ``api`` answers queries one at a time, in order; ``events`` registers subscriptions
whose API command is re-run, as the subscriber, whenever the event fires. Failures close with
1011 and the reason. Plain HTTP gets the web console (evqueue/console) or 403.

Fan-out stays cheap for the engine: throttled subscribers read a shared event log when they may
push rather than being called per event (api/subscriptions.py), and a read-only API command is
executed once for every subscriber running it as the same user while no further event occurred
(each still gets its own push with its own ids). A subscriber that cannot keep up is dropped,
never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING

from lxml import etree
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from evqueue import console
from evqueue.api.dispatch import dispatch
from evqueue.api.subscriptions import EventLog, EventsSession, Push, push_attributes
from evqueue.engine.users import User
from evqueue.protocol.errors import ApiError
from evqueue.protocol.framing import FramingError, parse_document
from evqueue.protocol.session import Authenticated, CloseConnection, QueryReady, SendData, State
from evqueue.protocol.xmlout import error_response, serialize

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

SERVER_HEADER = "evQueue websockets server"
SUBPROTOCOLS = ("api", "events")

#: a peer that does not complete a close (or leaves a refused HTTP connection open) is cut off
#: after this, so it cannot hold up the daemon's shutdown
CLOSE_TIMEOUT = 2.0

#: close codes (RFC 6455): the original's 1011 for every session error
CLOSE_ERROR = 1011
CLOSE_TOO_SLOW = 1008
CLOSE_TRY_LATER = 1013

#: actions whose answer only reads state, so one execution can serve several subscribers
_READ_ACTIONS = frozenset({"get", "query"})
#: ... as long as it is this recent (seconds) and no event occurred since it started
_SHARE_FOR = 1.0


@functools.lru_cache(maxsize=4096)
def _api_command(text: str) -> tuple[etree._Element | None, str]:
    """A subscription's API command, parsed once however many times it is pushed (handlers
    only read their query)."""
    try:
        return parse_document(text), ""
    except FramingError as e:
        return None, str(e)


def _read_only(query: etree._Element) -> bool:
    action = query.get("action", "")
    return query.tag == "ping" or action in _READ_ACTIONS or action.startswith("list")


def _close_reason(text: str) -> str:
    """A close reason fits a control frame: at most 123 bytes of UTF-8."""
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


class Answer:
    """A serialised answer whose root can take extra attributes without being serialised
    again: the push ids differ per subscriber, the (possibly large) body does not."""

    __slots__ = ("_attrib", "_rest", "_tag")

    def __init__(self, elem: etree._Element) -> None:
        self._tag = elem.tag
        self._attrib = dict(elem.attrib)
        # the root alone serialises as ``<tag attrs/>``: the full form shares that prefix
        head = len(serialize(etree.Element(self._tag, self._attrib))) - 2
        self._rest = serialize(elem)[head:]

    def with_attributes(self, extra: dict[str, str]) -> bytes:
        return serialize(etree.Element(self._tag, {**self._attrib, **extra}))[:-2] + self._rest


class WebsocketListener:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._ws: WsServer | None = None
        self._connections = 0
        self._max: int = server.config["ws.connections.max"]
        self.event_log = EventLog(server.statistics)
        #: engine events and subscription commands seen so far: an answer computed at this
        #: count is still current
        self._seq = 0
        self._answers_seq = 0
        self._answers_time = 0.0
        #: (api_cmd, id(user)) → (user, answer being or been computed at ``_answers_seq``);
        #: holding the user keeps its id from being reused while the entry lives
        self._answers: dict[tuple[str, int], tuple[User, asyncio.Future[Answer]]] = {}

    async def start(self) -> None:
        cfg = self.server.config
        ip = cfg["ws.bind.ip"]
        if not ip:
            return
        context = None
        if cfg["ws.ssl.crt"]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cfg["ws.ssl.crt"], cfg["ws.ssl.key"])
        # a client must ask for one of the subprotocols (websockets refuses others with 400)
        self._ws = await serve(
            self._handle, None if ip == "*" else ip, cfg["ws.bind.port"],
            subprotocols=list(SUBPROTOCOLS), process_request=self._process_request,
            server_header=SERVER_HEADER, max_size=cfg["network.query.maxsize"], ssl=context,
            compression=None,  # as the original; deflating every push costs more than it saves
            backlog=cfg["ws.listen.backlog"], ping_interval=cfg["ws.keepalive"] or None,
            open_timeout=cfg["ws.rcv.timeout"] or None, close_timeout=CLOSE_TIMEOUT,
        )
        self.server.events.subscribe(self._on_event)
        log.log(25, "API (ws) accepting connections on port %s", cfg["ws.bind.port"])

    async def close(self) -> None:
        if self._ws is not None:
            self.server.events.unsubscribe(self._on_event)
            self._ws.close()
            await self._ws.wait_closed()
            self._ws = None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Websocket upgrades go on; plain GETs get the console's files (``ws.console.enable``)
        or, like the original, 403."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if self.server.config["ws.console.enable"]:
            page = console.response(request.path)
            if page is not None:
                return page
        return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden")

    async def _handle(self, ws: ServerConnection) -> None:
        stats = self.server.statistics
        if self._connections >= self._max:
            log.warning("Max websocket connections reached, dropping connection")
            await ws.close(CLOSE_TRY_LATER, "Too many connections")
            return
        self._connections += 1
        stats.accepted_ws_connections += 1
        stats.current_ws_connections += 1
        conn = WsConnection(self, ws)
        try:
            await conn.run()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("Unexpected exception on websocket connection")
            await conn.close("Unexpected exception")
        finally:
            conn.detach()
            self._connections -= 1
            stats.current_ws_connections -= 1

    # -- events --------------------------------------------------------------------------
    def _on_event(self, name: str, object_id: int) -> None:
        """Engine callback: only enqueues, never waits for a client."""
        self._seq += 1
        self.event_log.publish(name, object_id)

    def commanded(self) -> None:
        """An events command may trigger a push (``send_now``) that is not an engine event:
        its answer must be computed after it too."""
        self._seq += 1

    async def answer(self, api_cmd: str, user: User) -> Answer:
        """The answer to a subscription's API command run as ``user``.

        A read-only command is executed once for all the pushes asking for it while no engine
        event occurred since it started (and for a short while): each of those pushes was
        triggered before, so the answer is at least as recent as their events.
        """
        query, error = _api_command(api_cmd)
        if query is None:
            return Answer(error_response(self.server.node, ApiError(
                "UNEXPECTED_EXCEPTION", f"Invalid query XML structure : {error}")))
        self.server.statistics.ws_queries += 1
        if not _read_only(query):
            return Answer(await dispatch(self.server, user, query, "ws"))
        now = asyncio.get_running_loop().time()
        if self._answers_seq != self._seq or now > self._answers_time + _SHARE_FOR:
            self._answers.clear()
            self._answers_seq, self._answers_time = self._seq, now
        key = (api_cmd, id(user))
        entry = self._answers.get(key)
        if entry is None:
            entry = self._answers[key] = (user, asyncio.ensure_future(self._run(query, user)))
        # shielded: a dropped subscriber must not cancel what the others wait for
        return await asyncio.shield(entry[1])

    async def _run(self, query: etree._Element, user: User) -> Answer:
        return Answer(await dispatch(self.server, user, query, "ws"))


class WsConnection:
    """One websocket client: its session, and for ``events`` its subscriptions and pusher."""

    def __init__(self, listener: WebsocketListener, ws: ServerConnection) -> None:
        self.listener = listener
        self.server = listener.server
        self.ws = ws
        self.protocol = ws.subprotocol
        self.session = self.server.new_session(None, newline=False)
        self.user: User = self.server.anonymous_user
        self.events: EventsSession | None = None
        self._wakeup = asyncio.Event()
        self._pusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: holds the closing task of a dropped subscriber (the loop keeps only weak references)
        self._closing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.ws.send(self.session.start(), text=True)
        if self.session.state is State.READY:  # authentication disabled
            self._ready(self.server.anonymous_user)
        async for message in self.ws:
            if not await self._receive(message):
                return

    async def _receive(self, message: str | bytes) -> bool:
        """Handle one message (FIFO: the next is read once this one is answered); False when
        the connection must end."""
        if self.events is not None and isinstance(message, str):
            if self.events.try_ack(message):
                self._kick()
                return True
        for event in self.session.receive_message(message):
            if isinstance(event, SendData):
                await self.ws.send(event.data, text=True)
            elif isinstance(event, Authenticated):
                self._ready(event.user)
            elif isinstance(event, CloseConnection):  # websocket sessions only close on errors
                await self.close(event.reason)
                return False
            elif isinstance(event, QueryReady) and not await self._query(event.query):
                return False
        return True

    async def _query(self, query: etree._Element) -> bool:
        """One document after authentication; False when the connection must end."""
        if self.protocol == "api":
            self.server.statistics.ws_queries += 1
            answer = await dispatch(self.server, self.user, query, "ws")
            await self.ws.send(self.session.send_response(answer), text=True)
            return True
        assert self.events is not None
        try:
            delta = self.events.command(query)
        except ApiError as e:
            await self.close(e.message)
            return False
        self.server.statistics.ws_subscriptions += delta
        self.listener.commanded()
        self._kick()
        return True

    async def close(self, reason: str, code: int = CLOSE_ERROR) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, _close_reason(reason))

    # -- events --------------------------------------------------------------------------
    def _ready(self, user: User) -> None:
        """The session is authenticated: queries run as ``user``; ``events`` starts."""
        self.user = user
        if self.protocol != "events":
            return
        self.events = EventsSession(
            self.listener.event_log, throttling=self.server.config["ws.events.throttling"],
            clock=asyncio.get_running_loop().time, notify=self._kick)
        self._pusher = asyncio.create_task(self._push_loop())

    def _kick(self) -> None:
        """Drop the connection if it fell too far behind; else wake the pusher now if a push
        is ready, or arm a timer for when the next one falls due (a follow-up owed by another
        subscription than the armed one's is then late by less than the window)."""
        assert self.events is not None
        if self.events.overflowed:
            if self._closing is None:
                log.warning("Websocket subscriber too slow, dropping its connection")
                self.detach()
                self._closing = asyncio.create_task(self.close("Subscriber too slow",
                                                               CLOSE_TOO_SLOW))
        elif self.events.ready:
            self._wakeup.set()
        elif self._timer is None and (due := self.events.next_due()) is not None:
            self._timer = asyncio.get_running_loop().call_at(due, self._wakeup.set)

    async def _push_loop(self) -> None:
        assert self.events is not None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                while (push := self.events.next_push()) is not None:
                    await self._push(push)
                self._kick()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("Unexpected exception while pushing an event")
            await self.close("Unexpected exception")

    async def _push(self, push: Push) -> None:
        answer = await self.listener.answer(push.api_cmd, self.user)
        await self.ws.send(answer.with_attributes(push_attributes(push)), text=True)

    def detach(self) -> None:
        """Stop receiving engine events (connection closing or dropped)."""
        if self.events is not None:
            self.server.statistics.ws_subscriptions -= len(self.events.subscriptions)
            self.events.clear()
        if self._pusher is not None:
            self._pusher.cancel()
            self._pusher = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
