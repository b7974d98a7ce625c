"""The API session state machine (sans-I/O), shared by TCP/unix streams and websockets.

CHALLENGE (auth on) → READY → CLOSED (protocol.md §1.2, §2, §4.3). The transport feeds bytes
or messages in and acts on the returned events, in order: it dispatches each ``QueryReady``
and writes ``send_response(answer)``, writes ``SendData``, closes on ``CloseConnection``.

Stream and message transports differ only where the original did:
- streams end every document with ``"\\n"`` (in the same bytes: one write, no Nagle stall);
  connection-level errors send a KO document, then close; ``<quit/>`` closes silently;
- websockets send no newline; connection-level errors close (1011, reason = error text)
  without a KO document; ``<quit/>`` is ignored once authenticated.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from lxml import etree

from evqueue import VERSION
from evqueue.protocol.auth import check_response, new_challenge
from evqueue.protocol.errors import ApiError
from evqueue.protocol.framing import Framer, FramingError, parse_document
from evqueue.protocol.xmlout import error_response, serialize

__all__ = [
    "KEEPALIVE",
    "Authenticated",
    "CloseConnection",
    "Event",
    "QueryReady",
    "SendData",
    "Session",
    "State",
    "UserRecord",
]

KEEPALIVE = b"<ping />\n"
"""Dead-peer-detection bytes written during synchronous waits on streams (§1.8)."""

IDLE_TIMEOUT = ApiError(
    "UNEXPECTED_EXCEPTION", "Error reading socket, recv() returned error 11", fatal=True
)
"""What the original answered when ``network.rcv.timeout`` expired (EAGAIN from recv)."""


_BARE_PING = re.compile(rb"[ \t\r\n]*<ping[ \t\r\n]*/>[ \t\r\n]*")


class UserRecord(Protocol):
    """What the session needs of the caller's user objects."""

    password: str  # lowercase hex SHA-1 of the password
    profile: str  # "ADMIN" or "USER", shown in the greeting


@dataclass(frozen=True, slots=True)
class QueryReady:
    """A query to dispatch; answer it with ``Session.send_response``."""

    query: etree._Element


@dataclass(frozen=True, slots=True)
class SendData:
    """Bytes produced by the session itself (greeting, connection-level KO)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The client authenticated as ``user`` (the object returned by ``lookup_user``)."""

    user: Any


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the connection. ``error`` is False only for ``<quit/>``.

    Websocket transports close with status 1011 and ``reason`` when ``error`` is True.
    """

    reason: str
    error: bool


Event = QueryReady | SendData | Authenticated | CloseConnection


class State(enum.Enum):
    NEW = "new"
    CHALLENGE = "challenge"
    READY = "ready"
    CLOSED = "closed"


class Session:
    """One API connection. ``framer`` is None for message transports (websockets)."""

    def __init__(
        self,
        node: str,
        lookup_user: Callable[[str], UserRecord | None],
        auth_enabled: bool,
        modules: Iterable[tuple[str, str]],
        framer: Framer | None,
        newline: bool,
    ) -> None:
        self.node = node
        self._lookup_user = lookup_user
        self._auth_enabled = auth_enabled
        self._modules = sorted(modules)
        self._framer = framer
        self._newline = b"\n" if newline else b""
        self._challenge = ""
        self.state = State.NEW
        self.user: UserRecord | None = None
        """The authenticated user; None before authentication and when auth is disabled."""

    def start(self) -> bytes:
        """The first document: the challenge, or the greeting when auth is disabled."""
        if self.state is not State.NEW:
            raise RuntimeError("session already started")
        if not self._auth_enabled:
            self.state = State.READY
            return self._greeting("ADMIN")
        self.state = State.CHALLENGE
        self._challenge = new_challenge()
        challenge = etree.Element("auth", challenge=self._challenge, node=self.node, status="OK")
        return self.send_response(challenge)

    def receive_data(self, data: bytes) -> list[Event]:
        """Bytes from a stream transport; may complete several pipelined queries."""
        if self._framer is None:
            raise RuntimeError("receive_data() on a message session")
        if self._check_open():
            return []
        try:
            docs = self._framer.feed(data)
        except FramingError as err:
            events = self._handle(err.documents)
            if self.state is not State.CLOSED:
                events += self._malformed(err)
            return events
        return self._handle(docs)

    def is_bare_ping(self, data: bytes) -> bool:
        """True when ``data`` is exactly one ``<ping/>`` (no attribute) that ``receive_data``
        would turn into a query: the transport may answer it unparsed (``frame``)."""
        return (self.state is State.READY and self._framer is not None and self._framer.idle
                and _BARE_PING.fullmatch(data) is not None)

    def receive_message(self, data: bytes | str) -> list[Event]:
        """One websocket message, which must hold exactly one document."""
        if self._framer is not None:
            raise RuntimeError("receive_message() on a stream session")
        if self._check_open():
            return []
        try:
            doc = parse_document(data)
        except FramingError as err:
            return self._malformed(err)
        return self._handle((doc,))

    def receive_eof(self) -> list[Event]:
        """The peer closed without ``<quit/>``: a connection-level failure for statistics."""
        if self.state is State.CLOSED:
            return []
        self.state = State.CLOSED
        return [CloseConnection("Connection closed by peer", error=True)]

    def send_response(self, elem: etree._Element) -> bytes:
        """The bytes to write for one answer document."""
        return serialize(elem) + self._newline

    def frame(self, serialized: bytes) -> bytes:
        """The bytes to write for one answer already serialised."""
        return serialized + self._newline

    def keepalive(self) -> bytes:
        """What to write every ``dpd.interval`` while a stream query waits (§1.8)."""
        return KEEPALIVE

    def timeout_error(self) -> bytes:
        """The KO to write when the receive timeout expires (streams); then close."""
        self.state = State.CLOSED
        return self.send_response(error_response(self.node, IDLE_TIMEOUT))

    def _check_open(self) -> bool:
        """True when input must be ignored because the session is closed."""
        if self.state is State.NEW:
            raise RuntimeError("session not started")
        return self.state is State.CLOSED

    def _fatal(self, err: ApiError) -> list[Event]:
        """A connection-level error: KO then close on streams, close only on websockets."""
        self.state = State.CLOSED
        close = CloseConnection(err.message, error=True)
        if self._framer is None:
            return [close]
        return [SendData(self.send_response(error_response(self.node, err))), close]

    def _malformed(self, err: FramingError) -> list[Event]:
        message = f"Invalid query XML structure : {err.message}"
        return self._fatal(ApiError("UNEXPECTED_EXCEPTION", message, fatal=True))

    def _handle(self, docs: Iterable[etree._Element]) -> list[Event]:
        events: list[Event] = []
        for doc in docs:
            if self.state is State.READY:
                if doc.tag != "quit":
                    events.append(QueryReady(doc))
                elif self._framer is not None:
                    self.state = State.CLOSED
                    events.append(CloseConnection("quit", error=False))
            elif self.state is State.CHALLENGE:
                events += self._authenticate(doc)
            else:
                break
        return events

    def _authenticate(self, doc: etree._Element) -> list[Event]:
        # errata 5: <quit/> in reply to the challenge is answered like any other non-auth root.
        try:
            if doc.tag != "auth":
                raise ApiError("AUTH_ERROR", "Expected 'auth' node", fatal=True)
            login = doc.get("user")
            if login is None:
                raise ApiError("MISSING_PARAMETER", "Missing 'user' attribute", fatal=True)
            response = doc.get("response")
            if response is None:
                raise ApiError("MISSING_PARAMETER", "Missing 'response' attribute", fatal=True)
            user = self._lookup_user(login)
            if user is None or not check_response(user.password, self._challenge, response):
                raise ApiError("AUTH_ERROR", "Invalid authentication", fatal=True)
        except ApiError as err:  # a failed authentication always closes the connection
            return self._fatal(err)
        self.user = user
        self.state = State.READY
        return [Authenticated(user), SendData(self._greeting(user.profile))]

    def _greeting(self, profile: str) -> bytes:
        ready = etree.Element(
            "ready",
            node=self.node,
            profile=profile,
            status="OK",
            time=time.strftime("%Y-%m-%d %H:%M:%S"),
            version=VERSION,
        )
        modules = etree.SubElement(ready, "modules")
        for name, version in self._modules:
            etree.SubElement(modules, "module", name=name, version=version)
        return self.send_response(ready)
