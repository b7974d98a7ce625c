"""Savepoint levels (workflow.md §4.13.1, ops.md §1.5, §3.4): what reaches the database at
launch, during execution, at the end and at a clean shutdown, and how each level resumes.
The SQLite file is read directly, next to the API."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest
from evqtest import create_workflow, wait_terminated
from lxml import etree

from evqueue.client import Client, EvqError

WORKFLOW = (
    '<workflow><parameters><parameter name="p"/></parameters>'
    '<custom-attributes><custom-attribute name="ca" '
    'select="/workflow/parameters/parameter[@name=\'p\']"/></custom-attributes>'
    '<automatic-tags><automatic-tag name="auto" condition="1 = 1"/></automatic-tags>'
    '<subjobs><job><tasks><task path="/bin/sh" queue="default"><input>-c</input>'
    '<input>sleep $1; echo first</input><input>x</input>'
    '<input><value select="evqGetWorkflowParameter(\'p\')"/></input></task></tasks>'
    '<subjobs><job><tasks><task path="/bin/sh" queue="default"><input>-c</input>'
    '<input>sleep $1; echo second</input><input>x</input>'
    '<input><value select="evqGetWorkflowParameter(\'p\')"/></input></task></tasks>'
    '</job></subjobs></job></subjobs></workflow>')


def _db(d, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{d.root}/evqueue.db?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _rows(d) -> dict[int, tuple]:
    """id → (status, node, end, savepoint document or None)."""
    out = {}
    for iid, status, node, end, xml in _db(
            d, "SELECT workflow_instance_id, workflow_instance_status, node_name, "
               "workflow_instance_end, workflow_instance_savepoint FROM t_workflow_instance"):
        out[iid] = (status, node, end, etree.fromstring(xml.encode()) if xml else None)
    return out


def _count(d, table: str) -> int:
    return _db(d, f"SELECT COUNT(*) FROM {table}")[0][0]


def _daemon(make_daemon, level: int):
    d = make_daemon(**{"workflowinstance.savepoint.level": str(level)})
    with d.client() as c:
        create_workflow(c, "two", WORKFLOW)
    return d


def _launch(c: Client, seconds: str) -> int:
    return int(c.query(f'<instance action="launch" name="two"><parameter name="p" '
                       f'value="{seconds}"/></instance>').get("workflow-instance-id"))


def _wait_running(c: Client, iid: int) -> None:
    for _ in range(200):
        doc = c.query(f'<instance action="query" id="{iid}" />')[0]
        if doc.find(".//task").get("status") == "EXECUTING":
            return
        time.sleep(0.02)
    raise AssertionError(f"instance {iid} does not run")


def _finish(c: Client, iid: int) -> None:
    """Wait for an instance this node runs (``wait`` also works where nothing is stored)."""
    c.query(f'<instance action="wait" id="{iid}" timeout="20" />')


def _suspend_and_restart(d) -> None:
    assert d.stop(signal.SIGTERM) == 0
    assert "Suspended during shutdown" in d.log()
    d.start()


def _check_resumed_row(row: tuple) -> None:
    """The shutdown savepoint: full document, running task, this node."""
    status, node, end, doc = row
    assert (status, node, end) == ("EXECUTING", "localhost", None)
    assert doc.get("status") == "EXECUTING"
    assert doc.find(".//task").get("status") == "EXECUTING"
    assert doc.find(".//task").get("tid")


def test_level_0_keeps_nothing_but_running_instances_at_shutdown(make_daemon):
    d = _daemon(make_daemon, 0)
    with d.client() as c:
        first = _launch(c, "0")
        _finish(c, first)
        assert _rows(d) == {}
        with pytest.raises(EvqError) as e:
            c.query(f'<instance action="query" id="{first}" />')
        assert e.value.code == "UNKNOWN_INSTANCE"
        assert c.query('<instances action="list" />').get("rows") == "0"
        running = _launch(c, "1")
        assert running == first + 1  # the in-process sequence (ops.md §3.4)
        _wait_running(c, running)
        assert _rows(d) == {}
    _suspend_and_restart(d)
    # the row written at shutdown was read back, then deleted (ops.md §1.5)
    assert _rows(d) == {}
    with d.client() as c:
        _finish(c, running)
        assert _rows(d) == {}
        assert _launch(c, "0") > running  # ids are not handed out twice
    assert _count(d, "t_workflow_instance_parameters") == 0


def test_level_0_shutdown_row(make_daemon):
    d = _daemon(make_daemon, 0)
    with d.client() as c:
        running = _launch(c, "2")
        _wait_running(c, running)
    assert d.stop(signal.SIGTERM) == 0
    rows = _rows(d)
    assert list(rows) == [running]
    _check_resumed_row(rows[running])


def test_level_1_writes_the_end_and_the_shutdown(make_daemon):
    d = _daemon(make_daemon, 1)
    with d.client() as c:
        first = _launch(c, "0.3")
        _wait_running(c, first)
        assert _rows(d) == {}
        assert c.query('<instances action="list" />').get("rows") == "0"
        _finish(c, first)
        for _ in range(50):
            if _rows(d):
                break
            time.sleep(0.02)
        status, node, end, doc = _rows(d)[first]
        assert (status, node) == ("TERMINATED", "localhost")
        assert end and doc.get("end_time") == end and doc.get("errors") == "0"
        assert len(doc.findall(".//output")) == 2
        assert c.query('<instances action="list" />').get("rows") == "1"
        # custom attributes, tags and parameters need level 2 (§4.15, ops.md §2.5)
        assert len(c.query('<instances action="list" customattribute_ca="0.3" />')) == 0
        running = _launch(c, "1")
        _wait_running(c, running)
    assert d.stop(signal.SIGTERM) == 0
    _check_resumed_row(_rows(d)[running])
    d.start()
    assert list(_rows(d)) == [first]  # read back and deleted
    with d.client() as c:
        _finish(c, running)
        for _ in range(50):
            if running in _rows(d):
                break
            time.sleep(0.02)
        status, _, end, doc = _rows(d)[running]
        assert status == "TERMINATED" and end
        assert [o.text for o in doc.iter("output")] == ["first\n", "second\n"]
    for table in ("t_workflow_instance_parameters", "t_workflow_instance_filters",
                  "t_workflow_instance_tag"):
        assert _count(d, table) == 0


@pytest.mark.parametrize("level", [2, 3])
def test_levels_2_3_write_at_launch_behind_execution_and_at_the_end(make_daemon, level):
    """Levels 2 and 3 store the launch document at once and the running document behind
    execution (our improvement over the original's empty savepoint at level 2), so every
    step is on disk shortly after it happens; then the final row, attributes and tags."""
    d = _daemon(make_daemon, level)
    with d.client() as c:
        iid = _launch(c, "0.4")
        status, node, end, doc = _rows(d)[iid]  # committed before the launch answer
        assert (status, node, end) == ("EXECUTING", "localhost", None)
        assert doc.find("parameters/parameter").text == "0.4"
        assert _db(d, "SELECT workflow_instance_parameter, workflow_instance_parameter_value "
                      "FROM t_workflow_instance_parameters") == [("p", "0.4")]
        seen = []
        while True:
            status, _, _, doc = _rows(d)[iid]
            if status == "TERMINATED":
                break
            steps = tuple(t.get("status") for t in doc.iter("task"))
            if not seen or seen[-1] != steps:
                seen.append(steps)
            time.sleep(0.02)
        assert ("EXECUTING", None) in seen and ("TERMINATED", "EXECUTING") in seen, seen
        assert doc.get("errors") == "0" and doc.get("end_time")
        assert len(c.query('<instances action="list" customattribute_ca="0.4" />')) == 1
        tags = c.query(f'<instances action="list" filter_id="{iid}" />')[0].find("tags")
        assert [t.get("label") for t in tags] == ["auto"]
        # a debugresume clone has its own row from the start, with the parameters
        clone = int(c.query(f'<instance action="debugresume" id="{iid}" />')
                    .get("workflow-instance-id"))
        assert _rows(d)[clone][3].find("parameters/parameter").text == "0.4"
        wait_terminated(c, clone)
        rows = c.query('<instances action="list" parameter_p="0.4" />')
        assert sorted((int(r.get("id")), r.get("schedule_id")) for r in rows) == [
            (iid, None), (clone, "0")]


def test_level_3_resumes_from_the_last_state_after_kill_9(make_daemon):
    d = _daemon(make_daemon, 3)
    with d.client() as c:
        iid = _launch(c, "1")
        _wait_running(c, iid)
        for _ in range(50):
            if _rows(d)[iid][3].find(".//task").get("status") == "EXECUTING":
                break
            time.sleep(0.02)
    d.stop(signal.SIGKILL)
    d.start()
    with d.client() as c:
        doc = wait_terminated(c, iid)
    assert [o.text for o in doc.iter("output")] == ["first\n", "second\n"]
    assert doc.get("errors") == "0"
