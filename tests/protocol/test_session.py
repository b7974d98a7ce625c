"""Session state machine, driven with the byte sequences of the golden transcripts."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from lxml import etree

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer
from evqueue.protocol.session import (
    KEEPALIVE,
    Authenticated,
    CloseConnection,
    Event,
    QueryReady,
    SendData,
    Session,
    State,
)
from evqueue.protocol.xmlout import response

MODULES = [("storage", "3.3"), ("git", "3.3")]
READY = re.compile(
    rb'<ready node="localhost" profile="(ADMIN|USER)" status="OK" '
    rb'time="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d" version="3\.3"><modules>'
    rb'<module name="git" version="3\.3"/><module name="storage" version="3\.3"/>'
    rb"</modules></ready>\n"
)


@dataclass
class User:
    password: str
    profile: str


USERS = {
    "admin": User(sha1_hex("admin"), "ADMIN"),
    "bob": User(sha1_hex("secret"), "USER"),
    "broken": User("not hex at all", "USER"),
}


def stream_session(auth: bool = True) -> Session:
    return Session("localhost", USERS.get, auth, MODULES, Framer(1 << 20), newline=True)


def ws_session(auth: bool = True) -> Session:
    return Session("localhost", USERS.get, auth, MODULES, None, newline=False)


def challenge_of(greeting: bytes) -> str:
    match = re.fullmatch(
        rb'<auth challenge="([0-9a-f]{40})" node="localhost" status="OK"/>\n?', greeting
    )
    assert match, greeting
    return match.group(1).decode()


def auth_query(challenge: str, user: str = "admin", password: str = "admin") -> bytes:
    answer = expected_response(sha1_hex(password), challenge)
    return f'<auth response="{answer}" user="{user}" />\n'.encode()


def ko(error: str, code: str) -> bytes:
    doc = f'<response error="{error}" error-code="{code}" node="localhost" status="KO"/>\n'
    return doc.encode()


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_golden_00_handshake_ping_and_quit() -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    assert session.state is State.CHALLENGE

    events = session.receive_data(auth_query(challenge))
    assert kinds(events) == ["Authenticated", "SendData"]
    assert events[0] == Authenticated(USERS["admin"])
    assert READY.fullmatch(events[1].data)
    assert re.search(rb'profile="ADMIN"', events[1].data)
    assert session.state is State.READY and session.user is USERS["admin"]

    (query,) = session.receive_data(b"<ping />\n")
    assert isinstance(query, QueryReady) and query.query.tag == "ping"
    answer = response("localhost", **{"git-support": "disabled", "uptime": "2", "version": "3.3"})
    assert session.send_response(answer) == (
        b'<response git-support="disabled" node="localhost" status="OK" uptime="2" '
        b'version="3.3"/>\n'
    )
    # golden 47: quit closes without an answer
    assert session.receive_data(b"<quit />\n") == [CloseConnection("quit", error=False)]
    assert session.state is State.CLOSED
    assert session.receive_data(b"<ping/>") == []


def test_user_profile_in_greeting() -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    events = session.receive_data(auth_query(challenge, "bob", "secret"))
    assert re.search(rb'profile="USER"', events[1].data)


def test_golden_51_wrong_password() -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    events = session.receive_data(auth_query(challenge, password="wrong") + b"<ping/>\n")
    assert events == [
        SendData(ko("Invalid authentication", "AUTH_ERROR")),
        CloseConnection("Invalid authentication", error=True),
    ]
    assert session.state is State.CLOSED and session.user is None


@pytest.mark.parametrize("query", [b"<ping />\n", b"<quit />\n", b"<status action='query'/>"])
def test_golden_52_query_before_auth(query: bytes) -> None:
    session = stream_session()
    session.start()
    assert session.receive_data(query) == [
        SendData(ko("Expected 'auth' node", "AUTH_ERROR")),
        CloseConnection("Expected 'auth' node", error=True),
    ]


@pytest.mark.parametrize(
    ("query", "error", "code"),
    [
        (b'<auth response="0123" />', "Missing 'user' attribute", "MISSING_PARAMETER"),
        (b'<auth user="admin" />', "Missing 'response' attribute", "MISSING_PARAMETER"),
        (b"<auth />", "Missing 'user' attribute", "MISSING_PARAMETER"),
        (b'<auth response="0123" user="nobody" />', "Invalid authentication", "AUTH_ERROR"),
        (b'<auth response="hmac" user="admin" />', "Invalid authentication", "AUTH_ERROR"),
        (b'<auth response="hmac" user="broken" />', "Invalid hexadecimal string",
         "UNEXPECTED_EXCEPTION"),
    ],
)
def test_failed_authentications_close(query: bytes, error: str, code: str) -> None:
    session = stream_session()
    session.start()
    assert session.receive_data(query) == [SendData(ko(error, code)), CloseConnection(error, True)]


def test_uppercase_response_is_refused() -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    answer = expected_response(sha1_hex("admin"), challenge).upper()
    events = session.receive_data(f'<auth response="{answer}" user="admin" />'.encode())
    assert events[0] == SendData(ko("Invalid authentication", "AUTH_ERROR"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<queuepool action=list />\n", "attribute value expected"),  # golden 48
        (b"this is not xml\n", "invalid document structure"),  # golden 49
        (b"<queuepool action='list'></queue>\n", "expected end of tag 'queuepool'"),  # 50
    ],
)
def test_golden_48_49_50_malformed_xml_after_auth(data: bytes, message: str) -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    session.receive_data(auth_query(challenge))
    error = f"Invalid query XML structure : {message}"
    assert session.receive_data(data) == [
        SendData(ko(error, "UNEXPECTED_EXCEPTION")),
        CloseConnection(error, error=True),
    ]
    assert session.state is State.CLOSED


def test_malformed_xml_before_auth() -> None:
    session = stream_session()
    session.start()
    events = session.receive_data(b"this is not xml\n")
    assert events[0] == SendData(
        ko("Invalid query XML structure : invalid document structure", "UNEXPECTED_EXCEPTION")
    )
    assert isinstance(events[1], CloseConnection)


def test_pipelined_handshake_queries_and_quit() -> None:
    session = stream_session()
    challenge = challenge_of(session.start())
    data = auth_query(challenge) + b"<ping/><status action='query' type='workflows'/>\n<quit/>"
    events = session.receive_data(data + b"<ping/>")
    assert kinds(events) == ["Authenticated", "SendData", "QueryReady", "QueryReady",
                             "CloseConnection"]
    assert [e.query.tag for e in events if isinstance(e, QueryReady)] == ["ping", "status"]


def test_queries_before_a_malformed_one_are_still_answered() -> None:
    session = stream_session(auth=False)
    session.start()
    events = session.receive_data(b"<ping/><queuepool action='list'/>garbage")
    assert kinds(events) == ["QueryReady", "QueryReady", "SendData", "CloseConnection"]


def test_auth_disabled() -> None:
    session = stream_session(auth=False)
    assert READY.fullmatch(session.start())
    assert session.state is State.READY and session.user is None
    (event,) = session.receive_data(b'<auth response="x" user="admin" />\n')
    assert isinstance(event, QueryReady) and event.query.tag == "auth"  # UNKNOWN_COMMAND later


def test_short_query_answered_without_padding() -> None:
    session = stream_session(auth=False)
    session.start()
    assert kinds(session.receive_data(b"<ping/>")) == ["QueryReady"]


def test_timeout_keepalive_and_eof() -> None:
    session = stream_session(auth=False)
    session.start()
    assert session.keepalive() == KEEPALIVE == b"<ping />\n"
    assert session.timeout_error() == ko(
        "Error reading socket, recv() returned error 11", "UNEXPECTED_EXCEPTION"
    )
    assert session.state is State.CLOSED
    assert session.receive_eof() == []

    other = stream_session(auth=False)
    other.start()
    assert other.receive_eof() == [CloseConnection("Connection closed by peer", error=True)]
    assert other.receive_eof() == []


def test_oversized_query_closes_with_clear_error() -> None:
    session = Session("localhost", USERS.get, False, [], Framer(100), newline=True)
    session.start()
    (send, close) = session.receive_data(b"<ping a='" + b"x" * 200 + b"'/>")
    assert send == SendData(
        ko("Invalid query XML structure : Query exceeds maximum size of 100 bytes",
           "UNEXPECTED_EXCEPTION")
    )
    assert close.error


def test_lifecycle_misuse_is_refused() -> None:
    session = stream_session()
    with pytest.raises(RuntimeError):
        session.receive_data(b"<ping/>")
    session.start()
    with pytest.raises(RuntimeError):
        session.start()
    with pytest.raises(RuntimeError):
        session.receive_message(b"<ping/>")
    with pytest.raises(RuntimeError):
        ws_session().receive_data(b"<ping/>")


# -- websocket (message) sessions -----------------------------------------------------------


def test_websocket_handshake_and_queries() -> None:
    session = ws_session()
    challenge = challenge_of(session.start())
    events = session.receive_message(auth_query(challenge).decode())
    assert kinds(events) == ["Authenticated", "SendData"]
    assert READY.fullmatch(events[1].data + b"\n")  # no newline on websockets
    assert not events[1].data.endswith(b"\n")
    (query,) = session.receive_message("<ping/>")
    answer = session.send_response(response("localhost"))
    assert answer == b'<response node="localhost" status="OK"/>'
    assert query.query.tag == "ping"
    assert session.receive_message("<quit />") == []  # ignored on websockets
    assert session.state is State.READY


def test_websocket_start_without_newline() -> None:
    session = ws_session()
    assert not session.start().endswith(b"\n")
    assert not ws_session(auth=False).start().endswith(b"\n")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"<ping/>", "Expected 'auth' node"),
        (b"<quit/>", "Expected 'auth' node"),
        (b'<auth response="hmac" user="admin"/>', "Invalid authentication"),
        (b"not xml", "Invalid query XML structure : invalid document structure"),
        (b"<ping/><ping/>",
         "Invalid query XML structure : Extra content at the end of the document"),
    ],
)
def test_websocket_errors_close_without_ko_document(message: bytes, reason: str) -> None:
    session = ws_session()
    session.start()
    assert session.receive_message(message) == [CloseConnection(reason, error=True)]
    assert session.receive_message(b"<ping/>") == []


def test_websocket_malformed_after_auth() -> None:
    session = ws_session(auth=False)
    session.start()
    assert session.receive_message("<a b=c/>") == [
        CloseConnection("Invalid query XML structure : attribute value expected", error=True)
    ]


def test_queries_keep_their_attributes() -> None:
    session = stream_session(auth=False)
    session.start()
    (event,) = session.receive_data(
        b'<instance action="launch" name="golden_wf"><parameter name="greeting" value="x" />'
        b"</instance>\n"
    )
    assert isinstance(event, QueryReady)
    assert event.query.get("name") == "golden_wf"
    assert etree.tostring(event.query[0]) == b'<parameter name="greeting" value="x"/>'
