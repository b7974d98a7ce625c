"""Micro-benchmark of the protocol hot path: serialising responses, framing queries.

Prints documents per second; not a test. Usage: ``python bench/serialize.py [seconds]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from lxml import etree

from evqueue.protocol.framing import Framer
from evqueue.protocol.session import Session
from evqueue.protocol.xmlout import response, serialize


def ping_response() -> etree._Element:
    return response("localhost", **{"git-support": "disabled", "uptime": "2", "version": "3.3"})


def queuepool_list() -> etree._Element:
    root = response("localhost")
    for i in range(1, 11):
        etree.SubElement(root, "queue", concurrency="2", dynamic="no", id=str(i),
                         name=f"queue{i}", scheduler="default")
    return root


def instance_query() -> etree._Element:
    """Shaped like golden 11: a finished instance with two looped jobs (about 40 elements)."""
    root = response("localhost")
    wf = etree.SubElement(root, "workflow", comment="run", end_time="2026-11-24 08:23:27",
                          errors="0", evqid="1", id="1", name="wf", status="TERMINATED")
    params = etree.SubElement(wf, "parameters")
    for name in ("greeting", "items"):
        etree.SubElement(params, "parameter", name=name).text = "hello world"
    subjobs = etree.SubElement(wf, "subjobs")
    for j in range(3):
        job = etree.SubElement(subjobs, "job", evqid=str(10 * j), name=f"job{j}")
        tasks = etree.SubElement(job, "tasks")
        for t in range(2):
            task = etree.SubElement(tasks, "task", path="/bin/echo", queue="golden", retval="0",
                                    status="TERMINATED", type="BINARY", evqid=str(10 * j + t))
            etree.SubElement(task, "input", mode="text", name="message").text = "a < b & c"
            out = etree.SubElement(task, "output", method="text", retval="0")
            out.text = "line one\nline two\n"
            etree.SubElement(task, "stderr")
            etree.SubElement(task, "log")
    return root


def rate(fn: Callable[[], object], seconds: float) -> float:
    count, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        count += 100
    return count / (time.perf_counter() - started)


def report(label: str, fn: Callable[[], object], seconds: float) -> None:
    print(f"{label:<42} {rate(fn, seconds):10.0f} docs/s")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for name, elem in [("ping", ping_response()), ("queuepool list (10)", queuepool_list()),
                       ("instance query", instance_query())]:
        label = f"serialize {name} ({len(serialize(elem))} B)"
        report(label, lambda e=elem: serialize(e), seconds)
    framer = Framer(1 << 20)
    ping = b"<ping />\n"
    report("frame <ping />", lambda: framer.feed(ping), seconds)
    session = Session("localhost", lambda _: None, False, [], Framer(1 << 20), newline=True)
    session.start()
    answer = ping_response()

    def round_trip() -> None:
        for _ in session.receive_data(ping):
            session.send_response(answer)

    report("session ping round trip (no I/O)", round_trip, seconds)


if __name__ == "__main__":
    main()
