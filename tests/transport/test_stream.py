"""The TCP and unix API over real sockets: framing, timeouts, keep-alives, limits, isolation."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest
from evqtest import create_workflow
from lxml import etree

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer

SLEEP3 = ('<workflow><subjobs><job><tasks><task path="/bin/sleep" queue="default">'
          "<input>3</input></task></tasks></job></subjobs></workflow>")


class Raw:
    """A lock-step raw client that also sees ``<ping />`` keep-alives."""

    def __init__(self, daemon, tcp: bool = False, login: bool = True) -> None:
        if tcp:
            self.sock = socket.create_connection(("127.0.0.1", daemon.tcp_port))
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(daemon.socket)
        self.sock.settimeout(10)
        self.framer = Framer(64 << 20)
        self.docs: list[etree._Element] = []
        if login:
            challenge = self.recv().get("challenge")
            self.send(f'<auth response="{expected_response(sha1_hex("admin"), challenge)}" '
                      'user="admin" />')
            assert self.recv().tag == "ready"

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def recv(self) -> etree._Element | None:
        while not self.docs:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.docs += self.framer.feed(data)
        return self.docs.pop(0)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_short_and_pipelined_queries_are_answered(daemon, tcp):
    c = Raw(daemon, tcp)
    start = time.monotonic()
    c.send("<ping/>")
    assert c.recv().get("status") == "OK"
    assert time.monotonic() - start < 1
    c.send("<ping />\n<status action='query' type='workflows' />\n"
           "<?xml version='1.0'?>\n<queuepool action='list'/>")
    answers = [c.recv() for _ in range(3)]
    assert [a.get("status") for a in answers] == ["OK"] * 3
    assert answers[1].get("count") == "0" and answers[2][0].tag == "queue"
    c.send("\n<?xml version='1.0' encoding='utf-8'?>\n<ping/>\n")
    assert c.recv().get("status") == "OK"
    c.close()


def test_tcp_answer_arrives_in_one_segment_with_nodelay(daemon):
    c = Raw(daemon, tcp=True)
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) in (0, 1)
    c.send("<ping/>")
    data = c.sock.recv(65536)
    assert data.endswith(b"/>\n") and data.count(b"\n") == 1
    times = []
    for _ in range(50):
        t = time.perf_counter()
        c.send("<ping/>")
        c.sock.recv(65536)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.02  # no 40 ms Nagle/delayed-ACK stall
    c.close()


def test_idle_timeout(make_daemon):
    d = make_daemon(**{"network.rcv.timeout": "1"})
    c = Raw(d)
    time.sleep(1.5)
    answer = c.recv()
    assert answer.get("error") == "Error reading socket, recv() returned error 11"
    assert answer.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert c.recv() is None
    with d.client() as client:
        stats = client.query('<statistics action="query" type="global" />')[0]
        assert int(stats.get("api_exceptions")) >= 1


def test_keepalive_pings_during_synchronous_launch(make_daemon):
    d = make_daemon(**{"dpd.interval": "1"})
    with d.client() as client:
        create_workflow(client, "sleep3", SLEEP3)
    c = Raw(d)
    c.send('<instance action="launch" name="sleep3" mode="synchronous" />')
    pings = 0
    while True:
        doc = c.recv()
        if doc.tag == "ping":
            assert not doc.attrib
            pings += 1
            continue
        break
    assert doc.get("workflow-instance-id") and "wait" not in doc.attrib
    assert pings >= 2
    # a client that disappears during a wait does not disturb the instance
    c.send('<instance action="launch" name="sleep3" mode="synchronous" />')
    c.close()
    with d.client() as client:
        for _ in range(100):
            if client.query('<status action="query" type="workflows" />').get("count") == "0":
                break
            time.sleep(0.1)
        rows = client.query('<instances action="list" />')
        assert rows.get("rows") == "2"
        assert all(r.get("errors") == "0" for r in rows)


def test_connection_limit(make_daemon):
    d = make_daemon(**{"network.connections.max": "2"})
    a, b = Raw(d), Raw(d)
    third = Raw(d, login=False)
    assert third.recv() is None  # closed without a greeting
    a.close()
    time.sleep(0.2)
    c = Raw(d)
    c.send("<ping/>")
    assert c.recv().get("status") == "OK"
    for x in (b, c):
        x.close()


def test_oversized_query_is_refused(make_daemon):
    d = make_daemon(**{"network.query.maxsize": "1M"})
    c = Raw(d)
    try:
        c.send(b'<ping a="' + b"x" * (4 << 20) + b'"/>')
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = c.recv()
    assert answer is not None and answer.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert "maximum size" in answer.get("error")
    with d.client() as client:
        assert client.query("<ping/>").get("status") == "OK"


def test_client_that_never_reads_does_not_stall_others(daemon):
    hostile = Raw(daemon)
    stop = threading.Event()

    def flood() -> None:
        try:
            while not stop.is_set():
                hostile.sock.sendall(b"<ping/>" * 1000)
        except OSError:
            pass

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    time.sleep(0.5)
    c = Raw(daemon)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        c.send("<ping/>")
        assert c.recv().get("status") == "OK"
        times.append(time.perf_counter() - start)
    stop.set()
    hostile.close()
    t.join(5)
    times.sort()
    assert times[int(len(times) * 0.99)] < 0.1


def test_malformed_and_quit_close_the_connection(daemon):
    c = Raw(daemon)
    c.send("<a></b>")
    answer = c.recv()
    assert answer.get("error").startswith("Invalid query XML structure : ")
    assert c.recv() is None
    c = Raw(daemon)
    c.send("<quit/>")
    assert c.recv() is None
