"""Events fan-out: websocket subscribers to INSTANCE_TERMINATED while instances run.

Usage: python bench/events.py [--subscribers S] [--instances N] [--connections K] [--rounds R]

One daemon and S websocket ``events`` clients (connected throughout). Each round launches N
one-task /bin/true instances over K unix connections (bench/instances.py) twice: once with no
subscription, once with every client subscribed to INSTANCE_TERMINATED (each push re-runs
``<ping/>`` as the subscriber and is acknowledged at once, like the React front-end). The best
throughput of each kind over R rounds is compared (the best is the least disturbed by other
work on the machine).

The daemon's CPU time per instance is also compared: unlike throughput, it hardly depends on
what else the machine is doing.

Push latency: during both phases a probe launches one ``mode="synchronous"`` instance at a time;
its answer arrives when the instance ends, so for every probe instance the delay from that
answer to each subscriber's push naming it (throttled pushes name several ids) is one sample.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from evqtest import Daemon, temporary_daemon  # noqa: E402
from instances import _proc_stats, launch_and_wait, setup  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from evqueue.protocol.auth import expected_response, sha1_hex  # noqa: E402

SUBSCRIBE = ('<event action="subscribe" type="INSTANCE_TERMINATED" api_cmd="'
             + base64.b64encode(b"<ping/>").decode() + '" />')
#: the root attributes a subscriber needs, without an XML parser (the bench's CPU is shared)
_EVENT_ID = re.compile(r' event-id="(\d+)"')
_OBJECT_ID = re.compile(r' object-id="([\d,]+)"')


class Subscribers:
    """S logged-in ``events`` clients on their own event loop thread."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        #: instance id → arrival times of its pushes (one per subscriber)
        self.arrivals: dict[int, list[float]] = {}
        self.messages = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._clients: list[ClientConnection] = self._call(self._connect_all(n))

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    async def _connect_all(self, n: int) -> list[ClientConnection]:
        clients = await asyncio.gather(*(self._connect() for _ in range(n)))
        self._readers = [asyncio.create_task(self._read(ws)) for ws in clients]
        return clients

    async def _connect(self) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{self.port}/", subprotocols=["events"])
        challenge = re.search(r'challenge="(\w+)"', str(await ws.recv())).group(1)
        await ws.send(f"<auth response='{expected_response(sha1_hex('admin'), challenge)}' "
                      "user='admin' />")
        await ws.recv()
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        async for message in ws:
            now = time.perf_counter()
            self.messages += 1
            text = str(message)
            ids = _OBJECT_ID.search(text)
            for oid in ids.group(1).split(",") if ids else ():
                self.arrivals.setdefault(int(oid), []).append(now)
            await ws.send(f'<event action="ack" event_id="{_EVENT_ID.search(text).group(1)}" />')

    def send_all(self, command: str) -> None:
        async def send() -> None:
            await asyncio.gather(*(ws.send(command) for ws in self._clients))
        self._call(send())

    def close(self) -> None:
        async def close() -> None:
            await asyncio.gather(*(ws.close() for ws in self._clients))
        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)


def probe(d: Daemon, stop: threading.Event, ended: dict[int, float]) -> None:
    """Synchronous launches one after the other: instance id → when its end was answered."""
    with d.client() as c:
        while not stop.is_set():
            r = c.query('<instance action="launch" name="bench" mode="synchronous" />')
            ended[int(r.get("workflow-instance-id"))] = time.perf_counter()
            time.sleep(0.01)


def phase(d: Daemon, n: int, connections: int) -> tuple[float, float, dict[int, float]]:
    """Instances per second, the daemon's CPU seconds per 1,000 instances, and the probe
    instances' end times."""
    ended: dict[int, float] = {}
    stop = threading.Event()
    t = threading.Thread(target=probe, args=(d, stop, ended))
    cpu = _proc_stats(d.proc.pid)[0]
    t.start()
    elapsed = launch_and_wait(d, n, connections)
    stop.set()
    t.join()
    cpu = _proc_stats(d.proc.pid)[0] - cpu
    return n / elapsed, cpu * 1000 / (n + len(ended)), ended


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    base: list[float] = []
    loaded: list[float] = []
    base_cpu: list[float] = []
    loaded_cpu: list[float] = []
    probes: dict[int, float] = {}
    with temporary_daemon("evqe", **{"logger.db.enable": "no",
                                     "ws.connections.max": "1000"}) as d:
        setup(d, 8)
        launch_and_wait(d, a.instances // 10, a.connections)  # warm-up
        subs = Subscribers(d.ws_port, a.subscribers)
        for _ in range(a.rounds):
            rate, cpu, _ = phase(d, a.instances, a.connections)
            base.append(rate)
            base_cpu.append(cpu)
            subs.send_all(SUBSCRIBE)
            rate, cpu, ended = phase(d, a.instances, a.connections)
            loaded.append(rate)
            loaded_cpu.append(cpu)
            probes.update(ended)
            time.sleep(0.5)  # the last pushes
            subs.send_all('<event action="unsubscribeall" />')
        subs.close()
    latencies = sorted((t - end) * 1000 for iid, end in probes.items()
                       for t in subs.arrivals.get(iid, ()))
    expected = a.subscribers * len(probes)
    received = sum(len(v) for v in subs.arrivals.values())
    launched = a.subscribers * (a.rounds * a.instances + len(probes))
    print(f"instances without subscribers: {max(base):,.0f}/s "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in base)})")
    print(f"instances with {a.subscribers} subscribers: {max(loaded):,.0f}/s "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in loaded)})")
    print(f"throughput drop: {100 * (1 - max(loaded) / max(base)):.1f} % (target < 20 %)")
    print(f"daemon CPU per 1,000 instances: {min(base_cpu):.2f} s without subscribers, "
          f"{min(loaded_cpu):.2f} s with ({100 * (min(loaded_cpu) / min(base_cpu) - 1):+.1f} %)")
    print(f"pushes: {subs.messages:,} messages carrying {received:,} instance ids of "
          f"{launched:,} expected (throttling merges the ids of a burst into one push)")
    if latencies:
        print(f"push latency after the instance's end: p50 {statistics.median(latencies):.1f} "
              f"ms, p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms "
              f"({len(latencies):,} samples of {expected:,} expected)")


if __name__ == "__main__":
    main()
