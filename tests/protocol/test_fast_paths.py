"""The shortcuts of the hot path give exactly what the general path gives (issue #12)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from lxml import etree

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer, FramingError
from evqueue.protocol.session import QueryReady, Session, State
from evqueue.protocol.xmlout import response, serialize

SIMPLE = [
    b"<ping />",
    b"  <ping/>\n",
    b'<status action="query" type="workflows" limit="1" />\r\n',
    b"<instances action='list' filter_workflow='a&amp;b' filter_status=\"TERMINATED\"/>",
    b'<ping xmlns="urn:x" a="1"/>',
    b'<ping xmlns:p="urn:p" p:a="1" b="2"/>',
    b'<ping xml:lang="fr"/>',
    b'<ping v="caf\xc3\xa9 &#x3C; &quot;"/>',
]


def _login(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    challenge = sock.recv(4096).split(b'challenge="')[1][:40].decode()
    sock.sendall(f'<auth response="{expected_response(sha1_hex("admin"), challenge)}" '
                 'user="admin" />'.encode())
    assert b"<ready" in sock.recv(4096)
    return sock


def whole_and_split(data: bytes) -> tuple[etree._Element, etree._Element]:
    """``data`` in one feed (the shortcut) and byte by byte (the scanner)."""
    whole = Framer(1 << 20).feed(data)
    framer = Framer(1 << 20)
    split = [doc for i in range(len(data)) for doc in framer.feed(data[i:i + 1])]
    assert len(whole) == len(split) == 1
    return whole[0], split[0]


@pytest.mark.parametrize("data", SIMPLE)
def test_simple_documents_parse_as_by_the_scanner(data: bytes) -> None:
    whole, split = whole_and_split(data)
    assert whole.tag == split.tag
    assert dict(whole.attrib) == dict(split.attrib)
    assert serialize(whole) == serialize(split)
    assert "{" not in whole.tag and not any(key.startswith("{") for key in whole.attrib)


@pytest.mark.parametrize("data", [b'<ping a="1" a="2"/>', b'<ping a="&nope;"/>',
                                  b'<ping a="\xff"/>'])
def test_simple_documents_fail_as_by_the_scanner(data: bytes) -> None:
    errors = []
    for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
        framer = Framer(1 << 20)
        with pytest.raises(FramingError) as err:
            for chunk in chunks:
                framer.feed(chunk)
        errors.append(err.value.message)
    assert errors[0] == errors[1]


def test_shortcut_respects_state_and_size() -> None:
    framer = Framer(1 << 20)
    assert framer.idle
    assert framer.feed(b"<a><b/>") == [] and not framer.idle
    docs = framer.feed(b"</a>")  # the end of a pending document is not a new document
    assert [d.tag for d in docs] == ["a"] and framer.idle
    with pytest.raises(FramingError, match="maximum size"):
        Framer(5).feed(b"<ping />")


def test_bare_ping_is_recognised_only_when_ready() -> None:
    session = Session("n", lambda _: None, True, [], Framer(1 << 20), newline=True)
    session.start()
    assert session.state is State.CHALLENGE and not session.is_bare_ping(b"<ping/>")
    session = Session("n", lambda _: None, False, [], Framer(1 << 20), newline=True)
    session.start()
    for data in (b"<ping/>", b" <ping />\n", b"<ping\t/>\r\n"):
        assert session.is_bare_ping(data)
        assert [type(e) for e in session.receive_data(data)] == [QueryReady]
    for data in (b'<ping action="x"/>', b"<ping/><ping/>", b"<ping></ping>", b"<pingx/>"):
        assert not session.is_bare_ping(data)
    session.receive_data(b"<ping")  # a document is pending: the next bytes continue it
    assert not session.is_bare_ping(b"<ping/>")
    assert session.frame(b"<x/>") == b"<x/>\n"


def test_response_template_copies_are_independent() -> None:
    a = response("n")
    a.set("x", "1")
    b = response("n")
    assert serialize(b) == b'<response node="n" status="OK"/>'
    ko = response("n", "KO", error="e")
    assert serialize(ko) == b'<response error="e" node="n" status="KO"/>'


def test_attribute_fast_check_falls_back_to_escaping() -> None:
    el = etree.Element("r", {"b": 'say "hi"', "a": "x{y}", "{urn:z}c": "1\t2"})
    assert serialize(el) == b'<r a="x{y}" b="say &quot;hi&quot;" c="1&#x9;2"/>'


def test_event_loop_choice() -> None:
    code = "from evqueue.loop import event_loop_name, new_event_loop; " \
           "loop = new_event_loop(); print(event_loop_name(), type(loop).__module__)"
    env = dict(os.environ, EVQUEUE_LOOP="asyncio")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "asyncio" and out[1].startswith("asyncio")


def test_unparsed_ping_answer_is_the_handlers(daemon) -> None:
    """A daemon answers ``<ping/>`` without parsing it, ``<ping action="x"/>`` through lxml
    and the handler: same bytes (the uptime may tick between the two), pipelining intact."""
    sock = _login(daemon.socket)
    try:
        for _ in range(3):
            sock.sendall(b"<ping/>")
            fast = _read(sock, 1)[0]
            sock.sendall(b'<ping action="x"/>')
            full = _read(sock, 1)[0]
            if fast == full:
                break
        assert fast == full and fast.startswith(b'<response git-support="disabled" node=')
        sock.sendall(b"<ping/>\n<ping/>")  # two documents in one read: the general path
        assert _read(sock, 2) == [fast, fast]
    finally:
        sock.close()


def _read(sock: socket.socket, n: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < n:
        data += sock.recv(65536)
    return data.splitlines()
