"""Per-task actions of a running instance (our extension, docs/deviations.md): ``retrytask``
and ``skiptask`` unblock a job whose task failed or waits for a retry."""

from __future__ import annotations

import time

import pytest
from evqtest import create_workflow, wait_retrying, wait_terminated

from evqueue.client import EvqError

# a failing task with a long retry delay, then a job that only runs once it succeeded
FAILING_THEN_NEXT = (
    '<workflow><subjobs><job name="first"><tasks>'
    '<task path="/bin/false" queue="default" {retry} />'
    '</tasks><subjobs><job name="next"><tasks>'
    '<task path="/bin/echo" queue="default"><input>next ran</input></task>'
    '</tasks></job></subjobs></job></subjobs></workflow>'
)


def _launch(c, name: str) -> int:
    return int(c.query(f'<instance action="launch" name="{name}" />')
               .get("workflow-instance-id"))


def _next_stdout(doc) -> str:
    output = doc.find("subjobs/job/subjobs/job/tasks/task/output")
    return output.text if output is not None else None


def test_skip_a_task_waiting_for_its_retry(daemon):
    with daemon.client() as c:
        create_workflow(c, "w", FAILING_THEN_NEXT.format(
            retry='retry_delay="100" retry_times="2"'))
        iid = _launch(c, "w")
        task = wait_retrying(c, iid)
        c.query(f'<instance action="skiptask" id="{iid}" evqid="{task.get("evqid")}" />')
        doc = wait_terminated(c, iid, timeout=10)
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
        iid = _launch(c, "w")
        query = f'<instance action="query" id="{iid}" />'
        for _ in range(100):
            task = c.query(query)[0].find("subjobs/job/tasks/task")
            if task.get("status") == "TERMINATED":
                break
            time.sleep(0.02)
        evqid = task.get("evqid")
        c.query(f'<instance action="retrytask" id="{iid}" evqid="{evqid}" />')
        for _ in range(100):
            task = c.query(query)[0].find("subjobs/job/tasks/task")
            if len(task.findall("output")) == 2 and task.get("status") == "TERMINATED":
                break
            time.sleep(0.02)
        assert len(task.findall("output")) == 2  # it ran again (and failed again)
        c.query(f'<instance action="skiptask" id="{iid}" evqid="{evqid}" />')
        doc = wait_terminated(c, iid, timeout=10)
    assert doc.find("subjobs/job/tasks/task").get("status") == "SKIPPED"
    assert _next_stdout(doc).strip() == "next ran"
    assert doc.get("errors") == "0"


def test_retry_now_a_task_waiting_for_its_retry(daemon):
    with daemon.client() as c:
        create_workflow(c, "w", FAILING_THEN_NEXT.format(
            retry='retry_delay="100" retry_times="1"'))
        iid = _launch(c, "w")
        task = wait_retrying(c, iid)
        c.query(f'<instance action="retrytask" id="{iid}" evqid="{task.get("evqid")}" />')
        doc = wait_terminated(c, iid, timeout=10)
    task = doc.find("subjobs/job/tasks/task")
    assert len(task.findall("output")) == 2  # the first run and the retry, at once
    assert _next_stdout(doc) is None  # still failed: the next job never ran


def test_actions_refused_on_unknown_or_executing_tasks(daemon):
    with daemon.client() as c:
        create_workflow(c, "s", '<workflow><subjobs><job><tasks>'
                                '<task path="/bin/sleep" queue="default"><input>10</input>'
                                '</task></tasks></job></subjobs></workflow>')
        iid = _launch(c, "s")
        for _ in range(100):
            task = c.query(f'<instance action="query" id="{iid}" />').find(".//task")
            if task.get("pid"):
                break
            time.sleep(0.02)
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
