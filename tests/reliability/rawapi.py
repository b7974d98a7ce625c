"""Plain-socket and websocket API sessions for hostile tests: they send arbitrary bytes and
read answers under a deadline, so a hang shows up as a failure instead of a stuck test."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from evqtest import Daemon
from lxml import etree
from websockets.asyncio.client import ClientConnection, connect

from evqueue.protocol.auth import expected_response, sha1_hex

GOLDEN = Path(__file__).parent.parent / "data" / "golden" / "index.json"

#: every error code of protocol.md §6.1 and §6.2
ERROR_CODES = frozenset((
    "AUTH_ERROR", "UNKNOWN_COMMAND", "MISSING_PARAMETER", "INVALID_INTEGER", "INVALID_BOOLEAN",
    "INVALID_PARAMETER", "INSUFFICIENT_RIGHTS", "UNEXPECTED_EXCEPTION", "UNKNOWN_OBJECT",
    "UKNOWN_OBJECT", "UNKNOWN_WORKFLOW", "WORKFLOW_ALREADY_EXISTS",
    "INVALID_WORKFLOW_PARAMETERS", "UNKNOWN_INSTANCE", "WRONG_NODE", "TIMED_OUT",
    "INSTANCE_IS_RUNNING", "INSTANCE_ALREADY_TAGGED", "UNKNOWN_TAG", "UNKNOWN_TAG_OR_INSTANCE",
    "INVALID_XML", "UNKNOWN_QUEUE", "UNKNOWN_WORKFLOW_SCHEDULE", "INVALID_SCHEDULE",
    "UNKNOWN_RETRY_SCHEDULE", "UNKNOWN_USER", "ALREADY_NO_RIGHTS", "UNKNOWN_NOTIFICATION",
    "UNKNOWN_NOTIFICATION_TYPE", "UNKNOWN_TYPE", "INVALID_MODULE", "SQL_ERROR", "TYPE_ERROR",
    "UNKNOWN_LAUNCHER", "UNKNOWN_DISPLAY", "UNKNOWN_ALERT", "UNKNOWN_CHANNEL",
    "UNKNOWN_CHANNELGROUP",
))


def golden_requests() -> list[bytes]:
    """Every query the golden transcripts sent to the original (auth answers included)."""
    index = json.loads(GOLDEN.read_text())
    return [e["data"].encode() for t in index["transcripts"] for e in t["exchange"]
            if e["kind"] == "REQUEST"]


def check_answer(doc: etree._Element) -> None:
    """A proper answer: a ``response`` that is OK, or KO with a text and, when it has one, a
    known code; never the catch-all of a handler that crashed."""
    assert doc.tag in ("response", "ping"), etree.tostring(doc)
    if doc.tag == "ping":
        return
    status = doc.get("status")
    assert status in ("OK", "KO"), etree.tostring(doc)
    if status == "KO":
        assert doc.get("error"), etree.tostring(doc)
        code = doc.get("error-code")
        assert code is None or code in ERROR_CODES, etree.tostring(doc)
        assert doc.get("error") != "Unexpected exception", etree.tostring(doc)


def check_error(doc: etree._Element) -> None:
    """A proper refusal: KO with an error text and a known error code."""
    assert doc.tag == "response" and doc.get("status") == "KO", etree.tostring(doc)
    assert doc.get("error") and doc.get("error-code") in ERROR_CODES, etree.tostring(doc)


class Raw:
    """A lock-step API connection on a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def open(cls, daemon: Daemon, kind: str = "unix", user: str | None = "admin",
             password: str = "admin", timeout: float = 10.0) -> Raw:
        """Connect over ``tcp`` or ``unix``; log in unless ``user`` is None (then the
        challenge is left unread)."""
        if kind == "tcp":
            sock = socket.create_connection(("127.0.0.1", daemon.tcp_port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(daemon.socket)
        raw = cls(sock)
        if user is not None:
            raw.login(user, password)
        return raw

    def login(self, user: str, password: str) -> etree._Element:
        challenge = self.read()
        assert challenge is not None and challenge.tag == "auth"
        response = expected_response(sha1_hex(password), challenge.get("challenge"))
        self.send(f'<auth response="{response}" user="{user}" />'.encode())
        ready = self.read()
        assert ready is not None and ready.tag == "ready", ready
        return ready

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 10.0) -> etree._Element | None:
        """The next document, or None once the server closed; raises TimeoutError after
        ``timeout`` seconds without a complete document."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            end = self.buf.find(b"\n", start)
            while end >= 0:
                try:
                    doc = etree.fromstring(self.buf[: end])
                except etree.XMLSyntaxError:
                    end = self.buf.find(b"\n", end + 1)  # a newline inside a text node
                    continue
                self.buf = self.buf[end + 1 :]
                return doc
            start = len(self.buf)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout} s: {self.buf[:200]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except TimeoutError as e:
                raise TimeoutError(f"no answer within {timeout} s: {self.buf[:200]!r}") from e
            if not chunk:
                return None
            self.buf += chunk

    def query(self, text: str, timeout: float = 10.0) -> etree._Element:
        self.send(text.encode())
        doc = self.read(timeout)
        assert doc is not None, f"closed on {text}"
        return doc

    def drain(self, timeout: float = 10.0) -> list[etree._Element]:
        """Half-close, then every answer until the server closes (a hang fails)."""
        self.sock.shutdown(socket.SHUT_WR)
        docs = []
        while (doc := self.read(timeout)) is not None:
            docs.append(doc)
        return docs

    def close(self) -> None:
        self.sock.close()


async def ws_login(daemon: Daemon, protocol: str = "api", user: str = "admin",
                   password: str = "admin") -> ClientConnection:
    """A websocket session past the ``ready`` greeting."""
    ws = await connect(f"ws://127.0.0.1:{daemon.ws_port}/", subprotocols=[protocol],
                       max_size=None, open_timeout=10)
    challenge = etree.fromstring(await ws.recv())
    response = expected_response(sha1_hex(password), challenge.get("challenge"))
    await ws.send(f"<auth response='{response}' user='{user}' />")
    ready = etree.fromstring(await ws.recv())
    assert ready.tag == "ready", etree.tostring(ready)
    return ws


def ping_ok(daemon: Daemon) -> None:
    """The daemon still runs and answers."""
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
    raw = Raw.open(daemon)
    try:
        assert raw.query("<ping/>").get("status") == "OK"
    finally:
        raw.close()


def no_tracebacks(daemon: Daemon) -> None:
    """Nothing reached the daemon's catch-all exception handlers."""
    log = daemon.log()
    assert "Traceback" not in log and "Unexpected exception" not in log, log[-4000:]
