"""Workflow schedules firing in real time (workflow.md §7.3)."""

from __future__ import annotations

import time

from evqtest import create_workflow, one_task

SLEEP = ('<workflow><subjobs><job><tasks><task path="/bin/sleep" queue="default">'
         "<input>1.5</input></task></tasks></job></subjobs></workflow>")


def _rows(c, name: str) -> list:
    return list(c.query(f'<instances action="list" filter_workflow="{name}" limit="100" />'))


def test_every_second_schedule_fires_and_never_overlaps(daemon):
    with daemon.client() as c:
        quick = create_workflow(c, "quick", one_task("/bin/true"))
        slow = create_workflow(c, "slow", SLEEP)
        c.query('<queue action="edit" id="1" name="default" concurrency="4" scheduler="default" '
                'dynamic="no" />')
        for wid in (quick, slow):
            c.query(f'<workflow_schedule action="create" workflow_id="{wid}" node="localhost" '
                    'schedule=";;;;;" onfailure="CONTINUE" active="yes" />')
        status = c.query('<status action="query" type="scheduler" />')[0]
        assert {w.get("name") for w in status} == {"quick", "slow"}
        time.sleep(3.5)
        quick_rows = _rows(c, "quick")
        slow_rows = _rows(c, "slow")
        assert len(quick_rows) >= 3  # the long schedule does not hold the short one back
        assert all(r.get("schedule_id") for r in quick_rows)
        # never launched again while its previous instance runs
        running = c.query('<status action="query" type="workflows" />')
        assert sum(1 for w in running if w.get("name") == "slow") <= 1
        spans = sorted((r.get("start_time"), r.get("end_time") or "9") for r in slow_rows)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end


def test_suspend_on_failure(daemon):
    with daemon.client() as c:
        wid = create_workflow(c, "fails", one_task("/bin/false"))
        sid = c.query(f'<workflow_schedule action="create" workflow_id="{wid}" node="localhost" '
                      'schedule=";;;;;" onfailure="SUSPEND" active="yes" />').get("schedule-id")
        for _ in range(60):
            s = c.query(f'<workflow_schedule action="get" id="{sid}" />')[0]
            if s.get("active") == "0":
                break
            time.sleep(0.1)
        assert s.get("active") == "0"
        time.sleep(1.5)
        assert len(_rows(c, "fails")) == 1
