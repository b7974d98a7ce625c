"""Sans-I/O half of the client: URLs, query encoding, the handshake documents, KO detection.

Nothing here touches a socket, so the asyncio transports and the tests share one definition of
what goes on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from evqueue.client.errors import EvqError, ProtocolError
from evqueue.client.model import Greeting
from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.errors import ApiError
from evqueue.protocol.framing import FramingError, parse_document
from evqueue.protocol.xmlout import serialize

DEFAULT_TCP_PORT = 5000
DEFAULT_WS_PORT = 5001

# The original engine does not start parsing a query before it holds 9 bytes counted from the
# root element's "<" (live-findings 1): shorter queries would stall until its receive timeout.
MIN_QUERY_BYTES = 9


@dataclass(frozen=True)
class Endpoint:
    """A parsed server URL. ``address`` is ``(host, port)`` for tcp, the socket path for unix
    and the URL itself for ws/wss."""

    url: str
    scheme: str
    address: tuple[str, int] | str

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")


def parse_url(url: str) -> Endpoint:
    """``tcp://host[:port]`` (port 5000), ``unix:///absolute/path`` or ``ws[s]://host[:port]``
    (port 5001); anything else is a ValueError naming the accepted forms."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        if scheme == "unix" and not parts.netloc and parts.path.startswith("/"):
            return Endpoint(url, scheme, parts.path)
        if scheme == "tcp" and parts.hostname and parts.path in ("", "/"):
            return Endpoint(url, scheme, (parts.hostname, parts.port or DEFAULT_TCP_PORT))
        if scheme in ("ws", "wss") and parts.hostname:
            netloc = parts.netloc if parts.port else f"{parts.netloc}:{DEFAULT_WS_PORT}"
            return Endpoint(url, scheme, parts._replace(netloc=netloc).geturl())
    except ValueError:  # a port that is not a number or out of range
        pass
    raise ValueError(
        f"invalid server URL {url!r}: expected tcp://host[:port], unix:///path or ws://host[:port]"
    )


def to_element(query: str | bytes | etree._Element) -> etree._Element:
    """The query as an element. Text is parsed here, with the server's own rules, so that
    malformed XML fails locally (ValueError) instead of making the server close the connection."""
    if isinstance(query, etree._Element):
        return query
    try:
        return parse_document(query)
    except FramingError as e:
        raise ValueError(f"invalid query XML: {e}") from None


def encode_stream(query: etree._Element) -> bytes:
    """A query for the TCP/unix API: the document, padded, ending with ``"\\n"``."""
    data = serialize(query).rstrip()
    missing = MIN_QUERY_BYTES - len(data) - 1
    return data + b" " * max(missing, 0) + b"\n"


def encode_message(query: etree._Element) -> str:
    """A query for the websocket ``api`` protocol: one text message, no terminator."""
    return serialize(query).decode().rstrip()


def auth_request(user: str, password: str, challenge: str) -> etree._Element:
    """The answer to an ``<auth challenge=…>`` document (protocol.md §2.1)."""
    error = ProtocolError(f"invalid auth challenge from server: {challenge!r}")
    if not challenge:
        raise error
    try:
        response = expected_response(sha1_hex(password), challenge)
    except ApiError:
        raise error from None
    return etree.Element("auth", response=response, user=user)


def parse_greeting(doc: etree._Element) -> Greeting:
    """The ``<ready>`` greeting; a KO response (failed authentication) raises EvqError."""
    if doc.tag == "ready":
        return Greeting.from_element(doc)
    if doc.tag == "response" and doc.get("status") == "KO":
        raise EvqError.from_response(doc)
    raise ProtocolError(f"expected the <ready> greeting, got <{doc.tag}>")


def check_response(doc: etree._Element) -> etree._Element:
    """``doc`` if it is a ``<response>``; anything else breaks the protocol."""
    if doc.tag != "response" or doc.get("status") not in ("OK", "KO"):
        status = doc.get("status")
        raise ProtocolError(f"invalid response from server: <{doc.tag} status={status!r}>")
    return doc
