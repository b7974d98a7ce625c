"""Instances end to end versus the machine's raw spawn rate, measured in the same run.

Usage: python bench/instances.py [--instances N] [--concurrency C] [--connections K]
                                 [--level L] [--rounds R] [--storage sqlite|mysql]
                                 [--matrix] [--quick]

Starts a daemon (savepoint level L, default 2) on a temporary directory, creates a one-task
``/bin/true`` workflow on a queue of concurrency C, launches N instances over K unix-socket
connections and waits until all are TERMINATED (their end is seen through ``status
type=workflows`` going back to 0), R times. Then measures the raw posix_spawn+waitpid rate of
/bin/true at the same concurrency (bench/spawn.py), also R times, and prints the best of each and
their ratio (the machine may be shared: best of R is the least disturbed run), plus the CPU
seconds the daemon and its forker used per 1,000 instances, their context switches per instance
and the daemon's RSS. It first prints the machine's cost of one wake-up (a pipe ping-pong
between two processes): every hand-off between the client, the daemon, its writer thread and
the forker pays it, and it varies several-fold between machines of one kind.
``--storage mysql`` uses the MariaDB server on 127.0.0.1:3306 (root, no password) in a
throw-away database, dropped afterwards. ``--matrix`` runs concurrency 8 and 64, each over 1 and
8 connections; ``--quick`` (make bench) uses 300 instances and 1 round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

import pymysql  # noqa: E402
from evqtest import Daemon, create_workflow, one_task, temporary_daemon  # noqa: E402
from spawn import raw_rate  # noqa: E402

from evqueue.protocol.auth import expected_response, sha1_hex  # noqa: E402


def _proc_stats(pid: int) -> tuple[float, int, float]:
    """(CPU seconds, RSS bytes, CPU seconds of its reaped children) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss, (int(fields[13]) + int(fields[14])) / tick


def machine_cpu() -> float:
    """CPU seconds the whole machine spent busy (not idle nor waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of a process so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    return total


def wakeup_round_trip(n: int = 20000) -> float:
    """Microseconds per pipe ping-pong between two processes: what one hand-off between the
    client, the daemon, its writer thread and the forker costs on this machine (a VM whose idle
    CPUs halt instead of polling pays a hypervisor exit per wake-up)."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        while os.read(r1, 1) == b"x":
            os.write(w2, b"x")
        os._exit(0)
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(w1, b"x")
        os.read(r2, 1)
    elapsed = time.perf_counter() - t0
    os.write(w1, b"q")
    os.waitpid(pid, 0)
    for fd in (r1, w1, r2, w2):
        os.close(fd)
    return elapsed / n * 1e6


def _login(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    challenge = sock.recv(4096).split(b'challenge="')[1][:40].decode()
    response = expected_response(sha1_hex("admin"), challenge)
    sock.sendall(f'<auth response="{response}" user="admin" />\n'.encode())
    assert b"<ready" in sock.recv(4096)
    return sock


def setup(d: Daemon, concurrency: int) -> None:
    """The benchmark's queue and one-task /bin/true workflow."""
    with d.client() as c:
        c.query(f'<queue action="create" name="bench" concurrency="{concurrency}" '
                'scheduler="default" dynamic="no" />')
        create_workflow(c, "bench", one_task("/bin/true", queue="bench"))


def launch_and_wait(d: Daemon, n: int, connections: int) -> float:
    """Launch ``n`` instances over ``connections`` unix connections and wait until none runs;
    returns the elapsed seconds."""
    per_conn = [n // connections + (i < n % connections) for i in range(connections)]
    errors: list[BaseException] = []

    def launcher(count: int) -> None:
        """A lean lock-step client, so the benchmark measures the daemon, not the client
        library's threads."""
        try:
            sock = _login(d.socket)
            for _ in range(count):
                sock.sendall(b'<instance action="launch" name="bench" />\n')
                answer = sock.recv(4096)
                if b'status="OK"' not in answer:
                    raise RuntimeError(answer.decode())
            sock.close()
        except BaseException as e:  # reported below
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=launcher, args=(k,)) for k in per_conn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    with d.client() as c:
        # limit="1": the count without serialising every running instance
        while c.query('<status action="query" type="workflows" limit="1" />').get("count") != "0":
            time.sleep(0.005)
    return time.perf_counter() - t0


def _forker_pid(d: Daemon) -> int:
    with open(os.path.join(d.root, "forker.pid")) as f:
        return int(f.read())


def _mysql(sql: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def storage_overrides(storage: str) -> Iterator[dict[str, str]]:
    """The daemon configuration of ``storage``: for mysql, a throw-away database on the local
    MariaDB (127.0.0.1:3306, root, no password), dropped afterwards."""
    if storage != "mysql":
        yield {}
        return
    database = f"evq_bench_{secrets.token_hex(4)}"
    _mysql(f"CREATE DATABASE `{database}`")
    try:
        yield {"core.storage": "mysql", "mysql.host": "127.0.0.1", "mysql.user": "root",
               "mysql.password": "", "mysql.database": database}
    finally:
        _mysql(f"DROP DATABASE IF EXISTS `{database}`")


def run(n: int, concurrency: int, connections: int, level: int, storage: str,
        rounds: int = 1) -> float:
    """Best end-to-end rate of ``rounds`` rounds of ``n`` instances on one daemon."""
    with storage_overrides(storage) as overrides, temporary_daemon(
            "evqb", **overrides, **{"workflowinstance.savepoint.level": str(level),
                                    "logger.db.enable": "no"}) as d:
        setup(d, concurrency)
        forker = _forker_pid(d)
        cpu0, (fcpu0, _, tasks0) = _proc_stats(d.proc.pid)[0], _proc_stats(forker)
        busy0 = machine_cpu()
        switches0 = context_switches(d.proc.pid), context_switches(forker)
        elapsed = min(launch_and_wait(d, n, connections) for _ in range(rounds))
        (cpu1, rss, _), (fcpu1, _, tasks1) = _proc_stats(d.proc.pid), _proc_stats(forker)
        busy = machine_cpu() - busy0
        switches = [context_switches(pid) - before
                    for pid, before in zip((d.proc.pid, forker), switches0, strict=True)]
        with d.client() as c:
            stats = c.query('<statistics action="query" type="global" />')[0]
            assert stats.get("workflow_instance_launched") == str(n * rounds)
            assert stats.get("workflow_instance_errors") == "0"
        rate = n / elapsed
        total = n * rounds / 1000
        print(f"instances end to end ({storage}, level {level}, concurrency {concurrency}, "
              f"{connections} connection(s)): {rate:,.0f}/s (best {elapsed:.2f} s for {n} of "
              f"{rounds} rounds)")
        print(f"CPU per 1,000 instances: daemon {(cpu1 - cpu0) / total:.2f} s, forker "
              f"{(fcpu1 - fcpu0) / total:.2f} s, the tasks themselves "
              f"{(tasks1 - tasks0) / total:.2f} s, whole machine {busy / total:.2f} s; "
              f"daemon RSS after: {rss / 1e6:.1f} MB")
        print(f"context switches per instance: daemon {switches[0] / (n * rounds):.1f}, "
              f"forker {switches[1] / (n * rounds):.1f}")
        return rate


def raw_with_cpu(n: int, concurrency: int) -> tuple[float, float]:
    """The raw spawn rate and the machine's CPU seconds per 1,000 spawns while it ran."""
    busy0 = machine_cpu()
    rate = raw_rate(n, concurrency)
    return rate, (machine_cpu() - busy0) / (n / 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--level", type=int, choices=range(4), default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--storage", choices=("sqlite", "mysql"), default="sqlite")
    p.add_argument("--matrix", action="store_true",
                   help="concurrency 8 and 64, each over 1 and 8 connections")
    p.add_argument("--quick", action="store_true", help="300 instances, 1 round (make bench)")
    a = p.parse_args()
    if a.quick:
        a.instances, a.rounds = 300, 1
    cases = ([(c, k) for c in (8, 64) for k in (1, 8)] if a.matrix
             else [(a.concurrency, a.connections)])
    print(f"machine: pipe ping-pong between two processes {wakeup_round_trip():.1f} us per "
          "round trip")
    for concurrency, connections in cases:
        rate = run(a.instances, concurrency, connections, a.level, a.storage, a.rounds)
        raw, raw_cpu = max(raw_with_cpu(a.instances, concurrency) for _ in range(a.rounds))
        print(f"raw spawn+wait of /bin/true at concurrency {concurrency}: {raw:,.0f}/s "
              f"(whole machine {raw_cpu:.2f} CPU s per 1,000)")
        print(f"ratio: {rate / raw:.2f} (target >= 0.70)")


if __name__ == "__main__":
    main()
