"""``statistics`` on a live daemon (ops.md §10, protocol.md §3.3): the counters follow real
connections, queries, instances and tasks, with the attribute names monitoring reads."""

from __future__ import annotations

import threading
import time

import pytest
from evqtest import create_workflow, one_task, wait_terminated

from evqueue.client import Client, EvqError

NAMES = ["accepted_api_connections", "accepted_ws_connections", "current_api_connections",
         "current_ws_connections", "api_queries", "ws_queries", "ws_events",
         "ws_subscriptions", "api_exceptions", "workflow_queries", "workflow_status_queries",
         "workflow_cancel_queries", "statistics_queries", "workflow_exceptions",
         "workflow_instance_launched", "workflow_instance_executing",
         "workflow_instance_errors", "waiting_threads"]
GAUGES = {"current_api_connections", "current_ws_connections", "ws_subscriptions",
          "workflow_instance_executing", "waiting_threads"}


def stats(c: Client) -> dict[str, int]:
    elem = c.query('<statistics action="query" type="global" />')[0]
    assert sorted(elem.attrib) == sorted(NAMES)  # the names monitoring (Zabbix) reads
    return {k: int(v) for k, v in elem.attrib.items()}


def until(c: Client, name: str, value: int) -> dict[str, int]:
    for _ in range(100):
        s = stats(c)
        if s[name] == value:
            return s
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed {s[name]}, expected {value}")


def launch(c: Client, name: str) -> int:
    return int(c.query(f'<instance action="launch" name="{name}" />')
               .get("workflow-instance-id"))


def test_counters_follow_connections_queries_and_instances(daemon):
    with daemon.client() as c:
        create_workflow(c, "ko", one_task("/bin/false"))
        create_workflow(c, "sleepy", one_task("/bin/sleep", "2"))
        s = stats(c)
        assert s["accepted_api_connections"] == 1 and s["current_api_connections"] == 1
        assert stats(c)["api_queries"] == s["api_queries"] + 1  # every query counts
        with daemon.client() as other:
            other.ping()
            s = stats(c)
            assert s["accepted_api_connections"] == 2 and s["current_api_connections"] == 2
        until(c, "current_api_connections", 1)
        with Client(f"ws://127.0.0.1:{daemon.ws_port}", "admin", "admin") as ws:
            ws.ping()
            s = stats(c)
            assert s["accepted_ws_connections"] == 1 and s["current_ws_connections"] == 1
            assert s["ws_queries"] == 1
        until(c, "current_ws_connections", 0)

        before = stats(c)
        wait_terminated(c, launch(c, "ko"))
        with pytest.raises(EvqError):
            c.query('<instance action="launch" name="ko"><parameter name="unexpected" '
                    'value="1" /></instance>')
        sleepy = launch(c, "sleepy")
        s = stats(c)
        assert s["workflow_instance_executing"] == 1

        def wait() -> None:
            with daemon.client() as waiting:
                waiting.query(f'<instance action="wait" id="{sleepy}" />')

        waiter = threading.Thread(target=wait)
        waiter.start()
        until(c, "waiting_threads", 1)
        c.query(f'<instance action="cancel" id="{sleepy}" />')
        waiter.join(10)
        until(c, "waiting_threads", 0)
        wait_terminated(c, sleepy)
        after = stats(c)
    delta = {k: after[k] - before[k] for k in NAMES}
    assert delta["workflow_queries"] == 3  # launches, the refused one included
    assert delta["workflow_exceptions"] == 1
    assert delta["workflow_instance_launched"] == 2
    assert delta["workflow_instance_errors"] == 1  # /bin/false
    assert delta["workflow_cancel_queries"] == 1
    assert delta["workflow_status_queries"] >= 2  # wait_terminated polls
    assert after["workflow_instance_executing"] == 0


def test_queue_statistics_show_running_and_waiting_tasks(daemon):
    with daemon.client() as c:
        c.query('<queue action="create" name="narrow" concurrency="1" scheduler="fifo" '
                'dynamic="no" />')
        create_workflow(c, "sleepy", one_task("/bin/sleep", "1", queue="narrow"))
        ids = [launch(c, "sleepy") for _ in range(3)]
        queues = c.query('<statistics action="query" type="queue" />')[0]
        assert [q.get("name") for q in queues] == sorted(q.get("name") for q in queues)
        narrow = queues.find("queue[@name='narrow']")
        assert dict(narrow.attrib) == {"name": "narrow", "concurrency": "1", "size": "2",
                                       "running_tasks": "1", "scheduler": "fifo"}
        for iid in ids:
            wait_terminated(c, iid)
        narrow = c.query('<statistics action="query" type="queue" />')[0].find(
            "queue[@name='narrow']")
        assert (narrow.get("size"), narrow.get("running_tasks")) == ("0", "0")


def test_reset_zeroes_counters_but_keeps_gauges(daemon):
    with daemon.client() as c, daemon.client() as other:
        create_workflow(c, "sleepy", one_task("/bin/sleep", "2"))
        other.ping()
        iid = launch(c, "sleepy")
        c.query('<user action="create" name="bob" password="pw" profile="USER" />')
        with daemon.client("bob", "pw") as bob:
            with pytest.raises(EvqError) as e:
                bob.query('<statistics action="reset" type="global" />')
            assert e.value.code == "INSUFFICIENT_RIGHTS"
            c.query('<statistics action="reset" type="global" />')
            s = stats(c)
        assert s["current_api_connections"] == 3 and s["workflow_instance_executing"] == 1
        zeroed = {k: v for k, v in s.items() if k not in GAUGES}
        # only the statistics query that read them has been counted since the reset
        assert zeroed == {**dict.fromkeys(zeroed, 0), "api_queries": 1,
                          "statistics_queries": 1}
        with pytest.raises(EvqError) as e:
            c.query('<statistics action="reset" type="queue" />')
        assert e.value.code == "UNKNOWN_TYPE"
        c.query(f'<instance action="cancel" id="{iid}" />')
