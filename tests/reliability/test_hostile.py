"""Hostile clients (issue 11 item 2): XML bombs and external entities are refused without
expansion or file/network access; slowloris, a 100 MB document, 1,000 idle connections and
clients that never read their answers do not slow down or lose the work of 50 normal clients
that ping and launch meanwhile."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable

import pytest
from evqtest import Daemon, create_workflow, one_task, wait_terminated
from lxml import etree
from rawapi import Raw, check_error, no_tracebacks, ping_ok, ws_login
from websockets.exceptions import ConnectionClosed

from evqueue.engine.xpath import XPathError, evaluate
from evqueue.protocol.auth import expected_response, sha1_hex

NORMAL_CLIENTS = 50
LOAD_SECONDS = float(os.environ.get("EVQ_HOSTILE_SECONDS", "10"))
IDLE_CONNECTIONS = 1000


def _bombs(trap_port: int) -> dict[str, str]:
    """Documents that expand entities, read files or reach the network if a parser lets
    them; ``trap_port`` listens for the network ones."""
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "billion-laughs": f'<!DOCTYPE ping [<!ENTITY l0 "lol">{lol}]><ping a="&l9;"/>',
        "xxe-file": '<!DOCTYPE ping [<!ENTITY e SYSTEM "file:///etc/passwd">]><ping a="&e;"/>',
        "xxe-network": f'<!DOCTYPE ping [<!ENTITY e SYSTEM "http://127.0.0.1:{trap_port}/x">]>'
                       '<ping>&e;</ping>',
        "external-dtd": f'<!DOCTYPE ping SYSTEM "http://127.0.0.1:{trap_port}/d.dtd"><ping/>',
        "parameter-entity": f'<!DOCTYPE ping [<!ENTITY % p SYSTEM '
                            f'"http://127.0.0.1:{trap_port}/p">%p;]><ping/>',
        "xinclude": '<ping xmlns:xi="http://www.w3.org/2001/XInclude">'
                    '<xi:include href="file:///etc/passwd" parse="text"/></ping>',
    }


class Trap:
    """A listening socket that records any connection (a parser fetching a URL)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]

    def touched(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True


def _passwd_leaked(text: str) -> bool:
    return "root:" in text


def test_xml_bombs_are_refused(make_daemon, tmp_path) -> None:
    """On the stream API and websockets, as workflow content and as a task's XML output:
    no expansion, no file read, no network access, a quick refusal, a small daemon."""
    d = make_daemon()
    trap = Trap()
    bombs = _bombs(trap.port)
    for name, bomb in bombs.items():
        for kind in ("tcp", "unix"):
            raw = Raw.open(d, kind)
            raw.send(bomb.encode())
            docs = raw.drain(timeout=5)
            raw.close()
            text = b"".join(etree.tostring(x) for x in docs).decode()
            assert not _passwd_leaked(text), (name, text)
            assert "lollol" not in text, name
            if name == "xinclude":  # well formed, and XInclude is never processed
                assert docs and docs[0].get("status") == "OK", (name, text)
            else:
                assert len(docs) == 1, (name, text)
                check_error(docs[0])
                assert "DOCTYPE" in docs[0].get("error"), (name, text)

    async def over_ws() -> None:
        for name, bomb in bombs.items():
            ws = await ws_login(d)
            await ws.send(bomb)
            try:
                answer = await asyncio.wait_for(ws.recv(), 5)
                assert name == "xinclude" and 'status="OK"' in answer, (name, answer)
                assert not _passwd_leaked(answer)
            except ConnectionClosed:
                assert ws.close_code == 1011 and "DOCTYPE" in ws.close_reason, name
            await ws.close()

    asyncio.run(over_ws())
    raw = Raw.open(d)
    for name, bomb in bombs.items():  # as workflow definitions: refused, nothing expanded
        content = base64.b64encode(bomb.replace("ping", "workflow").encode()).decode()
        answer = raw.query(f'<workflow action="create" name="b{len(name)}" '
                           f'content="{content}"/>')
        text = etree.tostring(answer).decode()
        assert answer.get("status") == "KO" and answer.get("error"), (name, text)
        assert not _passwd_leaked(text) and "lollol" not in text, (name, text)
    raw.close()
    with d.client() as c:
        # a task printing an XXE document as its XML output
        script = tmp_path / "xxe.sh"
        script.write_text("#!/bin/sh\nprintf '%s' '" + bombs["xxe-file"].replace("ping", "x")
                          + "'\n")
        script.chmod(0o755)
        create_workflow(c, "xxe", one_task(str(script), extra='output-method="XML"'))
        iid = int(c.query('<instance action="launch" name="xxe"/>').get("workflow-instance-id"))
        doc = wait_terminated(c, iid)
        assert not _passwd_leaked(etree.tostring(doc).decode())
    assert not trap.touched()
    rss_kb = _proc_status(d.proc.pid)["VmRSS"]
    assert rss_kb < 300_000, rss_kb
    ping_ok(d)
    no_tracebacks(d)


def _proc_status(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "VmHWM")}


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_CHALLENGE = re.compile(rb'challenge="([0-9a-f]{40})"')
_IID = re.compile(rb'workflow-instance-id="(\d+)"')


class Normal:
    """The 50 well-behaved clients: lock-step pings with a launch every second."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.latencies: list[float] = []
        self.launched: list[int] = []
        self.failures: list[str] = []

    async def client(self, n: int, until: float) -> None:
        if n % 2:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.daemon.tcp_port)
        else:
            reader, writer = await asyncio.open_unix_connection(self.daemon.socket)
        challenge = _CHALLENGE.search(await reader.readline())
        assert challenge is not None
        response = expected_response(sha1_hex("admin"), challenge.group(1).decode())
        writer.write(f'<auth response="{response}" user="admin"/>'.encode())
        assert b"<ready" in await reader.readline()
        next_launch = time.monotonic() + n / NORMAL_CLIENTS
        while time.monotonic() < until:
            t0 = time.perf_counter()
            writer.write(b"<ping/>")
            line = await asyncio.wait_for(reader.readline(), 10)
            self.latencies.append(time.perf_counter() - t0)
            if b'status="OK"' not in line:
                self.failures.append(line.decode())
            if time.monotonic() >= next_launch:
                next_launch += 1.0
                writer.write(b'<instance action="launch" name="quick"/>')
                line = await asyncio.wait_for(reader.readline(), 10)
                m = _IID.search(line)
                if m is None:
                    self.failures.append(line.decode())
                else:
                    self.launched.append(int(m.group(1)))
            await asyncio.sleep(0.02)
        writer.write(b"<quit/>")
        writer.close()

    async def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(self.client(n, until) for n in range(NORMAL_CLIENTS)))


class Attacks:
    """Hostile clients, each on its own thread; what they observed is checked afterwards."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.results: dict[str, object] = {}
        self.errors: list[BaseException] = []
        self.idle: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def start(self, name: str, fn: Callable[[], object]) -> None:
        def run() -> None:
            try:
                self.results[name] = fn()
            except BaseException as e:  # reported by the test
                self.errors.append(e)

        t = threading.Thread(target=run, name=name)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), t.name

    def slowloris(self) -> etree._Element | None:
        """A ping sent one byte per second: answered once complete."""
        raw = Raw.open(self.daemon, "tcp")
        try:
            for b in b"<ping/>":
                raw.send(bytes([b]))
                time.sleep(1)
            return raw.read(10)
        finally:
            raw.close()

    def endless_slowloris(self) -> int:
        """An attribute value that never ends, one byte per second."""
        raw = Raw.open(self.daemon, "tcp")
        raw.send(b'<ping comment="')
        sent = 0
        try:
            while not self.stop.wait(1):
                raw.send(b"x")
                sent += 1
        finally:
            raw.close()
        return sent

    def huge_document(self) -> tuple[etree._Element | None, int]:
        """100 MB in one document: refused at network.query.maxsize, connection closed."""
        raw = Raw.open(self.daemon, "tcp")
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            raw.send(b'<ping a="')
            with contextlib.suppress(OSError):
                for _ in range(100):
                    raw.sock.sendall(chunk)
                    sent += len(chunk)
            return raw.read(10), sent
        finally:
            raw.close()

    def xpath_bombs(self) -> list[float]:
        """Every two seconds, an ``xpathfilter`` whose cost is the cube of the response's
        size, or one of 1 MB: refused within the XPath work budget. Returns the answer
        times."""
        raw = Raw.open(self.daemon, "unix", "bob", "pw")
        times = []
        try:
            while not self.stop.wait(2):
                for query in (XPATH_CUBE, XPATH_LONG):
                    t0 = time.perf_counter()
                    doc = raw.query(query)
                    times.append(time.perf_counter() - t0)
                    if doc.get("status") == "KO":
                        assert "too complex" in doc.get("error") or "longer than" in \
                            doc.get("error"), doc.get("error")
        finally:
            raw.close()
        return times

    def open_idle(self) -> int:
        for _ in range(IDLE_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", self.daemon.tcp_port), timeout=10)
            self.idle.append(s)
        return len(self.idle)

    def never_reads(self) -> int:
        """Pipelines pings and never reads an answer."""
        raw = Raw.open(self.daemon, "unix")
        raw.sock.settimeout(0.5)
        sent = 0
        try:
            while not self.stop.is_set():
                try:
                    raw.sock.sendall(b"<ping/>" * 1000)
                    sent += 1000
                except TimeoutError:
                    continue  # the daemon stopped reading us: fine
                except OSError:
                    break  # or closed us
        finally:
            raw.close()
        return sent


#: any user may list instances and filter the answer
XPATH_CUBE = ('<instances action="list" limit="100000" '
              'xpathfilter="count(//*[//*[count(//*) &gt; 0]])"/>')
XPATH_LONG = '<ping xpathfilter="' + "1+" * 500_000 + '1"/>'


def test_expensive_xpath_is_bounded(make_daemon) -> None:
    """A nested descendant filter over a large answer and a huge expression are refused
    after a bounded amount of work, in process and over the wire."""
    doc = etree.fromstring("<r>" + "<a><b/></a>" * 2000 + "</r>")
    t0 = time.perf_counter()
    with pytest.raises(XPathError, match="too complex"):
        evaluate("count(//*[//*[count(//*) > 0]])", doc)
    with pytest.raises(XPathError, match="longer than"):
        evaluate("1+" * 100_000 + "1", doc)
    assert evaluate("count(//b)", doc) == 2000  # ordinary walks are far from the budget
    assert time.perf_counter() - t0 < 2
    d = make_daemon()
    raw = Raw.open(d)
    try:
        for _ in range(3):
            raw.query('<tag action="create" label="x' + str(time.monotonic_ns()) + '"/>')
        t0 = time.perf_counter()
        answer = raw.query('<xpath action="parse" expression="' + "(" * 3000 + "1" + ")" * 3000
                           + '"/>')
        assert answer.get("status") in ("OK", "KO")
        check_error(raw.query(XPATH_LONG))
        assert time.perf_counter() - t0 < 2
    finally:
        raw.close()


def _soft_fd_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        return int(next(line for line in f if line.startswith("Max open files")).split()[3])


def test_low_fd_limit_is_raised_for_the_connections_allowed(make_daemon) -> None:
    """Started with a soft limit of 256 and 1,000 connections allowed: the daemon raises its
    own limit (not its forker's), so 400 idle connections do not make accept() fail."""
    d = make_daemon(start=False, **{"network.connections.max": "1000"})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1384:
        pytest.skip(f"hard RLIMIT_NOFILE {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        d.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _soft_fd_limit(d.proc.pid) == 1000 + 128 + 256
    with open(os.path.join(d.root, "forker.pid")) as f:
        assert _soft_fd_limit(int(f.read())) == 256
    idle = [socket.create_connection(("127.0.0.1", d.tcp_port), timeout=10) for _ in range(400)]
    try:
        for s in idle[-5:]:  # the last ones were accepted and greeted too
            assert s.recv(4096).startswith(b"<auth ")
        ping_ok(d)
    finally:
        for s in idle:
            s.close()
    assert "Too many open files" not in d.log()
    no_tracebacks(d)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def test_hostile_clients_under_load(make_daemon) -> None:
    """The hostile clients only ever stall themselves: every ping of the 50 normal clients is
    answered (p99 printed; the bound asserted is loose for a shared CI box) and every
    instance they launch ends normally."""
    _raise_fd_limit(4 * IDLE_CONNECTIONS + 1024)  # the daemon inherits it
    d = make_daemon(**{"network.connections.max": str(IDLE_CONNECTIONS + NORMAL_CLIENTS + 50),
                       "network.snd.timeout": "3"})
    with d.client() as c:
        c.query('<queue action="create" name="quick" concurrency="20" scheduler="default" '
                'dynamic="no"/>')
        wid = create_workflow(c, "quick", one_task("/bin/true", queue="quick"))
        c.query('<user action="create" name="bob" password="pw" profile="USER"/>')
        c.query(f'<user action="grant" name="bob" workflow_id="{wid}" read="yes" exec="no" '
                'edit="no" kill="no"/>')
    fds_before = _fds(d.proc.pid)
    attacks = Attacks(d)
    attacks.start("idle", attacks.open_idle)
    attacks.start("slowloris", attacks.slowloris)
    attacks.start("endless", attacks.endless_slowloris)
    attacks.start("huge", attacks.huge_document)
    for i in range(3):
        attacks.start(f"deaf{i}", attacks.never_reads)
    attacks.start("xpath", attacks.xpath_bombs)
    normal = Normal(d)
    try:
        asyncio.run(normal.run(LOAD_SECONDS))
        rss = _proc_status(d.proc.pid)
        # connects the listen backlog could not hold complete once the kernel retransmits
        deadline = time.monotonic() + 30
        while (peak_fds := _fds(d.proc.pid)) < fds_before + IDLE_CONNECTIONS and \
                time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        attacks.join()
        for s in attacks.idle:
            s.close()
    assert not attacks.errors, attacks.errors
    latencies = sorted(normal.latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"\nhostile: {len(latencies)} pings, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max "
          f"{latencies[-1] * 1000:.1f} ms; {len(normal.launched)} launches; daemon fds "
          f"{fds_before} -> {peak_fds}; RSS {rss['VmRSS'] // 1024} MB, peak "
          f"{rss['VmHWM'] // 1024} MB; huge document: {attacks.results['huge'][1] >> 20} MB "
          "sent before the refusal")
    xpath_times = attacks.results["xpath"]
    print(f"xpath bombs: {len(xpath_times)} answered, slowest in "
          f"{max(xpath_times) * 1000:.0f} ms")
    assert xpath_times and max(xpath_times) < 3  # 15 s and more before the budget
    assert not normal.failures, normal.failures[:5]
    assert len(latencies) > NORMAL_CLIENTS * 10
    assert p99 < 200, p99
    assert attacks.results["idle"] == IDLE_CONNECTIONS
    assert peak_fds >= fds_before + IDLE_CONNECTIONS  # they really were open at once
    slow = attacks.results["slowloris"]
    assert slow is not None and slow.get("status") == "OK"
    answer, _ = attacks.results["huge"]
    if answer is not None:  # the refusal may be lost in the reset of our unsent bytes
        check_error(answer)
        assert "maximum size" in answer.get("error")
    assert rss["VmHWM"] < 400_000, rss  # the 100 MB were never held
    with d.client() as c:
        for iid in normal.launched:
            task = wait_terminated(c, iid).find(".//task")
            assert task.get("retval") == "0", iid
    deadline = time.monotonic() + 10
    while _fds(d.proc.pid) > fds_before + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fds(d.proc.pid) <= fds_before + 5, (fds_before, _fds(d.proc.pid))
    ping_ok(d)
    no_tracebacks(d)
