"""Replay the original engine's golden transcripts (tests/data/golden) against our daemon.

The daemon starts on an empty database, like the capture. Transcripts run in order on one
connection; a transcript that begins with a server document opens a new connection. Answers
are compared after canonicalisation: attributes sorted, whitespace-only text dropped, volatile
values (challenge, times, pids, tids, some counters) masked. Timing races recorded by the
capture (09/10: the instance may already have ended; 16: wait after the end; 18/19: rows
ending in the same second) accept their alternative outcomes.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from evqtest import Daemon
from lxml import etree

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer

DATA = Path(__file__).parent / "data" / "golden"
INDEX = json.loads((DATA / "index.json").read_text())
TRANSCRIPTS = INDEX["transcripts"]
#: 50 is the original's 30 s stall (we answer at once: see
#: test_mismatched_end_tag_is_answered_at_once)
SKIP = {"50-error-malformed-xml-mismatched-tag.xml"}
#: 22 shows the capture machine's configuration: sent (the statistics of 23 count it) but only
#: checked for shape
SHAPE_ONLY = {"22-status-configuration.xml"}
RACES = {"09-instance-query-first-poll.xml", "10-status-workflows-during-run.xml"}
ALTERNATIVES = {
    "16-instance-wait.xml": ['<response error="Unknown instance ID" '
                             'error-code="UNKNOWN_INSTANCE" node="localhost" status="KO"/>'],
    # instances 1 and 2 may end in different seconds: the newest is listed first
    "19-instances-list-filtered.xml": [
        '<response node="localhost" rows="2" status="OK"><workflow comment="" end_time="" '
        'errors="0" host="" id="2" name="golden_wf" node_name="localhost" start_time="" '
        'status="TERMINATED"><tags/></workflow></response>'],
}
VOLATILE = {"challenge", "response", "time", "uptime", "pid", "tid", "scheduled_at", "retry_at"}
STATS_VOLATILE = {"api_queries", "workflow_status_queries"}


def canon(doc: etree._Element, *, reduced: bool = False) -> list[str]:
    if reduced:
        return [f"{doc.tag} " + " ".join(f"{k}={doc.get(k)!r}" for k in
                                         ("status", "error", "error-code") if doc.get(k))]
    out: list[str] = []

    def walk(e: etree._Element, depth: int) -> None:
        attrs = []
        for k in sorted(e.attrib):
            masked = k in VOLATILE or k.endswith("_time") or (
                e.tag == "statistics" and k in STATS_VOLATILE)
            attrs.append(f"{k}={'*' if masked else e.get(k)!r}")
        out.append("  " * depth + f"<{e.tag} {' '.join(attrs)}>")
        for text in [e.text] + [c.tail for c in e]:
            if text and text.strip():
                out.append("  " * depth + f"  #text {text!r}")
        rows = list(e)
        if e.tag == "response" and rows and all(r.tag == "workflow" and r.get("end_time")
                                                for r in rows):
            rows.sort(key=lambda r: int(r.get("id", "0")))  # same-second end times (18/19)
        for c in rows:
            walk(c, depth + 1)

    walk(doc, 0)
    return out


class Conn:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.framer = Framer(64 * 1024 * 1024)
        self.docs: list[etree._Element] = []
        self.challenge = ""

    def recv(self) -> etree._Element | None:
        while not self.docs:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.docs += [d for d in self.framer.feed(data) if d.tag != "ping"]
        return self.docs.pop(0)

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                if data.strip():
                    return False
        except OSError:
            return True

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode("utf-8"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def replay():
    root = tempfile.mkdtemp(prefix="evqg")
    d = Daemon(root)
    d.start()
    state = {"daemon": d, "conn": None}
    yield state
    if state["conn"] is not None:
        state["conn"].close()
    d.stop()
    d.kill_forker()
    shutil.rmtree(root, ignore_errors=True)


def _login(conn: Conn) -> None:
    greeting = conn.recv()
    assert greeting is not None and greeting.tag == "auth"
    resp = expected_response(sha1_hex("admin"), greeting.get("challenge"))
    conn.send(f'<auth response="{resp}" user="admin" />\n')
    ready = conn.recv()
    assert ready is not None and ready.tag == "ready", ready


def _compare(expected: str, got: etree._Element, file: str) -> None:
    exp = etree.fromstring(expected.encode("utf-8"))
    if file in SHAPE_ONLY:
        assert got.get("status") == "OK" and got[0].tag == exp[0].tag
        return
    if canon(exp) == canon(got):
        return
    for alt in ALTERNATIVES.get(file, []):
        if canon(etree.fromstring(alt.encode())) == canon(got):
            return
    if file in RACES and canon(exp, reduced=True) == canon(got, reduced=True):
        return
    assert "\n".join(canon(got)) == "\n".join(canon(exp))


@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=[t["file"] for t in TRANSCRIPTS])
def test_golden(replay, transcript):
    file = transcript["file"]
    if file in SKIP:
        pytest.skip("configuration-specific or replaced by a dedicated test")
    daemon = replay["daemon"]
    exchange = transcript["exchange"]
    i = 0
    if exchange[0]["kind"] == "RESPONSE":
        if replay["conn"] is not None:
            replay["conn"].close()
        conn = replay["conn"] = Conn(daemon.socket)
        greeting = conn.recv()
        assert greeting is not None
        conn.challenge = greeting.get("challenge", "")
        _compare(exchange[0]["data"], greeting, file)
        i = 1
    elif replay["conn"] is None:
        conn = replay["conn"] = Conn(daemon.socket)
        _login(conn)
    conn = replay["conn"]
    request = ""
    for e in exchange[i:]:
        if e["kind"] == "REQUEST":
            request = e["data"]
            nxt = exchange[exchange.index(e) + 1] if e is not exchange[-1] else None
            if request.lstrip().startswith("<auth") and nxt and nxt["data"].startswith("<ready"):
                request = re.sub(r'response="[^"]*"', 'response="{}"'.format(expected_response(
                    sha1_hex("admin"), conn.challenge)), request)
            conn.send(request)
        elif e["kind"] == "RESPONSE":
            got = conn.recv()
            assert got is not None, "server closed the connection"
            got = _poll_until_terminated(conn, request, e["data"], got)
            _compare(e["data"], got, file)
        elif e["kind"] == "CLOSED":
            break
    if exchange[-1]["kind"] == "CLOSED" or "EOF" in (transcript.get("after") or ""):
        assert conn.closed(), "server did not close the connection"
        conn.close()
        replay["conn"] = None


def _poll_until_terminated(conn: Conn, request: str, expected: str,
                           got: etree._Element) -> etree._Element:
    """Re-send an instance query while the golden answer is TERMINATED but ours still runs."""
    if 'action="query"' not in request or not request.startswith("<instance"):
        return got
    exp = etree.fromstring(expected.encode())
    if not len(exp) or exp[0].get("status") != "TERMINATED":
        return got
    deadline = time.monotonic() + 20
    while len(got) and got[0].get("status") == "EXECUTING" and time.monotonic() < deadline:
        time.sleep(0.05)
        conn.send(request)
        got = conn.recv()
    return got


def test_mismatched_end_tag_is_answered_at_once(daemon):
    """Golden 50: the original stalls 30 s; we answer the error at once and close."""
    conn = Conn(daemon.socket)
    _login(conn)
    start = time.monotonic()
    conn.send("<queuepool action='list'></queue>\n")
    got = conn.recv()
    assert time.monotonic() - start < 2
    assert got is not None and got.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert got.get("error", "").startswith("Invalid query XML structure : ")
    assert conn.closed()
