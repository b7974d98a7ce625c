"""Spawn rate of /bin/true: raw posix_spawn+waitpid versus through Spawner + forker.

Usage: python bench/spawn.py [--tasks N] [--concurrency C] [--rounds R] [--logs-dir DIR]

Figures (tasks per second, best of R rounds: the machine may be shared):
* raw, sequential: posix_spawn (new session) + waitpid in a loop, stdio on /dev/null;
* raw, concurrency C: the same keeping C children alive;
* raw + files, concurrency C: the same, each child's stdout/stderr being two new files in the
  logs directory, deleted after the wait: the floor for any design that captures output to
  files (creating a file costs 10 us on some filesystems and several 100 us on others);
* Spawner, concurrency C: spawn, exit callback, ack (the capture files are left in place);
* Spawner + outputs: what the engine does per task: the same plus reading and deleting the
  capture files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evqueue.process.spawner import ExitRecord, Spawner, TaskSpec  # noqa: E402

TRUE = "/bin/true"
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def raw_rate(n: int, concurrency: int, logs_dir: str | None = None) -> float:
    """posix_spawn+waitpid of /bin/true, ``concurrency`` at a time (files in logs_dir if set)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    env = dict(os.environ)
    files: dict[int, list[str]] = {}
    started = running = 0
    t0 = time.perf_counter()
    for _ in range(n):
        while running < concurrency and started < n:
            started += 1
            out = err = devnull
            if logs_dir is not None:
                paths = [os.path.join(logs_dir, f"raw{started}.{k}") for k in ("out", "err")]
                out, err = (os.open(p, FILE_FLAGS, 0o600) for p in paths)
            actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate((devnull, out, err))]
            pid = os.posix_spawn(TRUE, [TRUE], env, file_actions=actions, setsid=True)
            if logs_dir is not None:
                os.close(out)
                os.close(err)
                files[pid] = paths
            running += 1
        pid, _ = os.waitpid(-1, 0)
        for path in files.pop(pid, ()):
            os.unlink(path)
        running -= 1
    elapsed = time.perf_counter() - t0
    os.close(devnull)
    return n / elapsed


async def spawner_rates(
    n: int, concurrency: int, rounds: int, base: str | None
) -> tuple[float, float]:
    """Best rates without and with reading the outputs, over ``rounds`` rounds each."""
    tmp = tempfile.mkdtemp(prefix="evq-bench-", dir=base)
    logs = os.path.join(tmp, "logs")
    os.mkdir(logs)
    done: dict[int, asyncio.Future[None]] = {}

    def on_exit(rec: ExitRecord) -> None:
        done.pop(rec.tid).set_result(None)

    spawner = await Spawner.start(tmp, logs, on_exit=on_exit, idle_timeout=5)
    loop = asyncio.get_running_loop()

    async def worker(tids: range, read: bool) -> None:
        for tid in tids:
            done[tid] = fut = loop.create_future()
            await spawner.spawn(TaskSpec(tid, [TRUE]))
            await fut
            if read:
                await spawner.read_outputs(tid, 50 * 1024 * 1024)
            spawner.ack(tid)

    first_tid = 1

    async def rate(read: bool) -> float:
        """One round on fresh tids, so that every task's files are created anew."""
        nonlocal first_tid
        per = n // concurrency
        base_tid, first_tid = first_tid, first_tid + per * concurrency
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                worker(range(base_tid + w * per, base_tid + (w + 1) * per), read)
                for w in range(concurrency)
            )
        )
        return per * concurrency / (time.perf_counter() - t0)

    try:
        await rate(True)  # warm up
        plain = max([await rate(False) for _ in range(rounds)])
        full = max([await rate(True) for _ in range(rounds)])
        await spawner.shutdown_forker(30)
    finally:
        await spawner.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return plain, full


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--logs-dir", default=None, help="parent of the temporary logs directory")
    args = p.parse_args()
    n, conc, rounds = args.tasks, args.concurrency, args.rounds
    files_dir = tempfile.mkdtemp(prefix="evq-bench-raw-", dir=args.logs_dir)
    try:
        raw_seq = max(raw_rate(n, 1) for _ in range(rounds))
        raw_conc = max(raw_rate(n, conc) for _ in range(rounds))
        raw_files = max(raw_rate(n, conc, files_dir) for _ in range(rounds))
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)
    plain, full = asyncio.run(spawner_rates(n, conc, rounds, args.logs_dir))
    print(f"{n} x {TRUE}, best of {rounds}, logs under {args.logs_dir or tempfile.gettempdir()}")
    print(f"raw posix_spawn+waitpid, sequential      : {raw_seq:7.0f} /s")
    print(f"raw posix_spawn+waitpid, concurrency {conc:<3} : {raw_conc:7.0f} /s")
    print(f"raw + 2 output files,    concurrency {conc:<3} : {raw_files:7.0f} /s")
    print(f"Spawner+forker,          concurrency {conc:<3} : {plain:7.0f} /s")
    print(f"Spawner+forker+outputs,  concurrency {conc:<3} : {full:7.0f} /s")
    print(f"ratio Spawner / raw sequential          : {plain / raw_seq:7.2f}")
    print(f"ratio Spawner / raw concurrency {conc:<3}      : {plain / raw_conc:7.2f}")
    print(f"ratio Spawner / raw + files             : {plain / raw_files:7.2f}")
    print(f"ratio Spawner+outputs / raw conc {conc:<3}     : {full / raw_conc:7.2f}")


if __name__ == "__main__":
    main()
