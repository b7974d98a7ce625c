"""Workflow schedules firing in real time (workflow.md §7.3)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sqlite3
import time
from datetime import datetime, timedelta

from evqtest import create_workflow, one_task, wait_terminated

from evqueue.config import Config
from evqueue.engine import scheduler as scheduler_module
from evqueue.server import Server

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


def _scheduler(c) -> dict[str, dict[str, str]]:
    """``status type="scheduler"`` rows by schedule id."""
    status = c.query('<status action="query" type="scheduler" />')[0]
    return {w.get("workflow_schedule_id"): dict(w.attrib) for w in status}


def _next(hour: int, minute: int, month: int | None = None, shift: float = 0) -> str:
    """The next local wall-clock time hh:mm:00 (on the 1st of ``month``, if given), after
    now + ``shift`` seconds."""
    t = datetime.fromtimestamp(int(time.time() + shift))
    if month is None:
        at = t.replace(hour=hour, minute=minute, second=0)
        at += timedelta(days=1) if at <= t else timedelta()
    else:
        at = t.replace(month=month, day=1, hour=hour, minute=minute, second=0)
        at = at.replace(year=at.year + 1) if at <= t else at
    return at.strftime("%Y-%m-%d %H:%M:%S")


def test_status_follows_every_change_and_sighup(daemon):
    with daemon.client() as c:
        wid = create_workflow(c, "w", one_task("/bin/true"))
        sid = c.query(f'<workflow_schedule action="create" workflow_id="{wid}" node="localhost" '
                      'schedule="0;0;0;0;0;" onfailure="CONTINUE" active="yes" '
                      'comment="new year" />').get("schedule-id")
        assert _scheduler(c)[sid] == {"workflow_schedule_id": sid, "name": "w",
                                      "scheduled_at": _next(0, 0, month=1)}

        def edit(schedule: str, active: str = "yes", node: str = "localhost") -> None:
            c.query(f'<workflow_schedule action="edit" id="{sid}" workflow_id="{wid}" '
                    f'node="{node}" schedule="{schedule}" onfailure="CONTINUE" '
                    f'active="{active}" />')

        edit("0;30;2")
        assert _scheduler(c)[sid]["scheduled_at"] == _next(2, 30)
        edit("0 3 * * *")  # cron syntax, our extension
        assert _scheduler(c)[sid]["scheduled_at"] == _next(3, 0)
        c.query(f'<workflow_schedule action="lock" id="{sid}" />')
        assert sid not in _scheduler(c)
        c.query(f'<workflow_schedule action="unlock" id="{sid}" />')
        assert _scheduler(c)[sid]["scheduled_at"] == _next(3, 0)
        edit("0 3 * * *", node="othernode")  # another node's schedule is not armed here
        assert sid not in _scheduler(c)
        edit("0 3 * * *", active="no")
        assert sid not in _scheduler(c)
        c.query(f'<workflow_schedule action="delete" id="{sid}" />')
        assert _scheduler(c) == {}
        # a schedule written straight into the database is armed on SIGHUP
        db = sqlite3.connect(os.path.join(daemon.root, "evqueue.db"))
        with db:
            db.execute("INSERT INTO t_workflow_schedule (node_name, workflow_id, "
                       "workflow_schedule, workflow_schedule_onfailure, "
                       "workflow_schedule_active, workflow_schedule_comment) "
                       "VALUES ('all', ?, '0;15;4', 'CONTINUE', 1, '')", (wid,))
        db.close()
        daemon.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            rows = list(_scheduler(c).values())
            if rows:
                break
            time.sleep(0.05)
        assert [r["scheduled_at"] for r in rows] == [_next(4, 15)]


def test_failed_launch_is_logged_and_rearmed(daemon):
    with daemon.client() as c:
        wid = create_workflow(c, "w", one_task("/bin/true"))
        sid = c.query(f'<workflow_schedule action="create" workflow_id="{wid}" node="localhost" '
                      'schedule=";;;;;" onfailure="CONTINUE" active="yes" />').get("schedule-id")
        content = base64.b64encode(
            b'<workflow><parameters><parameter name="p"/></parameters><subjobs><job><tasks>'
            b'<task path="/bin/true" queue="default"/></tasks></job></subjobs></workflow>'
        ).decode()
        c.query(f'<workflow action="edit" id="{wid}" name="w" content="{content}" />')
        before = int(_stats(c)["workflow_exceptions"])
        time.sleep(2.2)
        # every occurrence tried, failed and was re-armed: the schedule is not stuck running
        assert int(_stats(c)["workflow_exceptions"]) >= before + 2
        assert _scheduler(c)[sid]["scheduled_at"] != "running"
        assert "could not launch its instance" in daemon.log()


def _stats(c) -> dict[str, str]:
    return dict(c.query('<statistics action="query" type="global" />')[0].attrib)


def _epoch(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_restart_neither_doubles_nor_catches_up(make_daemon):
    d = make_daemon()
    with d.client() as c:
        quick = create_workflow(c, "quick", one_task("/bin/true"))
        slow = create_workflow(c, "slow", one_task("/bin/sleep", "4"))
        c.query('<queue action="edit" id="1" name="default" concurrency="4" scheduler="default" '
                'dynamic="no" />')
        ids = {}
        for name, wid in (("quick", quick), ("slow", slow)):
            ids[name] = c.query(f'<workflow_schedule action="create" workflow_id="{wid}" '
                                'node="localhost" schedule=";;;;;" onfailure="CONTINUE" '
                                'active="yes" />').get("schedule-id")
        for _ in range(60):
            slow_row = _scheduler(c).get(ids["slow"], {})
            if slow_row.get("workflow_instance_id", "0") != "0":
                break
            time.sleep(0.05)
        resumed = slow_row["workflow_instance_id"]
    d.stop()
    down = time.time()
    time.sleep(1.6)  # at least one occurrence of each schedule falls in the downtime
    up = time.time()
    d.start()
    with d.client() as c:
        # the slow instance was resumed: its schedule is still running, not launched again
        assert _scheduler(c)[ids["slow"]] == {
            "workflow_schedule_id": ids["slow"], "name": "slow",
            "workflow_instance_id": resumed, "scheduled_at": "running"}
        wait_terminated(c, int(resumed))
        time.sleep(1.5)
        quick_starts = [_epoch(r.get("start_time")) for r in _rows(c, "quick")]
        slow_rows = _rows(c, "slow")
    assert len(quick_starts) == len(set(quick_starts))  # never twice in one second
    # nothing run for the seconds of the downtime, no catch-up burst after it
    assert not [s for s in quick_starts if int(down) + 1 <= s < int(up)]
    assert len(slow_rows) == 2  # the resumed one, then the next once it ended
    spans = sorted((r.get("start_time"), r.get("end_time") or "9") for r in slow_rows)
    assert spans[1][0] >= spans[0][1]


class _SteppedClock:
    """The ``time`` module as the scheduler sees it, with a wall clock that can be stepped."""

    def __init__(self) -> None:
        self.step = 0.0

    def time(self) -> float:
        return time.time() + self.step


async def test_timers_follow_a_wall_clock_step(tmp_path, monkeypatch):
    """Timers run on the loop's monotonic clock; when the wall clock is stepped, every
    schedule is re-armed for the new time (and only then)."""
    monkeypatch.setattr(scheduler_module, "CLOCK_CHECK", 0.05)
    clock = _SteppedClock()
    monkeypatch.setattr(scheduler_module, "time", clock)
    server = Server(Config.from_mapping({
        "core.storage": "sqlite", "sqlite.path": str(tmp_path / "s.db"),
        "logger.db.enable": "no", "logger.syslog.enable": "no"}))
    await server.storage.open()
    try:
        await server.storage.execute(
            "INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, "
            "workflow_comment) VALUES ('w', '<workflow><subjobs/></workflow>', '', '')")
        await server.storage.execute(
            "INSERT INTO t_workflow_schedule (node_name, workflow_id, workflow_schedule, "
            "workflow_schedule_onfailure, workflow_schedule_active, workflow_schedule_comment) "
            "VALUES ('localhost', 1, '0;0;0;0;0;', 'CONTINUE', 1, '')")
        await server.workflows.reload()
        await server.workflow_schedules.reload()
        server.scheduler.start()
        first = server.scheduler.status()
        handle = server.scheduler._timers[1][0]
        await asyncio.sleep(0.3)
        assert server.scheduler._timers[1][0] is handle  # clocks in step: nothing re-armed
        assert server.scheduler.status() == first == [
            {"workflow_schedule_id": "1", "name": "w", "scheduled_at": _next(0, 0, month=1)}]
        assert server.scheduler.running == {}
        clock.step = -400 * 86400  # set back: the previous 1st of January is due first
        await asyncio.sleep(0.3)
        assert server.scheduler.status()[0]["scheduled_at"] == _next(0, 0, 1, clock.step)
        assert server.scheduler.running == {}
        server.scheduler.stop()
    finally:
        await server.storage.close()
