"""Faults (issue 11 item 4): kill -9 of the daemon at random moments while instances launch,
tasks end and a schedule fires every second; the SQLite file locked by another process;
tasks that leave a daemon behind or close their stdout early; many tasks with large outputs.
Nothing launched is lost or run twice and the daemon keeps serving."""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from evqtest import create_workflow, launch, launch_through_kills, one_task, wait_terminated
from rawapi import no_tracebacks, ping_ok

from evqueue.client import Client

#: kill -9 rounds, tasks and output size of the large-output test (bigger values for a
#: manual run: EVQ_KILL_ROUNDS=20 EVQ_TASKS=10000)
KILL_ROUNDS = int(os.environ.get("EVQ_KILL_ROUNDS", "4"))
TASKS = int(os.environ.get("EVQ_TASKS", "1000"))
OUTPUT_SIZE = int(os.environ.get("EVQ_TASK_OUTPUT", str(100 * 1024)))


def _launched_workflow(log: str) -> str:
    """Appends ``L n`` to ``log``, prints done-n after a short random pause, exits n % 3."""
    return ('<workflow><parameters><parameter name="n"/></parameters><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="wide"><input>-c</input>'
            f'<input>sleep 0.$(($1 % 4)); echo "L $1" &gt;&gt; {log}; echo done-$1; '
            "exit $(($1 % 3))</input><input>x</input>"
            '<input><value select="evqGetWorkflowParameter(\'n\')"/></input>'
            "</task></tasks></job></subjobs></workflow>")


def _scheduled_workflow(log: str) -> str:
    """Appends ``S <instance id>`` to ``log`` and prints sched-<instance id>."""
    return ('<workflow><subjobs><job><tasks><task path="/bin/sh" queue="wide">'
            f'<input>-c</input><input>echo "S $1" &gt;&gt; {log}; echo sched-$1</input>'
            '<input>x</input><input><value select="/workflow/@id"/></input>'
            "</task></tasks></job></subjobs></workflow>")


def _launch(c: Client, n: int) -> int:
    return launch(c, "w", n=n)


def test_kill_9_at_random_moments_with_schedules(make_daemon) -> None:
    """Rounds of: launches on three connections and a schedule firing every second, kill -9
    at a random moment, restart. Then every instance that exists (every answered launch
    among them) has ended with the outputs of exactly one run of its task, and no task ran
    for an instance that does not exist."""
    d = make_daemon()
    log = os.path.join(d.root, "ran.log")
    with d.client() as c:
        c.query('<queue action="create" name="wide" concurrency="500" scheduler="default" '
                'dynamic="no"/>')
        create_workflow(c, "w", _launched_workflow(log))
        sid = create_workflow(c, "s", _scheduled_workflow(log))
        schedule = int(c.query(f'<workflow_schedule action="create" workflow_id="{sid}" '
                               'node="localhost" schedule=";;;;;" onfailure="CONTINUE" '
                               'active="yes" comment=""/>').get("schedule-id"))
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    answered = launch_through_kills(d, _launch, rng, rounds=KILL_ROUNDS, connections=3,
                                    up=(0.3, 2.5), down=0.5, pace=0.02)
    with d.client() as c:
        c.query(f'<workflow_schedule action="edit" id="{schedule}" workflow_id="{sid}" '
                'node="localhost" schedule=";;;;;" onfailure="CONTINUE" active="no" '
                'comment=""/>')
        rows = c.query('<instances action="list" limit="1000000"/>')
        ids = {int(r.get("id")) for r in rows}
        assert set(answered) <= ids, (seed, set(answered) - ids)
        launched: dict[int, int] = {}
        scheduled: set[int] = set()
        for iid in sorted(ids):
            doc = wait_terminated(c, iid, timeout=60)
            task = doc.find(".//task")
            outputs = task.findall("output")
            assert len(outputs) == 1, (seed, iid, len(outputs))
            if doc.get("name") == "w":
                n = int(doc.find("parameters/parameter[@name='n']").text)
                assert outputs[0].text == f"done-{n}\n", (seed, iid)
                assert task.get("retval") == str(n % 3), (seed, iid)
                launched[iid] = n
            else:
                assert outputs[0].text == f"sched-{iid}\n", (seed, iid, outputs[0].text)
                assert task.get("retval") == "0"
                scheduled.add(iid)
    assert all(launched[iid] == n for iid, n in answered.items()), seed
    with open(log) as f:
        runs = collections.Counter(tuple(line.split()) for line in f)
    assert runs == collections.Counter(
        [("L", str(n)) for n in launched.values()] + [("S", str(i)) for i in scheduled]), seed
    assert len(answered) > 20 and len(scheduled) >= 2, (seed, len(scheduled))
    print(f"\nkill -9: seed {seed}, {KILL_ROUNDS} kills, {len(launched)} launched and "
          f"{len(scheduled)} scheduled instances, each ran once, 0 lost")


def _launches_through_outage(d, launches: int, hold: float,
                             end_outage: Callable[[], None]) -> set[str]:
    """While the database is unavailable, ``launches`` launches of ``quick`` (echo hi) on
    another connection; pings and ``status type="database"`` keep answering (polled for at
    least ``hold`` seconds and until the outage shows, 10 s at most past ``hold``). Then
    ``end_outage()``: every launch is answered, with distinct ids, and runs once. Returns the
    states the status reported."""
    ids: list[int] = []
    errors: list[BaseException] = []

    def launcher() -> None:
        try:
            with d.client() as c:
                for _ in range(launches):
                    ids.append(launch(c, "quick"))
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=launcher)
    t.start()
    t0 = time.monotonic()
    states: set[str] = set()
    try:
        with d.client() as c:
            while time.monotonic() - t0 < hold or (
                    "unavailable" not in states and time.monotonic() - t0 < hold + 10):
                ping_ok(d)  # the loop is never blocked by the database
                states.add(c.query('<status action="query" type="database"/>')
                           .find("database").get("state"))
                time.sleep(0.2)
    finally:
        end_outage()
    t.join(60)
    assert not errors, errors
    assert len(ids) == launches and len(set(ids)) == launches
    with d.client() as c:
        for iid in ids:
            assert wait_terminated(c, iid).find(".//output").text == "hi\n"
    return states


def test_sqlite_file_locked(make_daemon) -> None:
    """Another process holds the write lock for longer than the busy timeout: queries that
    read still answer, writes wait and retry, the condition is logged, and once the lock
    goes everything that was asked is done."""
    d = make_daemon()
    with d.client() as c:
        create_workflow(c, "quick", one_task("/bin/echo", "hi"))
    holder = sqlite3.connect(os.path.join(d.root, "evqueue.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    states = _launches_through_outage(d, 5, 8, release)
    with d.client() as c:
        c.query('<queue action="create" name="after" concurrency="1" scheduler="default" '
                'dynamic="no"/>')  # writes work again
    log = d.log()
    assert "Database unavailable (database is locked)" in log, log[-3000:]
    assert "Database available again" in log, log[-3000:]
    assert states == {"ok", "unavailable"}, states
    no_tracebacks(d)


def test_tasks_that_keep_or_close_stdout(make_daemon, tmp_path) -> None:
    """A task that leaves a daemon holding its stdout ends when the task exits; one that
    closes its stdout early ends normally with what it wrote before."""
    d = make_daemon()
    pidfile = tmp_path / "bg.pid"
    with d.client() as c:
        create_workflow(c, "forks", one_task(
            "/bin/sh", "-c", f"echo before; (sleep 30; echo late) &amp; echo $! &gt; {pidfile};"
            " echo after"))
        create_workflow(c, "closes", one_task(
            "/bin/sh", "-c", "echo early; exec 1&gt;&amp;-; sleep 0.3; echo oops &gt;&amp;2; "
            "exit 3"))
        create_workflow(c, "closes-all", one_task(
            "/bin/sh", "-c", "exec 1&gt;&amp;- 2&gt;&amp;- 0&lt;&amp;-; sleep 0.3; exit 0"))
        t0 = time.monotonic()
        forks = int(c.query('<instance action="launch" name="forks"/>')
                    .get("workflow-instance-id"))
        doc = wait_terminated(c, forks, timeout=10)
        assert time.monotonic() - t0 < 10
        task = doc.find(".//task")
        assert task.get("retval") == "0" and task.find("output").text == "before\nafter\n"
        closes = int(c.query('<instance action="launch" name="closes"/>')
                     .get("workflow-instance-id"))
        task = wait_terminated(c, closes).find(".//task")
        assert task.get("retval") == "3" and task.find("output").text == "early\n"
        assert task.find("stderr").text == "oops\n"
        closes_all = int(c.query('<instance action="launch" name="closes-all"/>')
                         .get("workflow-instance-id"))
        task = wait_terminated(c, closes_all).find(".//task")
        assert task.get("retval") == "0" and not task.find("output").text
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    ping_ok(d)


def test_many_tasks_with_large_outputs(make_daemon) -> None:
    """TASKS instances each printing OUTPUT_SIZE bytes: all end with their full output and
    the daemon's memory does not hold them all."""
    d = make_daemon()
    with d.client() as c:
        c.query('<queue action="create" name="big" concurrency="16" scheduler="default" '
                'dynamic="no"/>')
        create_workflow(c, "big", one_task(
            "/bin/sh", "-c", f'printf "%0{OUTPUT_SIZE - 1}d\\n" $1', "x",
            '<value select="evqGetWorkflowParameter(\'n\')"/>', queue="big"
        ).replace("<workflow>", '<workflow><parameters><parameter name="n"/></parameters>'))
        t0 = time.monotonic()
        ids = [int(c.query(f'<instance action="launch" name="big"><parameter name="n" '
                           f'value="{n}"/></instance>').get("workflow-instance-id"))
               for n in range(TASKS)]
        deadline = time.monotonic() + 30 + TASKS * 0.1
        while True:
            running = int(c.query('<status action="query" type="workflows" limit="1"/>')
                          .get("count"))
            if running == 0:
                break
            assert time.monotonic() < deadline, running
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        rows = c.query(f'<instances action="list" filter_workflow="big" limit="{TASKS}"/>')
        assert len(rows) == TASKS and all(r.get("errors") == "0" for r in rows)
        for n in random.sample(range(TASKS), min(TASKS, 40)):
            out = wait_terminated(c, ids[n]).find(".//output").text
            assert out == f"{n:0{OUTPUT_SIZE - 1}d}\n", n
    rss_kb = _rss_kb(d.proc.pid)
    print(f"\n{TASKS} tasks x {OUTPUT_SIZE >> 10} KB: {elapsed:.1f} s, daemon RSS "
          f"{rss_kb >> 10} MB")
    assert rss_kb < 400_000, rss_kb
    ping_ok(d)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _mount_tmpfs(path: str, size: str) -> bool:
    """A small filesystem of our own to fill up (root only; False where mounting is denied)."""
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True)
    return done.returncode == 0


def test_sqlite_disk_full(make_daemon, tmp_path) -> None:
    """The database's filesystem fills up: the daemon keeps answering, reports the condition,
    and the launches asked meanwhile all happen once space is back."""
    mnt = str(tmp_path / "small")
    if not _mount_tmpfs(mnt, "8m"):
        pytest.skip("needs root and tmpfs mounts to fill a filesystem")
    try:
        d = make_daemon(**{"sqlite.path": os.path.join(mnt, "evqueue.db")})
        with d.client() as c:
            create_workflow(c, "quick", one_task("/bin/echo", "hi"))
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:  # every free block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        # 20 launches: enough rows to need new pages
        states = _launches_through_outage(d, 20, 0, lambda: os.unlink(filler))
        log = d.log()
        assert "unavailable" in states, log[-3000:]
        assert "Database unavailable (database or disk is full)" in log, log[-3000:]
        assert "Database available again" in log, log[-3000:]
        no_tracebacks(d)
        d.stop()
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
