"""``<ping />`` round trips versus raw asyncio echo round trips, measured in the same run.

Usage: python bench/ping.py [--seconds S] [--connections K] [--rounds R] [--quick]

Starts a daemon (SQLite) and, beside it, raw echo servers: separate processes running a bare
``asyncio.Protocol`` on a unix socket that answers every line with a document of the size of a
ping answer, one on the daemon's event loop implementation and, when that is uvloop, one on the
standard asyncio loop too. All are driven by the same lean lock-step client (send a query, read
until ``>\\n``) on 1 connection, then on K connections (one client process each), for S seconds
after a 0.5 s warm-up; best of R rounds, interleaved (the machine may be shared). Queries:
``<ping />`` (which the daemon answers without parsing it) and ``<ping action="x" />`` (the
full path: framing, lxml, dispatch, serialisation). Prints the rates and the ratios to the
echo. The clients share the machine's CPUs with the servers, as local clients would.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from evqtest import temporary_daemon  # noqa: E402
from instances import _login  # noqa: E402

from evqueue.loop import event_loop_name, new_event_loop  # noqa: E402

BARE, FULL = b"<ping />\n", b'<ping action="x" />\n'
#: what the echo server answers: the size of the daemon's ping answer
ECHO_ANSWER = (b'<response git-support="disabled" node="localhost" status="OK" uptime="1" '
               b'version="3.3"/>\n')
TARGET_ONE, TARGET_MANY, TARGET_RATIO = 25_000, 50_000, 0.5


class _Echo(asyncio.Protocol):
    """One answer per received line: the least any asyncio server can do per round trip."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(ECHO_ANSWER * data.count(b"\n"))  # type: ignore[attr-defined]


def echo_server(path: str) -> None:
    """Serve ``_Echo`` on ``path`` until killed."""
    loop = new_event_loop()
    loop.run_until_complete(loop.create_unix_server(_Echo, path))
    print("ready", flush=True)
    loop.run_forever()


def _round_trips(sock: socket.socket, query: bytes, until: float) -> int:
    n = 0
    now = time.perf_counter
    while now() < until:
        sock.sendall(query)
        b = sock.recv(65536)
        while not b.endswith(b">\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed during the ping loop")
            b += chunk
        if not b.startswith(b"<response"):
            raise RuntimeError(f"unexpected answer: {b[:200]!r}")
        n += 1
    return n


def _worker(path: str, login: bool, query: bytes, seconds: float, go: mp.Event,
            out: mp.Queue) -> None:
    try:
        if login:
            sock = _login(path)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
        go.wait()
        _round_trips(sock, query, time.perf_counter() + 0.5)
        out.put(_round_trips(sock, query, time.perf_counter() + seconds))
        sock.close()
    except Exception as e:  # reported by the parent
        out.put(f"error: {e}")


def rate(path: str, login: bool, query: bytes, connections: int, seconds: float) -> float:
    """Round trips per second over ``connections`` parallel client processes."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(path, login, query, seconds, go, out))
             for _ in range(connections)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # let every client connect (and log in) before the clock starts
    go.set()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        raise RuntimeError("; ".join(errors))
    return sum(results) / seconds


def _start_echo(path: str, loop: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, EVQUEUE_LOOP=loop)
    echo = subprocess.Popen([sys.executable, __file__, "--echo-server", path],
                            stdout=subprocess.PIPE, env=env)
    assert echo.stdout is not None and echo.stdout.readline() == b"ready\n"
    return echo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1 round of 1 s (make bench)")
    a = p.parse_args()
    if a.quick:
        a.seconds, a.rounds = 1.0, 1
    loops = [event_loop_name()] + (["asyncio"] if event_loop_name() != "asyncio" else [])
    echos: dict[str, str] = {}
    procs: list[subprocess.Popen[bytes]] = []
    with temporary_daemon("evqpb", start=False, **{"logger.db.enable": "no"}) as d:
        try:
            for loop in loops:
                echos[loop] = os.path.join(d.root, f"echo-{loop}.sock")
                procs.append(_start_echo(echos[loop], loop))
            d.start()
            runs = [(f"echo {loop}", path, False, BARE) for loop, path in echos.items()]
            runs += [("bare", d.socket, True, BARE), ("full", d.socket, True, FULL)]
            figures: dict[tuple[str, int], float] = {}
            for _ in range(a.rounds):  # interleaved, so that a burst of load hits all alike
                for k in (1, a.connections):
                    for name, path, login, query in runs:
                        r = rate(path, login, query, k, a.seconds)
                        figures[name, k] = max(figures.get((name, k), 0.0), r)
            print(f"daemon event loop: {event_loop_name()}; best of {a.rounds} round(s) of "
                  f"{a.seconds:g} s")
            for k, target in ((1, TARGET_ONE), (a.connections, TARGET_MANY)):
                for loop in loops:
                    echo = figures[f"echo {loop}", k]
                    print(f"raw echo ({loop}), {k} connection(s): {echo:,.0f}/s")
                for name, label in (("bare", "<ping />"),
                                    ("full", '<ping action="x" /> (full path)')):
                    ping = figures[name, k]
                    ratios = ", ".join(f"{ping / figures[f'echo {loop}', k]:.2f} of {loop} echo"
                                       for loop in loops)
                    print(f"{label}, {k} connection(s): {ping:,.0f}/s (target >= {target:,}); "
                          f"{ratios} (target >= {TARGET_RATIO})")
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo-server":
        echo_server(sys.argv[2])
    else:
        main()
