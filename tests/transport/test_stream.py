"""The TCP and unix API over real sockets: framing, timeouts, keep-alives, limits, isolation."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import statistics
import struct
import termios
import threading
import time

import pytest
from evqtest import create_workflow, one_task
from lxml import etree

from evqueue.protocol.auth import expected_response, sha1_hex
from evqueue.protocol.framing import Framer

SLEEP3 = ('<workflow><subjobs><job><tasks><task path="/bin/sleep" queue="{queue}">'
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
    # a client that sends its last queries and half-closes still gets every answer
    c.send("<ping/><ping/>")
    c.sock.shutdown(socket.SHUT_WR)
    assert [c.recv().get("status"), c.recv().get("status"), c.recv()] == ["OK", "OK", None]
    c.close()


def server_side(daemon, client: socket.socket) -> socket.socket:
    """A duplicate of the daemon's own end of ``client``'s TCP connection (pidfd_getfd)."""
    port = client.getsockname()[1]
    with open("/proc/net/tcp") as f:
        inode = next(line.split()[9] for line in f.readlines()[1:]
                     if int(line.split()[1].split(":")[1], 16) == daemon.tcp_port
                     and int(line.split()[2].split(":")[1], 16) == port)
    fd_dir = f"/proc/{daemon.proc.pid}/fd"
    target = next(int(fd) for fd in os.listdir(fd_dir)
                  if os.readlink(f"{fd_dir}/{fd}") == f"socket:[{inode}]")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(daemon.proc.pid)
    try:
        fd = libc.syscall(438, pidfd, target, 0)  # SYS_pidfd_getfd
        assert fd >= 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def test_tcp_answer_arrives_in_one_segment_with_nodelay(daemon):
    c = Raw(daemon, tcp=True)
    with server_side(daemon, c.sock) as theirs:
        assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
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
        client.query('<queue action="create" name="two" concurrency="2" scheduler="fifo" '
                     'dynamic="no" />')
        create_workflow(client, "sleep3", SLEEP3, queue="two")
    waiter, vanishing = Raw(d), Raw(d)
    waiter.send('<instance action="launch" name="sleep3" mode="synchronous" />')
    vanishing.send('<instance action="launch" name="sleep3" mode="synchronous" />')
    assert vanishing.recv().tag == "ping"
    vanishing.close()
    # the keep-alive to the vanished client fails: its wait is abandoned, the instance goes on
    with d.client() as client:
        for _ in range(100):
            stats = client.query('<statistics action="query" type="global" />')[0]
            if stats.get("waiting_threads") == "1":
                break
            time.sleep(0.05)
        assert stats.get("waiting_threads") == "1"
        assert client.query('<status action="query" type="workflows" />').get("count") == "2"
    pings = 0
    while (doc := waiter.recv()).tag == "ping":
        assert not doc.attrib
        pings += 1
    assert doc.get("workflow-instance-id") and "wait" not in doc.attrib
    assert pings >= 2
    with d.client() as client:
        for _ in range(100):
            rows = client.query('<instances action="list" filter_status="TERMINATED" />')
            if rows.get("rows") == "2":
                break
            time.sleep(0.05)
        assert [r.get("errors") for r in rows] == ["0", "0"]
        stats = client.query('<statistics action="query" type="global" />')[0]
        assert stats.get("waiting_threads") == "0"


def _queued_bytes(sock: socket.socket, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


def test_queries_piled_behind_a_pending_answer_stop_the_reading(daemon):
    """A lock-step client costs no pause/resume per suspended query, but a client pipelining
    thousands of queries behind a synchronous launch is not read further (its queries wait in
    the socket, not in the daemon's memory), then gets every answer in order."""
    with daemon.client() as client:
        create_workflow(client, "sleep3", one_task("/bin/sleep", "3"))
    c = Raw(daemon, tcp=True)
    pings = 200000  # 1.4 MB: more than the daemon's reads while the launch is pending
    with server_side(daemon, c.sock) as theirs:
        c.send('<instance action="launch" name="sleep3" mode="synchronous" />')
        sender = threading.Thread(target=c.send, args=("<ping/>" * pings,))
        sender.start()
        time.sleep(2)  # long enough for the daemon to parse it all if it went on reading
        # not read by the daemon: in its socket's receive queue or still in ours to send
        held = (_queued_bytes(theirs, termios.FIONREAD)
                + _queued_bytes(c.sock, termios.TIOCOUTQ))
        assert held > 100000
    answer = c.recv()
    assert answer.tag == "response" and answer.get("workflow-instance-id")
    assert [c.recv().get("status") for _ in range(pings)] == ["OK"] * pings
    sender.join()
    c.close()


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


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_oversized_query_is_refused(daemon):
    """A 20 MB document (default ``network.query.maxsize`` 16M): KO, close, memory bounded."""
    before = peak_rss_kb(daemon.proc.pid)
    c = Raw(daemon)
    doc = b'<ping a="' + b"x" * (20 << 20) + b'"/>'

    def send() -> None:
        with contextlib.suppress(OSError):
            c.send(doc)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    answer = c.recv()
    assert answer is not None and answer.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert "maximum size" in answer.get("error")
    try:
        assert c.recv() is None
    except ConnectionResetError:  # closed with our surplus bytes unread
        pass
    t.join(10)
    c.close()
    growth_mb = (peak_rss_kb(daemon.proc.pid) - before) / 1024
    print(f"peak RSS growth for a 20 MB query: {growth_mb:.1f} MB")
    assert growth_mb < 40, growth_mb
    with daemon.client() as client:
        assert client.query("<ping/>").get("status") == "OK"


def test_client_that_never_reads_does_not_stall_others(daemon):
    """Its unread answers push back on its own queries only: others stay fast, the daemon's
    memory does not grow with what it sends."""
    before = peak_rss_kb(daemon.proc.pid)
    hostile = Raw(daemon)
    stop = threading.Event()
    sent = 0

    def flood() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):
            while not stop.is_set():
                hostile.sock.sendall(b"<ping/>" * 1000)
                sent += 7000

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    time.sleep(0.5)
    c = Raw(daemon)
    times = []
    for _ in range(300):
        start = time.perf_counter()
        c.send("<ping/>")
        assert c.recv().get("status") == "OK"
        times.append(time.perf_counter() - start)
    stalled_at = sent
    time.sleep(0.2)
    assert sent == stalled_at  # the flood is blocked: the daemon stopped reading from it
    stop.set()
    hostile.sock.shutdown(socket.SHUT_RDWR)  # wakes the flood thread blocked in sendall
    hostile.close()
    t.join(5)
    assert not t.is_alive()
    times.sort()
    p99 = times[int(len(times) * 0.99)]
    print(f"ping under a client that never reads ({sent // 7} pings sent): median "
          f"{statistics.median(times) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    assert p99 < 0.1  # a stall would be the send timeout (30 s); this leaves room for CI noise
    assert (peak_rss_kb(daemon.proc.pid) - before) / 1024 < 30


def test_malformed_and_quit_close_the_connection(daemon):
    c = Raw(daemon)
    c.send("<a></b>")
    answer = c.recv()
    assert answer.get("error").startswith("Invalid query XML structure : ")
    assert c.recv() is None
    c = Raw(daemon)
    c.send("<quit/>")
    assert c.recv() is None


def test_api_exceptions_count_connection_failures_only(daemon):
    """errata 12: KO answers are not counted; failed auth, malformed XML and a client that
    leaves without ``<quit/>`` are, once per connection."""
    admin = Raw(daemon)

    def exceptions() -> int:
        admin.send('<statistics action="query" type="global" />')
        return int(admin.recv()[0].get("api_exceptions"))

    admin.send('<statistics action="reset" type="global" />')
    assert admin.recv().get("status") == "OK"
    for q in ('<queuepool action="nope"/>', '<queue action="get" id="999"/>', "<nope/>"):
        admin.send(q)
        assert admin.recv().get("status") == "KO"
    assert exceptions() == 0
    c = Raw(daemon)
    c.send("<quit/>")
    assert c.recv() is None
    assert exceptions() == 0
    c = Raw(daemon, login=False)
    c.recv()
    c.send('<auth response="00" user="admin" />')
    assert c.recv().get("error-code") == "AUTH_ERROR"
    assert c.recv() is None
    c = Raw(daemon)
    c.send("<a></b>")
    c.recv()
    c = Raw(daemon, tcp=True)
    c.send("<ping/>")
    c.recv()
    c.close()  # no <quit/>
    for _ in range(50):
        if exceptions() == 3:
            break
        time.sleep(0.05)
    assert exceptions() == 3
