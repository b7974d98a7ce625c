"""Restart recovery: after SIGTERM or kill -9 of the daemon, every instance ends exactly once
with its real outputs (tasks live on in the forker; savepoints are written behind execution)."""

from __future__ import annotations

import os
import signal
import time

from evqtest import create_workflow, wait_terminated

N = 200


def _workflow(log: str) -> str:
    return ('<workflow><parameters><parameter name="n"/></parameters><subjobs><job><tasks>'
            '<task path="/bin/sh" queue="wide"><input>-c</input>'
            f'<input>sleep 1; echo "$1" &gt;&gt; {log}; echo done-$1; exit $(($1 % 3))</input>'
            '<input>x</input><input><value select="evqGetWorkflowParameter(\'n\')"/></input>'
            "</task></tasks></job></subjobs></workflow>")


def _check_all(client, ids: list[int], log: str) -> None:
    for n, iid in enumerate(ids):
        doc = wait_terminated(client, iid, timeout=60)
        task = doc.find(".//task")
        assert task.get("retval") == str(n % 3), (iid, task.get("retval"))
        assert task.find("output").text == f"done-{n}\n"
    with open(log) as f:
        lines = f.read().split()
    assert sorted(map(int, lines)) == list(range(len(ids)))  # each ran exactly once


def _launch_all(client, count: int) -> list[int]:
    return [int(client.query(f'<instance action="launch" name="w"><parameter name="n" '
                             f'value="{n}"/></instance>').get("workflow-instance-id"))
            for n in range(count)]


def _setup(make_daemon) -> tuple:
    """A daemon with a queue wide enough for every task and the logging workflow."""
    d = make_daemon()
    log = os.path.join(d.root, "ran.log")
    with d.client() as c:
        c.query(f'<queue action="create" name="wide" concurrency="{N}" scheduler="default" '
                'dynamic="no" />')
        create_workflow(c, "w", _workflow(log))
    return d, log


def test_kill_9_with_200_running_tasks(make_daemon):
    d, log = _setup(make_daemon)
    with d.client() as c:
        ids = _launch_all(c, N)
        for _ in range(200):
            if int(c.query('<statistics action="query" type="queue" />')[0]
                   .find("queue[@name='wide']").get("running_tasks")) == N:
                break
            time.sleep(0.02)
    time.sleep(0.2)  # let the write-behind savepoint see the tasks running
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    time.sleep(1.5)  # the tasks end while no daemon runs
    d.start()
    with d.client() as c:
        _check_all(c, ids, log)


def test_kill_9_while_launching(make_daemon):
    """Kill the daemon at a moment where instances are being created and tasks spawned:
    whatever was launched ends exactly once."""
    d, log = _setup(make_daemon)
    with d.client() as c:
        ids = _launch_all(c, 60)
    d.proc.send_signal(signal.SIGKILL)  # right after the last launch answer
    d.proc.wait()
    d.start()
    with d.client() as c:
        _check_all(c, ids, log)
