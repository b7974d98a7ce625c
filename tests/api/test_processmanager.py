"""``processmanager tail`` on a real daemon (protocol.md §3.14, errata 6): the end of a running
task's outputs, ADMIN only, the original's error texts."""

from __future__ import annotations

import time

import pytest
from evqtest import create_workflow, launch, wait_executing, wait_terminated
from lxml import etree

from evqueue.client import EvqError

# prints a line on stdout and stderr, then stays EXECUTING until killed
TALKER = ('<workflow><subjobs><job><tasks><task path="/bin/sh" queue="default">'
          '<input>-c</input><input>echo out-line; echo err-line &gt;&amp;2; exec sleep 30</input>'
          '</task></tasks></job></subjobs></workflow>')


def _tail(c, tid: str, kind: str) -> str:
    response = c.query(f'<processmanager action="tail" tid="{tid}" type="{kind}" />')
    return response.text or ""


def _talking_task(c) -> tuple[int, etree._Element]:
    """Launch TALKER; returns its instance id and its task once both lines are written."""
    create_workflow(c, "talk", TALKER)
    iid = launch(c, "talk")
    task = wait_executing(c, iid)
    deadline = time.monotonic() + 5
    while not _tail(c, task.get("tid"), "stderr") and time.monotonic() < deadline:
        time.sleep(0.02)
    return iid, task


def test_tail_of_a_running_task(daemon):
    with daemon.client() as c:
        iid, task = _talking_task(c)
        tid = task.get("tid")
        assert _tail(c, tid, "stdout") == "out-line\n"
        assert _tail(c, tid, "stderr") == "err-line\n"
        assert _tail(c, tid, "log") == ""  # never written to fd 3: empty, not an error
        with pytest.raises(EvqError) as e:
            _tail(c, tid, "bogus")
        assert str(e.value).startswith("Unknown log type : bogus")
        with pytest.raises(EvqError) as e:
            _tail(c, "999999", "stdout")
        assert str(e.value).startswith("Error opening log file")
        c.query('<user action="create" name="bob" password="pw" profile="USER" />')
        with daemon.client("bob", "pw") as bob, pytest.raises(EvqError) as e:
            _tail(bob, tid, "stdout")
        assert e.value.code == "INSUFFICIENT_RIGHTS"
        c.query(f'<instance action="killtask" id="{iid}" pid="{task.get("pid")}" />')
        wait_terminated(c, iid)


def test_tail_is_cut_to_the_configured_size(make_daemon):
    d = make_daemon(**{"processmanager.logs.tailsize": "4"})
    with d.client() as c:
        iid, task = _talking_task(c)
        assert _tail(c, task.get("tid"), "stdout") == "ine\n"
        c.query(f'<instance action="cancel" id="{iid}" />')
        c.query(f'<instance action="killtask" id="{iid}" pid="{task.get("pid")}" />')
