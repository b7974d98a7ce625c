"""Synchronous launch latency: ``launch mode="synchronous"`` → the TERMINATED answer.

Usage: python bench/latency.py [--launches N] [--level L] [--quick]

Starts a daemon (SQLite, savepoint level L, default 2), creates a one-task ``/bin/true``
workflow and times N sequential synchronous launches on one unix connection (the answer comes
when the instance has terminated), after 20 warm-up launches; prints p50, p99 and max (target:
p50 <= 3 ms). The physical limit, measured in the same run: one posix_spawn+waitpid of
/bin/true, sequential (bench/spawn.py), and the ratio of the two p50s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from evqtest import temporary_daemon  # noqa: E402
from instances import _login, setup  # noqa: E402
from spawn import raw_rate  # noqa: E402

TARGET_MS = 3.0
LAUNCH = b'<instance action="launch" name="bench" mode="synchronous" />\n'


def launch_latencies(path: str, n: int) -> list[float]:
    """Seconds of ``n`` synchronous launches, lock-step on one connection."""
    sock = _login(path)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            sock.sendall(LAUNCH)
            answer = sock.recv(65536)
            while not answer.endswith(b">\n") or answer.endswith(b"<ping />\n"):
                answer += sock.recv(65536)  # (keep-alives come before a late answer)
            times.append(time.perf_counter() - t)
            if b'status="OK"' not in answer:
                raise RuntimeError(answer.decode())
    finally:
        sock.close()
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launches", type=int, default=500)
    p.add_argument("--level", type=int, choices=range(4), default=2)
    p.add_argument("--quick", action="store_true", help="100 launches (make bench)")
    a = p.parse_args()
    if a.quick:
        a.launches = 100
    with temporary_daemon("evqlt", **{"workflowinstance.savepoint.level": str(a.level),
                                      "logger.db.enable": "no"}) as d:
        setup(d, 8)
        launch_latencies(d.socket, 20)
        times = launch_latencies(d.socket, a.launches)
    spawn_ms = 1000 / max(raw_rate(200, 1) for _ in range(3))
    p50 = statistics.median(times) * 1000
    print(f"synchronous launch -> TERMINATED (sqlite, level {a.level}, {a.launches} launches): "
          f"p50 {p50:.2f} ms, p99 {percentile(times, 0.99) * 1000:.2f} ms, "
          f"max {max(times) * 1000:.2f} ms (target p50 <= {TARGET_MS} ms)")
    print(f"raw posix_spawn+waitpid of /bin/true, sequential: {spawn_ms:.2f} ms each; "
          f"launch p50 / raw spawn: {p50 / spawn_ms:.1f}")


if __name__ == "__main__":
    main()
