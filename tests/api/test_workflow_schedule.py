"""``workflow_schedule`` and ``workflow_schedules``: golden 26, 27, 29, every action and error,
the definitions cache the scheduler arms from, rights, events, audit log, cluster reloads."""

from __future__ import annotations

import time

import pytest
from apitest import Api, Peer, b64, golden, reload_queries, text

WORKFLOW = ('<workflow><parameters><parameter name="a"/><parameter name="b"/></parameters>'
            '<subjobs><job><tasks><task path="/bin/true" queue="default"/></tasks></job>'
            '</subjobs></workflow>')
PARAMS = '<parameter name="a" value="1"/><parameter name="b" value="x &amp; y"/>'


def create(attrs: str = "", params: str = PARAMS, **overrides: str) -> str:
    base = {"workflow_id": "1", "node": "localhost", "schedule": "0;0;12",
            "onfailure": "CONTINUE", **overrides}
    attributes = " ".join(f'{k}="{v}"' for k, v in base.items() if v is not None)
    return f'<workflow_schedule action="create" {attributes} {attrs}>{params}</workflow_schedule>'


@pytest.fixture
async def wf(api: Api) -> Api:
    await api.ok(f'<workflow action="create" name="wf" group="grp" content="{b64(WORKFLOW)}"/>')
    api.events.clear()
    return api


async def test_golden_transcripts(any_api: Api) -> None:
    """05 creates the workflow; 26 create, 27 list, 29 invalid schedule."""
    for prefix in ("05", "26", "27", "29"):
        request, expected = golden(prefix)
        assert text(await any_api(request)) == expected, prefix


async def test_get(wf: Api) -> None:
    answer = await wf.ok(create('comment="c"'))
    assert answer.get("schedule-id") == "1"
    assert text(await wf.ok('<workflow_schedule action="get" id="1"/>')) == (
        '<response node="localhost" status="OK"><workflow_schedule active="1" comment="c" '
        'host="" node="localhost" onfailure="CONTINUE" schedule="0;0;12" user="" '
        'workflow_id="1"><parameter name="a" value="1"/><parameter name="b" value="x &amp; y"/>'
        '</workflow_schedule></response>')
    await wf.ok(create('user="u" host="h" active="no"', node="any", onfailure="SUSPEND"))
    got = (await wf.ok('<workflow_schedule action="get" id="2"/>'))[0]
    assert dict(got.attrib) == {"workflow_id": "1", "schedule": "0;0;12", "onfailure": "SUSPEND",
                                "user": "u", "host": "h", "active": "0", "comment": "",
                                "node": "any"}
    assert await wf.ko('<workflow_schedule action="get" id="9"/>') == (
        "UNKNOWN_OBJECT", "Unknown WorkflowSchedule ID : 9")
    assert await wf.ko('<workflow_schedule action="get"/>') == (
        "MISSING_PARAMETER", "Missing 'id' attribute")


async def test_cache_for_the_scheduler(wf: Api) -> None:
    await wf.ok(create('user="u" host="h"', node="all", schedule="0,30"))
    await wf.ok(create(node="other"))
    await wf.ok(create('active="no"'))
    s1, s2, s3 = wf.server.workflow_schedules.all()
    assert (s1.id, s1.node, s1.workflow_id, s1.schedule, s1.onfailure, s1.user, s1.host,
            s1.active, s1.comment, s1.parameters) == (
        1, "all", 1, "0,30", "CONTINUE", "u", "h", True, "", [("a", "1"), ("b", "x & y")])
    assert (s2.user, s2.host) == (None, None)
    assert [s.runnable_on("localhost") for s in (s1, s2, s3)] == [True, False, False]
    assert s2.runnable_on("other")
    now = time.time()
    at = s1.next_time(now)
    assert now < at <= now + 30 and time.localtime(at).tm_sec in (0, 30)
    assert wf.server.workflow_schedules.get(2) is s2
    assert wf.server.workflow_schedules.get(9) is None


async def test_invalid_stored_schedule_is_listed_but_not_armed(wf: Api) -> None:
    await wf.ok(create())
    await wf.server.storage.execute(
        "UPDATE t_workflow_schedule SET workflow_schedule = 'bogus'")
    await wf.server.reload("scheduler")
    (s,) = wf.server.workflow_schedules.all()
    assert s.parsed is None
    assert not s.runnable_on("localhost")
    with pytest.raises(ValueError):
        s.next_time(time.time())
    listed = await wf.ok('<workflow_schedules action="list"/>')
    assert listed[0].get("schedule") == "bogus"


@pytest.mark.parametrize(("query", "error"), [
    (create(workflow_id="9"), ("UNKNOWN_OBJECT", "Unknown Workflow ID : 9")),
    (create(schedule=""), ("INVALID_SCHEDULE", "Empty schedule")),
    (create(schedule="0;61;;;;"), ("INVALID_SCHEDULE", "Out of range schedule offset")),
    (create(schedule="*"), ("INVALID_SCHEDULE", "Non numeric data in schedule offset")),
    (create(schedule="1;2;3;4;5;6;7"), ("INVALID_SCHEDULE", "Garbage at end of schedule")),
    (create(schedule="0;0;0;30;3"),
     ("INVALID_SCHEDULE", "Schedule constraints are impossible to satisfy")),
    (create(onfailure="STOP"),
     ("INVALID_PARAMETER", "onfailure must be 'CONTINUE' or 'SUSPEND'")),
    (create(node=""), ("INVALID_PARAMETER", "Invalid node name")),
    (create(node="n" * 33), ("INVALID_PARAMETER", "Invalid node name")),
    (create(params='<parameter name="a" value="1"/>'),
     ("INVALID_WORKFLOW_PARAMETERS", "Invalid number of parameters. Workflow expects 2, but 1 "
                                     "are given.")),
    (create(params=""),
     ("INVALID_WORKFLOW_PARAMETERS", "Invalid number of parameters. Workflow expects 2, but 0 "
                                     "are given.")),
    (create(params='<parameter name="a" value="1"/><parameter name="c" value="2"/>'),
     ("INVALID_WORKFLOW_PARAMETERS", "Unknown parameter : c")),
    # duplicates: the first wins, the others are ignored, so only one parameter is given
    (create(params='<parameter name="a" value="1"/><parameter name="a" value="2"/>'),
     ("INVALID_WORKFLOW_PARAMETERS", "Invalid number of parameters. Workflow expects 2, but 1 "
                                     "are given.")),
    (create(workflow_id=None), ("MISSING_PARAMETER", "Missing 'workflow_id' attribute")),
    (create(node=None), ("MISSING_PARAMETER", "Missing 'node' attribute")),
    (create(schedule=None), ("MISSING_PARAMETER", "Missing 'schedule' attribute")),
    (create(onfailure=None), ("MISSING_PARAMETER", "Missing 'onfailure' attribute")),
    (create('active="true"'), ("INVALID_BOOLEAN", "Attribute 'active' has invalid boolean value")),
    (create(workflow_id="x"),
     ("INVALID_INTEGER", "Attribute 'workflow_id' has invalid integer value")),
])
async def test_create_errors(wf: Api, query: str, error: tuple[str, str]) -> None:
    assert await wf.ko(query) == error
    assert wf.server.workflow_schedules.all() == []
    assert wf.events == []


async def test_create_accepts(wf: Api) -> None:
    for node in ("all", "any", "n" * 32):
        await wf.ok(create(node=node))
    await wf.ok(create(schedule="*/5 * * * *"))  # cron extension
    await wf.ok(create(params='<parameter name="b"/><parameter name="a" value="1"/>'
                              '<parameter name="a" value="ignored"/>'))
    assert wf.server.workflow_schedules.get(5).parameters == [("b", ""), ("a", "1")]


async def test_edit(wf: Api) -> None:
    await wf.ok(create('comment="c" user="u"'))
    edit = create('id="1" comment="new" host="h"', params='<parameter name="b" value="2"/>'
                  '<parameter name="a" value="3"/>', schedule="5;5;5", node="all",
                  onfailure="SUSPEND").replace('action="create"', 'action="edit"')
    await wf.ok(edit)
    s = wf.server.workflow_schedules.get(1)
    assert s is not None
    assert (s.schedule, s.node, s.onfailure, s.user, s.host, s.comment, s.parameters) == (
        "5;5;5", "all", "SUSPEND", None, "h", "new", [("b", "2"), ("a", "3")])
    await wf.ok(edit)  # unchanged values
    assert await wf.ko(edit.replace(' id="1"', ' id="9"')) == (
        "UNKNOWN_WORKFLOW_SCHEDULE", "Workflow schedule not found")
    assert await wf.ko(edit.replace('schedule="5;5;5"', 'schedule="x"')) == (
        "INVALID_SCHEDULE", "Non numeric data in schedule offset")
    assert await wf.ko(edit.replace(' id="1"', "")) == (
        "MISSING_PARAMETER", "Missing 'id' attribute")
    assert wf.server.workflow_schedules.get(1).schedule == "5;5;5"
    rows = await wf.server.storage.query(
        "SELECT workflow_schedule_parameter FROM t_workflow_schedule_parameters")
    assert sorted(rows) == [("a",), ("b",)]


async def test_delete(wf: Api) -> None:
    await wf.ok(create())
    await wf.ok(create())
    await wf.ok('<workflow_schedule action="delete" id="1"/>')
    assert [s.id for s in wf.server.workflow_schedules.all()] == [2]
    assert await wf.server.storage.query(
        "SELECT DISTINCT workflow_schedule_id FROM t_workflow_schedule_parameters") == [(2,)]
    assert await wf.ko('<workflow_schedule action="delete" id="1"/>') == (
        "UNKNOWN_WORKFLOW_SCHEDULE", "Workflow schedule not found")


async def test_lock_unlock(wf: Api) -> None:
    await wf.ok(create())
    await wf.ok('<workflow_schedule action="lock" id="1"/>')
    assert not wf.server.workflow_schedules.get(1).active
    await wf.ok('<workflow_schedule action="lock" id="1"/>')  # already locked
    listed = await wf.ok('<workflow_schedules action="list"/>')
    assert listed[0].get("active") == "0"
    await wf.ok('<workflow_schedule action="unlock" id="1"/>')
    assert wf.server.workflow_schedules.get(1).active
    for action in ("lock", "unlock"):
        assert await wf.ko(f'<workflow_schedule action="{action}" id="9"/>') == (
            "UNKNOWN_WORKFLOW_SCHEDULE", "Workflow schedule not found")


async def test_set_active_for_suspend(wf: Api) -> None:
    """``onfailure=SUSPEND`` (scheduler side): the cache follows the database at once."""
    await wf.ok(create())
    schedules = wf.server.workflow_schedules
    assert await schedules.set_active(1, False)
    assert not schedules.get(1).active
    await schedules.reload()
    assert not schedules.get(1).active
    assert not await schedules.set_active(9, False)


async def test_list(wf: Api) -> None:
    await wf.ok(create('user="u" host="h" comment="c"', node="any"))
    await wf.ok(create(node="elsewhere"))
    answer = await wf.ok('<workflow_schedules action="list"/>')
    assert text(answer) == (
        '<response node="localhost" status="OK">'
        '<workflow_schedule active="1" comment="c" host="h" id="1" node="any" '
        'onfailure="CONTINUE" schedule="0;0;12" user="u" workflow_group="grp" workflow_id="1" '
        'workflow_name="wf"/>'
        '<workflow_schedule active="1" comment="" id="2" node="elsewhere" onfailure="CONTINUE" '
        'schedule="0;0;12" workflow_group="grp" workflow_id="1" workflow_name="wf"/></response>')
    answer = await wf.ok('<workflow_schedules action="list" display_parameters="1"/>')
    assert [len(s) for s in answer] == [2, 2]
    assert await wf.ko('<workflow_schedules action="get"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_actions(wf: Api) -> None:
    assert await wf.ko('<workflow_schedule action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await wf.ko("<workflow_schedule/>") == (
        "MISSING_PARAMETER", "Missing 'action' attribute")


async def test_events_and_audit_log(wf: Api) -> None:
    await wf.ok(create())
    await wf.ok(create().replace('action="create"', 'action="edit" id="1"'))
    await wf.ok('<workflow_schedule action="lock" id="1"/>')
    await wf.ok('<workflow_schedule action="unlock" id="1"/>')
    await wf.ok('<workflow_schedule action="delete" id="1"/>')
    await wf.ko('<workflow_schedule action="delete" id="1"/>')
    assert [e for e in wf.events if e[0] != "LOG_API"] == [
        ("WORKFLOWSCHEDULE_CREATED", 1)] + [("WORKFLOWSCHEDULE_MODIFIED", 1)] * 3 + [
        ("WORKFLOWSCHEDULE_REMOVED", 1)]
    admin = wf.user().id
    assert (await wf.log_api())[1:] == [  # the first row is the workflow's creation
        (admin, 1, "WorkflowSchedule", "workflow_schedule", a)
        for a in ("create", "edit", "lock", "unlock", "delete")]


async def test_user_rights(wf: Api) -> None:
    """Everything is ADMIN, even with every right on the workflow."""
    await wf.ok(create())
    bob = await wf.add_user("bob", {1: "read,edit,exec,kill"})
    for query in ('<workflow_schedule action="get" id="1"/>', create(),
                  create().replace('action="create"', 'action="edit" id="1"'),
                  '<workflow_schedule action="delete" id="1"/>',
                  '<workflow_schedule action="lock" id="1"/>',
                  '<workflow_schedule action="unlock" id="1"/>',
                  '<workflow_schedule action="nope"/>',
                  '<workflow_schedules action="list"/>'):
        assert await wf.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights"), query


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok(f'<workflow action="create" name="wf" content="{b64(WORKFLOW)}"/>')
    await api.ok(create())
    await api.ok('<workflow_schedule action="lock" id="1"/>')
    await peer.wait_for(3)
    assert sorted(reload_queries(peer)) == ["scheduler", "scheduler", "workflows"]
