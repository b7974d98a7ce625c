"""Events fan-out: websocket subscribers to INSTANCE_TERMINATED while instances run.

Usage: python bench/events.py [--subscribers S] [--instances N] [--connections K]

One daemon; first N one-task /bin/true instances run with no subscriber, then again with S
websocket ``events`` clients subscribed to INSTANCE_TERMINATED (each push re-runs the API command
``<ping/>`` as the subscriber and is acknowledged). Prints both instance throughputs and their
drop, and the push latency: for each instance, the delay of each subscriber's push after the
first subscriber received it (fan-out spread), p50 and p99, plus pushes received versus expected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from evqtest import Daemon  # noqa: E402
from instances import launch_and_wait, setup  # noqa: E402
from lxml import etree  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from evqueue.protocol.auth import expected_response, sha1_hex  # noqa: E402

PING = base64.b64encode(b"<ping/>").decode()


async def subscriber(port: int, arrivals: dict[int, list[float]], ready: asyncio.Event,
                     count: list[int], total: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/", subprotocols=["events"]) as ws:
        challenge = etree.fromstring((await ws.recv()).encode()).get("challenge")
        await ws.send(f"<auth response='{expected_response(sha1_hex('admin'), challenge)}' "
                      "user='admin' />")
        await ws.recv()
        await ws.send(f'<event action="subscribe" type="INSTANCE_TERMINATED" api_cmd="{PING}" />')
        count[0] += 1
        if count[0] == total:
            ready.set()
        async for message in ws:
            now = time.perf_counter()
            doc = etree.fromstring(message.encode())
            for oid in (doc.get("object-id") or "").split(","):
                if oid:
                    arrivals.setdefault(int(oid), []).append(now)
            await ws.send(f'<event action="ack" event_id="{doc.get("event-id")}" />')


def run_subscribers(port: int, n: int, arrivals: dict[int, list[float]],
                    started: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        ready = asyncio.Event()
        count = [0]
        tasks = [asyncio.create_task(subscriber(port, arrivals, ready, count, n))
                 for _ in range(n)]
        await ready.wait()
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--connections", type=int, default=8)
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="evqe")
    d = Daemon(root, **{"logger.db.enable": "no", "ws.connections.max": "1000"})
    d.start()
    try:
        setup(d, 8)
        base = a.instances / launch_and_wait(d, a.instances, a.connections)
        arrivals: dict[int, list[float]] = {}
        started, stop = threading.Event(), threading.Event()
        t = threading.Thread(target=run_subscribers,
                             args=(d.ws_port, a.subscribers, arrivals, started, stop))
        t.start()
        started.wait(60)
        with_subs = a.instances / launch_and_wait(d, a.instances, a.connections)
        time.sleep(1)
        stop.set()
        t.join()
    finally:
        d.stop()
        d.kill_forker()
        shutil.rmtree(root, ignore_errors=True)
    spreads = [(x - min(times)) * 1000 for times in arrivals.values() for x in times]
    spreads.sort()
    received = sum(len(v) for v in arrivals.values())
    print(f"instances without subscribers: {base:,.0f}/s")
    print(f"instances with {a.subscribers} subscribers: {with_subs:,.0f}/s "
          f"(drop {100 * (1 - with_subs / base):.1f} %, target < 20 %)")
    print(f"instance ids pushed: {received:,} of {a.instances * a.subscribers:,} "
          "(throttling merges ids while a push awaits its ack)")
    if spreads:
        print(f"push fan-out latency: p50 {statistics.median(spreads):.1f} ms, "
              f"p99 {spreads[int(len(spreads) * 0.99)]:.1f} ms")


if __name__ == "__main__":
    main()
