"""Memory and CPU of the daemon: RSS idle, after 1,000 instances, after a whole suite, and over
repeated runs; CPU seconds per 1,000 instances.

Usage: python bench/resources.py [--instances N] [--rounds R] [--quick]

Starts a daemon (SQLite, savepoint level 2) and reads its VmRSS from /proc: idle (after start-up
and one query), after N one-task ``/bin/true`` instances at concurrency 8 over 8 connections
(with the CPU seconds the daemon and its forker used, per 1,000 instances), then after each of
R rounds of the whole suite (N instances over 8 connections, 2 s of pings on 8 connections, 100
synchronous launches, an ``instances list`` page), and the growth from the second round to the
last (the first round warms caches and pools up). Targets: RSS <= 40 MB idle, <= 60 MB after
the suite, no growth over rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from evqtest import Daemon, temporary_daemon  # noqa: E402
from instances import _forker_pid, _proc_stats, launch_and_wait, setup  # noqa: E402
from latency import launch_latencies  # noqa: E402
from ping import BARE, rate  # noqa: E402

IDLE_MB, SUITE_MB = 40, 60


def rss_mb(pid: int) -> float:
    return _proc_stats(pid)[1] / 1e6


def suite(d: Daemon, n: int) -> None:
    """One round of everything the other benchmarks do to a daemon."""
    launch_and_wait(d, n, 8)
    rate(d.socket, True, BARE, 8, 2.0)
    launch_latencies(d.socket, 100)
    with d.client() as c:
        c.query('<instances action="list" filter_workflow="bench" />')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="3 rounds (make bench)")
    a = p.parse_args()
    if a.quick:
        a.rounds = 3
    with temporary_daemon("evqrs", **{"logger.db.enable": "no"}) as d:
        pid = d.proc.pid
        setup(d, 8)
        time.sleep(1)
        idle = rss_mb(pid)
        forker = _forker_pid(d)
        cpu0, fcpu0 = _proc_stats(pid)[0], _proc_stats(forker)[0]
        launch_and_wait(d, a.instances, 8)
        cpu1, fcpu1 = _proc_stats(pid)[0], _proc_stats(forker)[0]
        after = rss_mb(pid)
        per = 1000 / a.instances
        print(f"RSS idle: {idle:.1f} MB (target <= {IDLE_MB} MB); after {a.instances} "
              f"instances: {after:.1f} MB")
        print(f"CPU per 1,000 instances: daemon {(cpu1 - cpu0) * per:.2f} s, forker "
              f"{(fcpu1 - fcpu0) * per:.2f} s")
        rounds = []
        for k in range(a.rounds):
            suite(d, a.instances)
            rounds.append(rss_mb(pid))
            print(f"RSS after suite round {k + 1}: {rounds[-1]:.1f} MB")
        growth = rounds[-1] - rounds[min(1, len(rounds) - 1)]
        print(f"RSS after the suite: {rounds[-1]:.1f} MB (target <= {SUITE_MB} MB); growth "
              f"from round 2 to round {len(rounds)}: {growth:+.1f} MB (target: none)")


if __name__ == "__main__":
    main()
