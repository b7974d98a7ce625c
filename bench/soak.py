"""Soak: mixed load for a long time; the daemon's RSS and open descriptors must stay flat.

Usage: python bench/soak.py [--minutes 30] [--interval 10] [--warmup 0.25] [--rate 10]
                            [--clients 8] [--subscribers 5]

One daemon (SQLite) gets, for the whole run:
* ``--clients`` API connections (unix and TCP) that launch one-task instances at ``--rate``
  per second in total, ping, query finished instances and reconnect every 50 operations;
* a schedule firing every second;
* ``--subscribers`` websocket ``events`` clients subscribed to INSTANCE_TERMINATED (each push
  re-runs ``status query type="workflows"`` and is acknowledged), reconnecting every 30 s.

Every ``--interval`` seconds the daemon's RSS and number of open descriptors are recorded.
A table and the trend are printed: the least-squares slope after the warm-up (the first
``--warmup`` fraction of the run), and the growth that slope amounts to over the measured
window. The run fails (exit 1) if RSS grows by more than max(3 %, 3 MB) or descriptors by
more than 3 over that window, or if a launched instance did not end normally.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from evqtest import Daemon, create_workflow, one_task, temporary_daemon  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from evqueue.protocol.auth import expected_response, sha1_hex  # noqa: E402

_CHALLENGE = re.compile(rb'challenge="([0-9a-f]{40})"')
_IID = re.compile(rb'workflow-instance-id="(\d+)"')
_EVENT_ID = re.compile(r' event-id="(\d+)"')
_SUBSCRIBE = ('<event action="subscribe" type="INSTANCE_TERMINATED" api_cmd="'
              + base64.b64encode(b'<status action="query" type="workflows"/>').decode()
              + '"/>')


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    rss_kb: int
    fds: int
    launched: int
    pushes: int


@dataclass
class Trend:
    """Least-squares slopes after the warm-up and the growth they amount to over it."""

    rss_kb_per_min: float
    fds_per_min: float
    rss_growth_kb: float
    fds_growth: float
    rss_limit_kb: float
    fds_limit: float = 3.0

    @property
    def flat(self) -> bool:
        return self.rss_growth_kb <= self.rss_limit_kb and self.fds_growth <= self.fds_limit


@dataclass
class Result:
    samples: list[Sample]
    trend: Trend
    launched: int = 0
    scheduled: int = 0
    lost: list[str] = field(default_factory=list)
    pushes: int = 0

    @property
    def ok(self) -> bool:
        return self.trend.flat and not self.lost


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def trend(samples: list[Sample], warmup: float) -> Trend:
    """The trend of the samples taken after ``warmup`` seconds (at least three samples)."""
    kept = [s for s in samples if s.t >= warmup]
    if len(kept) < 3:
        kept = samples[-3:]
    ts = [s.t for s in kept]
    window = ts[-1] - ts[0]
    rss = _slope(ts, [s.rss_kb for s in kept])
    fds = _slope(ts, [s.fds for s in kept])
    median_rss = sorted(s.rss_kb for s in kept)[len(kept) // 2]
    return Trend(rss * 60, fds * 60, rss * window, fds * window,
                 max(0.03 * median_rss, 3 * 1024))


def _proc(pid: int) -> tuple[int, int]:
    """(RSS in KB, open descriptors) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """The mixed load, on one event loop."""

    def __init__(self, daemon: Daemon, rate: float, clients: int, subscribers: int) -> None:
        self.d = daemon
        self.rate = rate
        self.clients = clients
        self.subscribers = subscribers
        self.launched: list[int] = []
        self.pushes = 0
        self.errors: list[str] = []

    async def _login(self, n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if n % 2:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.d.tcp_port)
        else:
            reader, writer = await asyncio.open_unix_connection(self.d.socket)
        challenge = _CHALLENGE.search(await reader.readline())
        assert challenge is not None
        response = expected_response(sha1_hex("admin"), challenge.group(1).decode())
        writer.write(f'<auth response="{response}" user="admin"/>'.encode())
        await reader.readline()
        return reader, writer

    async def _ask(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   query: bytes, multiline: bool = False) -> bytes:
        """One lock-step query; ``multiline`` answers (instance documents hold outputs with
        newlines) are read up to their end tag."""
        writer.write(query)
        line = await asyncio.wait_for(
            reader.readuntil(b"</response>\n") if multiline else reader.readline(), 30)
        if b'status="OK"' not in line.split(b">", 1)[0]:
            self.errors.append(line[:300].decode(errors="replace"))
        return line

    async def client(self, n: int, until: float) -> None:
        period = self.clients / self.rate
        next_op = time.monotonic() + period * n / self.clients
        while time.monotonic() < until:
            reader, writer = await self._login(n)
            for _ in range(50):
                if time.monotonic() >= until:
                    break
                await asyncio.sleep(max(0.0, next_op - time.monotonic()))
                next_op += period
                line = await self._ask(reader, writer,
                                       b'<instance action="launch" name="soak"/>')
                m = _IID.search(line)
                if m:
                    self.launched.append(int(m.group(1)))
                await self._ask(reader, writer, b"<ping/>")
                if len(self.launched) > 20:
                    old = self.launched[-20]
                    await self._ask(reader, writer,
                                    f'<instance action="query" id="{old}"/>'.encode(), True)
            writer.write(b"<quit/>")
            writer.close()

    async def subscriber(self, until: float) -> None:
        while time.monotonic() < until:
            async with connect(f"ws://127.0.0.1:{self.d.ws_port}/",
                               subprotocols=["events"]) as ws:
                challenge = re.search(r'challenge="(\w+)"', str(await ws.recv()))
                assert challenge is not None
                response = expected_response(sha1_hex("admin"), challenge.group(1))
                await ws.send(f"<auth response='{response}' user='admin'/>")
                await ws.recv()
                await ws.send(_SUBSCRIBE)
                stop = min(until, time.monotonic() + 30)
                while (left := stop - time.monotonic()) > 0:
                    try:
                        message = str(await asyncio.wait_for(ws.recv(), left))
                    except TimeoutError:
                        break
                    self.pushes += 1
                    event = _EVENT_ID.search(message)
                    if event:
                        await ws.send(f'<event action="ack" event_id="{event.group(1)}"/>')

    async def sampler(self, until: float, interval: float, samples: list[Sample],
                      verbose: bool) -> None:
        t0 = time.monotonic()
        while True:
            rss, fds = _proc(self.d.proc.pid)
            s = Sample(time.monotonic() - t0, rss, fds, len(self.launched), self.pushes)
            samples.append(s)
            if verbose:
                print(f"{s.t:8.0f} {s.rss_kb / 1024:9.1f} {s.fds:5d} {s.launched:9d} "
                      f"{s.pushes:8d}", flush=True)
            if time.monotonic() + interval > until + 0.5:
                return
            await asyncio.sleep(interval)

    async def run(self, seconds: float, interval: float, verbose: bool) -> list[Sample]:
        until = time.monotonic() + seconds
        samples: list[Sample] = []
        await asyncio.gather(
            self.sampler(until, interval, samples, verbose),
            *(self.client(n, until) for n in range(self.clients)),
            *(self.subscriber(until) for _ in range(self.subscribers)))
        return samples


def prepare(d: Daemon) -> None:
    """The soak's queue, workflows and every-second schedule."""
    with d.client() as c:
        c.query('<queue action="create" name="soak" concurrency="8" scheduler="default" '
                'dynamic="no"/>')
        create_workflow(c, "soak", one_task("/bin/echo", "soak", queue="soak"))
        sid = create_workflow(c, "tick", one_task("/bin/echo", "tick", queue="soak"))
        c.query(f'<workflow_schedule action="create" workflow_id="{sid}" node="localhost" '
                'schedule=";;;;;" onfailure="CONTINUE" active="yes" comment=""/>')


def soak(d: Daemon, seconds: float, interval: float = 10, warmup: float = 0.25,
         rate: float = 10, clients: int = 8, subscribers: int = 5,
         verbose: bool = True) -> Result:
    """Run the load on a started daemon and check every instance afterwards."""
    prepare(d)
    load = Load(d, rate, clients, subscribers)
    if verbose:
        print(f"{'t (s)':>8} {'RSS (MB)':>9} {'fds':>5} {'launched':>9} {'pushes':>8}")
    samples = asyncio.run(load.run(seconds, interval, verbose))
    result = Result(samples, trend(samples, seconds * warmup), len(load.launched),
                    pushes=load.pushes, lost=list(load.errors))
    with d.client() as c:
        deadline = time.monotonic() + 60
        while int(c.query('<status action="query" type="workflows" limit="1"/>')
                  .get("count")) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name in ("soak", "tick"):
            rows = c.query(f'<instances action="list" filter_workflow="{name}" '
                           'limit="10000000"/>')
            bad = [r.get("id") for r in rows
                   if r.get("status") != "TERMINATED" or r.get("errors") != "0"]
            result.lost += [f"instance {i} of {name} did not end normally" for i in bad]
            if name == "soak":
                listed = {int(r.get("id")) for r in rows}
                result.lost += [f"launched instance {i} missing"
                                for i in set(load.launched) - listed]
            else:
                result.scheduled = len(rows)
    return result


def report(result: Result) -> str:
    t = result.trend
    return (f"trend after warm-up: RSS {t.rss_kb_per_min:+.1f} KB/min "
            f"({t.rss_growth_kb / 1024:+.2f} MB over the window, limit "
            f"{t.rss_limit_kb / 1024:.1f} MB), fds {t.fds_per_min:+.2f}/min "
            f"({t.fds_growth:+.1f}, limit {t.fds_limit:.0f}); {result.launched} launched, "
            f"{result.scheduled} scheduled, {result.pushes} pushes, "
            f"{len(result.lost)} lost/failed: {'FLAT' if t.flat else 'GROWING'}, "
            f"{'PASS' if result.ok else 'FAIL'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--warmup", type=float, default=0.25)
    p.add_argument("--rate", type=float, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--subscribers", type=int, default=5)
    a = p.parse_args()
    with temporary_daemon("evqs", **{"gc.enable": "no"}) as d:
        result = soak(d, a.minutes * 60, a.interval, a.warmup, a.rate, a.clients,
                      a.subscribers)
    print(report(result))
    for line in result.lost[:10]:
        print("  ", line)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
