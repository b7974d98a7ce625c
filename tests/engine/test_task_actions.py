"""Per-task actions of a running instance (our extension, docs/deviations.md): ``retrytask``
and ``skiptask`` unblock a job whose task failed or waits for a retry."""

from __future__ import annotations

import pytest
from evqtest import (
    create_workflow,
    launch,
    wait_executing,
    wait_retrying,
    wait_task,
    wait_terminated,
)

from evqueue.client import EvqError

# a failing task with a long retry delay, then a job that only runs once it succeeded
FAILING_THEN_NEXT = (
    '<workflow><subjobs><job name="first"><tasks>'
    '<task path="/bin/false" queue="default" {retry} />'
    '</tasks><subjobs><job name="next"><tasks>'
    '<task path="/bin/echo" queue="default"><input>next ran</input></task>'
    '</tasks></job></subjobs></job></subjobs></workflow>'
)


def _next_stdout(doc) -> str | None:
    output = doc.find("subjobs/job/subjobs/job/tasks/task/output")
    return output.text if output is not None else None


def _act_on_retrying_task(c, action: str, retry_times: int):
    """Launch FAILING_THEN_NEXT, apply ``action`` to its task once it waits for a retry, and
    return the ended instance's document."""
    create_workflow(c, "w", FAILING_THEN_NEXT.format(
        retry=f'retry_delay="100" retry_times="{retry_times}"'))
    iid = launch(c, "w")
    task = wait_retrying(c, iid)
    c.query(f'<instance action="{action}" id="{iid}" evqid="{task.get("evqid")}" />')
    return wait_terminated(c, iid, timeout=10)


def test_skip_a_task_waiting_for_its_retry(daemon):
    with daemon.client() as c:
        doc = _act_on_retrying_task(c, "skiptask", 2)
    skipped = doc.find("subjobs/job/tasks/task")
    assert skipped.get("status") == "SKIPPED"
    assert skipped.get("retry_at") is None  # no retry is announced any more
    assert _next_stdout(doc).strip() == "next ran"
    assert doc.get("errors") == "0"


def test_retry_a_failed_task_then_skip_it(daemon):
    # a parallel job keeps the instance running while the first one has failed
    xml = FAILING_THEN_NEXT.format(retry="").replace(
        "</subjobs></workflow>",
        '<job name="keep"><tasks><task path="/bin/sleep" queue="keep"><input>3</input>'
        "</task></tasks></job></subjobs></workflow>")
    with daemon.client() as c:
        c.query('<queue action="create" name="keep" concurrency="1" scheduler="fifo" '
                'dynamic="no" />')
        create_workflow(c, "w", xml)
        iid = launch(c, "w")
        task = wait_task(c, iid, lambda t: t.get("status") == "TERMINATED", "failed")
        evqid = task.get("evqid")
        c.query(f'<instance action="retrytask" id="{iid}" evqid="{evqid}" />')
        # it ran again (and failed again)
        wait_task(c, iid, lambda t: len(t.findall("output")) == 2
                  and t.get("status") == "TERMINATED", "run twice")
        c.query(f'<instance action="skiptask" id="{iid}" evqid="{evqid}" />')
        doc = wait_terminated(c, iid, timeout=10)
    assert doc.find("subjobs/job/tasks/task").get("status") == "SKIPPED"
    assert _next_stdout(doc).strip() == "next ran"
    assert doc.get("errors") == "0"


def test_retry_now_a_task_waiting_for_its_retry(daemon):
    with daemon.client() as c:
        doc = _act_on_retrying_task(c, "retrytask", 1)
    task = doc.find("subjobs/job/tasks/task")
    assert len(task.findall("output")) == 2  # the first run and the retry, at once
    assert _next_stdout(doc) is None  # still failed: the next job never ran


def test_actions_refused_on_unknown_or_executing_tasks(daemon):
    with daemon.client() as c:
        create_workflow(c, "s", '<workflow><subjobs><job><tasks>'
                                '<task path="/bin/sleep" queue="default"><input>10</input>'
                                '</task></tasks></job></subjobs></workflow>')
        iid = launch(c, "s")
        task = wait_executing(c, iid)
        evqid, pid = task.get("evqid"), task.get("pid")
        for action in ("retrytask", "skiptask"):
            with pytest.raises(EvqError) as e:
                c.query(f'<instance action="{action}" id="{iid}" evqid="{evqid}" />')
            assert e.value.code == "INVALID_PARAMETER"
            with pytest.raises(EvqError) as e:
                c.query(f'<instance action="{action}" id="{iid}" evqid="999" />')
            assert e.value.code == "UNKNOWN_OBJECT"
        c.query(f'<instance action="killtask" id="{iid}" pid="{pid}" />')
        assert wait_terminated(c, iid, timeout=10).find(".//task").get("retval") != "0"
