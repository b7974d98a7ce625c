"""Schedule timers under load: fire-time drift with 10,000 active schedules.

Usage: python bench/schedules.py [--schedules N] [--seconds S]

Builds the real Server's scheduler on a SQLite database holding N active schedules: most fire
once a year, ``--every-second`` (default 50) fire every second. Instead of launching instances,
each firing records how late it ran (actual time minus the scheduled second) and re-arms, so the
figure is the timer machinery itself: one loop-timer per schedule, no periodic scan. Prints the
drift p50/p99/max over S seconds, the time to arm all schedules, and the loop lag measured by a
100 ms probe timer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evqueue.config import Config  # noqa: E402
from evqueue.server import Server  # noqa: E402


async def bench(n: int, every_second: int, seconds: float) -> None:
    root = tempfile.mkdtemp(prefix="evqsb")
    server = Server(Config.from_mapping({
        "core.storage": "sqlite", "sqlite.path": os.path.join(root, "b.db"),
        "logger.db.enable": "no"}))
    await server.storage.open()
    await server.storage.execute(
        "INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, "
        "workflow_comment) VALUES ('w', '<workflow><subjobs/></workflow>', '', '')")
    rows = [("localhost", 1, "0;0;0;0;0;" if i >= every_second else ";;;;;", "CONTINUE", 1, "")
            for i in range(n)]

    def insert(tx: object) -> None:
        for row in rows:
            tx.execute(  # type: ignore[attr-defined]
                "INSERT INTO t_workflow_schedule (node_name, workflow_id, workflow_schedule, "
                "workflow_schedule_onfailure, workflow_schedule_active, "
                "workflow_schedule_comment) VALUES (%s, %s, %s, %s, %s, %s)", row)

    await server.storage.transaction(insert)
    await server.workflow_schedules.reload()
    await server.workflows.reload()
    drifts: list[float] = []
    scheduler = server.scheduler

    async def record(schedule: object, at: float) -> None:
        drifts.append(time.time() - at)
        scheduler.running.pop(schedule.id, None)  # type: ignore[attr-defined]
        scheduler._rearm(schedule.id)  # type: ignore[attr-defined]

    scheduler._launch = record  # type: ignore[method-assign]
    t0 = time.perf_counter()
    scheduler.start()
    armed = time.perf_counter() - t0
    t0 = time.perf_counter()
    await scheduler.reload()  # what a schedule create/edit/delete does
    rearm = time.perf_counter() - t0
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = loop.time()
        await asyncio.sleep(0.1)
        lags.append(loop.time() - t - 0.1)
    scheduler.stop()
    await server.storage.close()
    drifts.sort()
    ms = [d * 1000 for d in drifts]
    print(f"{n:,} active schedules armed in {armed * 1000:.0f} ms "
          f"({every_second} of them every second); reload after a change: "
          f"{rearm * 1000:.0f} ms")
    print(f"fire drift over {len(ms):,} firings: p50 {statistics.median(ms):.1f} ms, "
          f"p99 {ms[int(len(ms) * 0.99)]:.1f} ms, max {ms[-1]:.1f} ms (target p99 < 50 ms)")
    print(f"loop lag (100 ms probe): max {max(lags) * 1000:.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schedules", type=int, default=10000)
    p.add_argument("--every-second", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    asyncio.run(bench(a.schedules, a.every_second, a.seconds))


if __name__ == "__main__":
    main()
