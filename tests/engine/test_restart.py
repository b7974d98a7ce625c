"""Restart recovery: after SIGTERM or kill -9 of the daemon (or of the forker), every instance
ends exactly once with its real outputs (tasks live on in the forker; savepoints are written
behind execution; exits are forgotten by the forker only once saved)."""

from __future__ import annotations

import collections
import os
import random
import signal
import time

from evqtest import create_workflow, launch, launch_through_kills, wait_retrying, wait_terminated

from evqueue.client import Client

N = 200


def _workflow(log: str, script: str = "sleep 1; ") -> str:
    """One task appending its parameter to ``log``, printing done-N and exiting N % 3."""
    return ('<workflow><parameters><parameter name="n"/></parameters><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="wide"><input>-c</input>'
            f'<input>{script}echo "$1" &gt;&gt; {log}; echo done-$1; exit $(($1 % 3))</input>'
            '<input>x</input><input><value select="evqGetWorkflowParameter(\'n\')"/></input>'
            "</task></tasks></job></subjobs></workflow>")


def _check_instance(doc, n: int) -> None:
    task = doc.find(".//task")
    outputs = task.findall("output")
    assert len(outputs) == 1, (doc.get("id"), n, len(outputs))  # ran once, collected once
    assert task.get("retval") == str(n % 3), (doc.get("id"), n, task.get("retval"))
    assert outputs[0].text == f"done-{n}\n"
    assert doc.get("errors") == ("0" if n % 3 == 0 else "1")


def _ran(log: str) -> collections.Counter:
    with open(log) as f:
        return collections.Counter(map(int, f.read().split()))


def _check_all(client: Client, ids: list[int], log: str) -> None:
    for n, iid in enumerate(ids):
        _check_instance(wait_terminated(client, iid, timeout=60), n)
    assert _ran(log) == collections.Counter(range(len(ids)))  # each ran exactly once


def _launch(client: Client, n: int, name: str = "w") -> int:
    return launch(client, name, n=n)


def _setup(make_daemon, script: str = "sleep 1; ", **config: str) -> tuple:
    """A daemon with a queue wide enough for every task and the logging workflow."""
    d = make_daemon(**config)
    log = os.path.join(d.root, "ran.log")
    with d.client() as c:
        c.query(f'<queue action="create" name="wide" concurrency="{N}" scheduler="default" '
                'dynamic="no" />')
        create_workflow(c, "w", _workflow(log, script))
    return d, log


def _running_tasks(c: Client, queue: str) -> int:
    stats = c.query('<statistics action="query" type="queue" />')[0]
    return int(stats.find(f"queue[@name='{queue}']").get("running_tasks"))


def test_kill_9_with_200_running_tasks(make_daemon):
    """The tasks end while no daemon runs: the next start collects them."""
    d, log = _setup(make_daemon)
    with d.client() as c:
        ids = [_launch(c, n) for n in range(N)]
        for _ in range(200):
            if _running_tasks(c, "wide") == N:
                break
            time.sleep(0.02)
    time.sleep(0.2)  # let the write-behind savepoint see the tasks running
    d.stop(signal.SIGKILL)
    time.sleep(1.5)
    d.start()
    with d.client() as c:
        _check_all(c, ids, log)


def test_kill_9_right_after_launching(make_daemon):
    """Instances created a moment ago, their tasks spawned or not, none saved running."""
    d, log = _setup(make_daemon)
    with d.client() as c:
        ids = [_launch(c, n) for n in range(60)]
    d.stop(signal.SIGKILL)
    d.start()
    with d.client() as c:
        _check_all(c, ids, log)


def test_kill_9_at_random_moments(make_daemon):
    """Launches on two connections while short tasks start and end, kill -9 at a random
    moment, restart, again: every instance that exists ends exactly once, and every launch
    that was answered exists."""
    d, log = _setup(make_daemon, script="")
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    answered = launch_through_kills(d, _launch, rng, rounds=3, connections=2, up=(0.05, 0.6))
    with d.client() as c:
        rows = c.query('<instances action="list" limit="100000" />')
        assert set(answered) <= {int(r.get("id")) for r in rows}, seed
        params = {}
        for row in rows:
            doc = wait_terminated(c, int(row.get("id")), timeout=30)
            n = int(doc.find("parameters/parameter[@name='n']").text)
            _check_instance(doc, n)
            params[int(row.get("id"))] = n
    assert len(answered) > 10, seed
    assert all(params[iid] == n for iid, n in answered.items()), seed
    assert _ran(log) == collections.Counter(params.values()), seed


def test_sigterm_with_running_queued_and_retrying_tasks(make_daemon):
    """A clean shutdown leaves running tasks alone and saves queued and retrying ones; the
    next start finishes everything, within the queue's limit, running nothing twice."""
    d = make_daemon()
    log = os.path.join(d.root, "order.log")
    count = os.path.join(d.root, "attempts")
    with d.client() as c:
        c.query('<queue action="create" name="one" concurrency="1" scheduler="default" '
                'dynamic="no" />')
        create_workflow(c, "q", (
            '<workflow><parameters><parameter name="n"/></parameters><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="one"><input>-c</input>'
            f'<input>echo start-$1 &gt;&gt; {log}; sleep 0.4; echo end-$1 &gt;&gt; {log}; '
            'echo out-$1</input><input>x</input>'
            '<input><value select="evqGetWorkflowParameter(\'n\')"/></input>'
            '</task></tasks></job></subjobs></workflow>'))
        # fails twice, then succeeds: 3 retries allowed, one is consumed by the restart
        create_workflow(c, "r", (
            '<workflow><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="default" retry_delay="1" retry_times="3">'
            f'<input>-c</input><input>echo x &gt;&gt; {count}; '
            f'[ $(wc -l &lt; {count}) -ge 3 ] &amp;&amp; echo third</input>'
            '</task></tasks></job></subjobs></workflow>'))
        queued = [_launch(c, n, "q") for n in range(3)]
        retrying = int(c.query('<instance action="launch" name="r" />')
                       .get("workflow-instance-id"))
        assert wait_retrying(c, retrying).get("retry_times") == "2"
        statuses = [c.query(f'<instance action="query" id="{i}" />').find(".//task")
                    .get("status") for i in queued]
        assert statuses == ["EXECUTING", "QUEUED", "QUEUED"]
    assert d.stop(signal.SIGTERM) == 0
    assert d.log().count("Suspended during shutdown") == 4
    time.sleep(0.5)  # the running task ends while no daemon runs
    d.start()
    with d.client() as c:
        for n, iid in enumerate(queued):
            doc = wait_terminated(c, iid, timeout=20)
            assert [o.text for o in doc.iter("output")] == [f"out-{n}\n"]
            assert doc.get("errors") == "0"
        doc = wait_terminated(c, retrying, timeout=20)
    with open(log) as f:  # one at a time, each once
        assert f.read().split() == [f"{e}-{n}" for n in range(3) for e in ("start", "end")]
    task = doc.find(".//task")
    assert [o.get("retval") for o in task.iter("output")] == ["1", "1", "0"]
    assert task.find("output[last()]").text == "third\n"
    assert task.get("retry_times") == "0"  # the pending retry restarted and used one more
    assert doc.get("errors") == "0"


def test_forker_killed_tasks_lost_and_retried(make_daemon):
    """kill -9 of the forker: its tasks cannot be known to end, so they are killed and fail
    with a clear message in their stderr; a task with retries is run again."""
    d, _ = _setup(make_daemon)
    mark = os.path.join(d.root, "first")
    with d.client() as c:
        create_workflow(c, "retried", (
            '<workflow><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="wide" retry_delay="1" retry_times="1">'
            f'<input>-c</input><input>[ -e {mark} ] &amp;&amp; echo second &amp;&amp; exit 0; '
            f'touch {mark}; sleep 30</input></task></tasks></job></subjobs></workflow>'))
        create_workflow(c, "plain", (
            '<workflow><subjobs><job><tasks><task path="/bin/sleep" queue="wide">'
            '<input>30</input></task></tasks></job></subjobs></workflow>'))
        retried = int(c.query('<instance action="launch" name="retried" />')
                      .get("workflow-instance-id"))
        plain = int(c.query('<instance action="launch" name="plain" />')
                    .get("workflow-instance-id"))
        for _ in range(100):  # EXECUTING: the forker has journaled the spawn
            if os.path.exists(mark) and all(
                    c.query(f'<instance action="query" id="{i}" />').find(".//task")
                    .get("status") == "EXECUTING" for i in (retried, plain)):
                break
            time.sleep(0.05)
        d.kill_forker()
        doc = wait_terminated(c, plain, timeout=15)
        task = doc.find(".//task")
        assert task.get("retval") == "-1"
        assert "the forker supervising this task died" in task.find("stderr").text
        assert doc.get("errors") == "1"
        doc = wait_terminated(c, retried, timeout=15)
        task = doc.find(".//task")
        assert [o.get("retval") for o in task.iter("output")] == ["-1", "0"]
        assert task.find("output[last()]").text == "second\n"
        assert doc.get("errors") == "0"
        # the new forker serves as before
        doc = wait_terminated(c, int(c.query('<instance action="launch" name="retried" />')
                                     .get("workflow-instance-id")))
        assert doc.get("errors") == "0"
