"""Schedule timers under load: fire-time drift with 10,000 active schedules.

Usage: python bench/schedules.py [--schedules N] [--every-second K] [--seconds S]

Builds the real Server's scheduler on a SQLite database holding N active schedules and runs two
scenarios. *Spread*: K schedules (default 50) fire every second, the others once a year; over S
seconds it prints the drift p50/p99/max (target: p99 < 50 ms), the time to arm all schedules and
to reload them after a change, and the loop lag measured by a 100 ms probe timer. *Burst*: all N
schedules are due at the same second (say, every one at midnight); it prints how late the first
and the last of them fired. Instead of launching instances, each firing records how late it ran
(actual time minus the scheduled second) and re-arms, so the figures are the timer machinery
itself: one loop timer per schedule, no periodic scan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evqueue.config import Config  # noqa: E402
from evqueue.server import Server  # noqa: E402


async def run(strings: list[str], seconds: float) -> tuple[list[float], list[float], float, float]:
    """Arm one schedule per string for ``seconds``; returns the fire drifts (s), the loop lags
    (s), the time to arm them all and the time of a reload (s)."""
    root = tempfile.mkdtemp(prefix="evqsb")
    server = Server(Config.from_mapping({
        "core.storage": "sqlite", "sqlite.path": os.path.join(root, "b.db"),
        "logger.db.enable": "no"}))
    await server.storage.open()
    await server.storage.execute(
        "INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, "
        "workflow_comment) VALUES ('w', '<workflow><subjobs/></workflow>', '', '')")

    def insert(tx: object) -> None:
        for text in strings:
            tx.execute(  # type: ignore[attr-defined]
                "INSERT INTO t_workflow_schedule (node_name, workflow_id, workflow_schedule, "
                "workflow_schedule_onfailure, workflow_schedule_active, "
                "workflow_schedule_comment) VALUES ('localhost', 1, %s, 'CONTINUE', 1, '')",
                (text,))

    await server.storage.transaction(insert)
    await server.workflow_schedules.reload()
    await server.workflows.reload()
    drifts: list[float] = []
    scheduler = server.scheduler

    armed_at = float("inf")

    async def record(schedule: object, at: float) -> None:
        if at > armed_at:  # occurrences due while arming are start-up cost, reported apart
            drifts.append(time.time() - at)
        scheduler.running.pop(schedule.id, None)  # type: ignore[attr-defined]
        scheduler._rearm(schedule.id)  # type: ignore[attr-defined]

    scheduler._launch = record  # type: ignore[method-assign]
    t0 = time.perf_counter()
    scheduler.start()
    armed = time.perf_counter() - t0
    armed_at = time.time()
    t0 = time.perf_counter()
    await scheduler.reload()  # what a schedule create/edit/delete does
    reload = time.perf_counter() - t0
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = loop.time()
        await asyncio.sleep(0.1)
        lags.append(loop.time() - t - 0.1)
    scheduler.stop()
    await server.storage.close()
    shutil.rmtree(root, ignore_errors=True)
    return sorted(drifts), lags, armed, reload


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schedules", type=int, default=10000)
    p.add_argument("--every-second", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    n, k = a.schedules, a.every_second

    drifts, lags, armed, reload = asyncio.run(
        run([";;;;;"] * k + ["0;0;0;0;0;"] * (n - k), a.seconds))
    ms = [d * 1000 for d in drifts]
    print(f"spread: {n:,} active schedules armed in {armed * 1000:.0f} ms ({k} of them every "
          f"second); reload after a change: {reload * 1000:.0f} ms")
    print(f"  fire drift over {len(ms):,} firings: p50 {statistics.median(ms):.1f} ms, "
          f"p99 {ms[int(len(ms) * 0.99)]:.1f} ms, max {ms[-1]:.1f} ms (target p99 < 50 ms)")
    print(f"  loop lag (100 ms probe): max {max(lags) * 1000:.1f} ms")

    due = time.localtime(time.time() + 3)  # every schedule at this second, once a day
    text = f"{due.tm_sec};{due.tm_min};{due.tm_hour}"
    drifts, lags, _, _ = asyncio.run(run([text] * n, 4))
    print(f"burst: {n:,} schedules due at the same second: {len(drifts):,} fired, the first "
          f"{drifts[0] * 1000:.1f} ms late, the last {drifts[-1] * 1000:.1f} ms late; "
          f"loop lag max {max(lags) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
