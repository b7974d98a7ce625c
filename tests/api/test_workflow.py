"""``workflow`` and ``workflows``: golden 05–07, 14, 44, 45, the create/edit validation sequence,
lookups by id and name, notification bindings, rights, events, audit log, cluster reloads."""

from __future__ import annotations

import base64

import pytest
from apitest import Api, Peer, b64, golden, reload_queries, text
from lxml import etree

SIMPLE = ('<workflow><subjobs><job><tasks><task path="/bin/true" queue="default"/></tasks>'
          '</job></subjobs></workflow>')
WITH_PARAMS = ('<workflow><parameters><parameter name="a"/><parameter name="b"/></parameters>'
               '<subjobs><job><tasks><task path="/bin/true" queue="default"/></tasks></job>'
               '</subjobs></workflow>')


def create(name: str, content: str = SIMPLE, extra: str = "") -> str:
    return f'<workflow action="create" name="{name}" content="{b64(content)}" {extra}/>'


async def add_notification(api: Api, subscribe_all: int = 0) -> int:
    storage = api.server.storage
    type_id = (await storage.execute(
        "INSERT INTO t_notification_type (notification_type_name, notification_type_description, "
        "notification_type_manifest) VALUES (%s, '', '')", (f"type{subscribe_all}",))).lastrowid
    return (await storage.execute(
        "INSERT INTO t_notification (notification_type_id, notification_name, "
        "notification_subscribe_all, notification_parameters) VALUES (%s, 'n', %s, '')",
        (type_id, subscribe_all))).lastrowid


async def test_golden_transcripts(any_api: Api) -> None:
    """05 create, 06 get (re-serialised definition), 07 list, 14 create, 44 and 45 errors."""
    for prefix in ("05", "06", "07", "14", "44", "45"):
        request, expected = golden(prefix)
        assert text(await any_api(request)) == expected, prefix


async def test_definition_is_stored_verbatim(api: Api) -> None:
    request, _ = golden("05")
    content = etree.fromstring(request).get("content")
    await api.ok(request)
    row = await api.server.storage.query_one("SELECT workflow_xml FROM t_workflow")
    assert row is not None
    assert row[0] == base64.b64decode(content).decode()


async def test_get_by_id_and_name(api: Api) -> None:
    await api.ok(create("wf1", extra='group="g" comment="c &amp; d"'))
    expected = ('<response node="localhost" status="OK"><workflow comment="c &amp; d" '
                f'group="g" id="1" name="wf1">{SIMPLE}</workflow></response>')
    assert text(await api.ok('<workflow action="get" id="1"/>')) == expected
    assert text(await api.ok('<workflow action="get" name="wf1"/>')) == expected
    assert text(await api.ok('<workflow action="get" id="0" name="wf1"/>')) == expected
    assert await api.ko('<workflow action="get" id="7"/>') == (
        "UNKNOWN_OBJECT", "Unknown Workflow ID : 7")
    assert await api.ko('<workflow action="get" id="-1"/>') == (
        "UNKNOWN_OBJECT", "Unknown Workflow ID : 4294967295")
    assert await api.ko('<workflow action="get" name="nope"/>') == (
        "UKNOWN_OBJECT", "Unknown Workflow name : nope")
    assert await api.ko('<workflow action="get"/>') == (
        "MISSING_PARAMETER", "Missing 'id' or 'name' attribute")
    assert await api.ko('<workflow action="get" name=""/>') == (
        "MISSING_PARAMETER", "Missing 'id' or 'name' attribute")


async def test_spoilt_stored_definition(api: Api) -> None:
    await api.ok(create("wf1"))
    await api.server.storage.execute("UPDATE t_workflow SET workflow_xml = '<workflow>'")
    await api.server.reload("workflows")
    assert await api.ko('<workflow action="get" id="1"/>') == (None, "Invalid XML document")
    assert len(await api.ok('<workflows action="list"/>')) == 1


async def test_create_defaults_and_cache(api: Api) -> None:
    answer = await api.ok(create("wf1"))
    assert answer.get("workflow-id") == "1"
    w = api.server.workflows.get_by_name("wf1")
    assert (w.id, w.group, w.comment, w.lastcommit, w.xml) == (1, "", "", "", SIMPLE)


@pytest.mark.parametrize(("query", "error"), [
    ('<workflow action="create" content="x"/>', ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<workflow action="create" name="wf"/>', ("MISSING_PARAMETER", "Missing 'content' attribute")),
    (create(""), ("INVALID_PARAMETER", "Workflow name cannot be empty")),
    (create("bad name"), ("INVALID_PARAMETER", "Invalid workflow name")),
    (create("a@b"), ("INVALID_PARAMETER", "Invalid workflow name")),
    (create("x" * 65), ("INVALID_PARAMETER", "Invalid workflow name")),
    ('<workflow action="create" name="wf" content="!!!"/>',
     ("INVALID_PARAMETER", "Invalid base64 sequence")),
    # the name is checked before the content
    ('<workflow action="create" name="bad name" content="!!!"/>',
     ("INVALID_PARAMETER", "Invalid workflow name")),
    (create("wf", '<workflow><subjobs><job><tasks><task queue="default"/></tasks></job>'
                  '</subjobs></workflow>'),
     (None, "Binary task must have a (non empty) 'path' attribute")),
])
async def test_create_errors(api: Api, query: str, error: tuple[str | None, str]) -> None:
    assert await api.ko(query) == error
    assert api.server.workflows.all() == []
    assert api.events == []


@pytest.mark.parametrize("content", ["hello", "", "<workflow>", "<a/><b/>"])
async def test_content_that_is_not_xml_is_refused(api: Api, content: str) -> None:
    """The original crashed (errata 1): ours answers KO without error-code."""
    code, error = await api.ko(create("wf", content))
    assert code is None
    assert error.endswith(tuple(f"on line {n}" for n in range(1, 3)))
    assert api.server.workflows.all() == []


async def test_non_utf8_definition(api: Api) -> None:
    content = ('<?xml version="1.0" encoding="ISO-8859-1"?>' + SIMPLE.replace(
        "<job>", '<job name="caf\xe9">')).encode("latin-1")
    await api.ok(f'<workflow action="create" name="wf" content="{b64(content)}"/>')
    answer = await api.ok('<workflow action="get" name="wf"/>')
    assert answer[0][0].find("subjobs/job").get("name") == "caf\xe9"


async def test_duplicate_name(any_api: Api) -> None:
    await any_api.ok(create("wf1"))
    assert await any_api.ko(create("wf1")) == (
        "WORKFLOW_ALREADY_EXISTS", "Workflow name already exists")
    assert [w.name for w in any_api.server.workflows.all()] == ["wf1"]


async def test_edit(any_api: Api) -> None:
    api = any_api
    await api.ok(create("wf1", extra='group="g" comment="c"'))
    await api.ok(create("wf2"))
    await api.ok(f'<workflow action="edit" id="1" name="renamed" content="{b64(WITH_PARAMS)}"/>')
    w = api.server.workflows.get(1)
    # full replacement: omitted group and comment become empty
    assert (w.name, w.xml, w.group, w.comment) == ("renamed", WITH_PARAMS, "", "")
    # by name, with identical values (MySQL matched rows)
    edit_same = f'<workflow action="edit" name="renamed" content="{b64(WITH_PARAMS)}"/>'
    await api.ok(edit_same.replace('content=', 'group="h" content='))
    await api.ok(edit_same.replace('content=', 'group="h" content='))
    assert api.server.workflows.get(1).group == "h"
    assert await api.ko(f'<workflow action="edit" id="9" name="x" content="{b64(SIMPLE)}"/>') == (
        "UNKNOWN_WORKFLOW", "Workflow not found")
    assert await api.ko(f'<workflow action="edit" id="2" name="renamed" '
                        f'content="{b64(SIMPLE)}"/>') == (
        "SQL_ERROR", "Duplicate entry 'renamed' for key 'workflow_name'")
    assert await api.ko(f'<workflow action="edit" id="2" name="wf2" content="{b64("x")}"/>') \
        == (None, "invalid document structure on line 1")
    assert await api.ko('<workflow action="edit" id="2" content="x"/>') == (
        "MISSING_PARAMETER", "Missing 'name' attribute")
    assert await api.ko('<workflow action="edit" id="2" name="wf2"/>') == (
        "MISSING_PARAMETER", "Missing 'content' attribute")
    assert api.server.workflows.get(2).xml == SIMPLE


async def test_delete_cascades(any_api: Api) -> None:
    api = any_api
    await api.ok(create("wf1", WITH_PARAMS))
    await api.ok(create("wf2"))
    notification = await add_notification(api)
    await api.ok(f'<workflow action="subscribe_notification" id="1" '
                 f'notification_id="{notification}"/>')
    schedule = ('<workflow_schedule action="create" workflow_id="{}" node="localhost" '
                'schedule="0;0;1" onfailure="CONTINUE">{}</workflow_schedule>')
    params = '<parameter name="a" value="1"/><parameter name="b" value="2"/>'
    await api.ok(schedule.format(1, params))
    await api.ok(schedule.format(2, ""))
    await api.add_user("bob", {1: "read", 2: "read"})
    await api.ok('<workflow action="delete" id="1"/>')
    storage = api.server.storage
    assert api.server.workflows.ids() == [2]
    assert [s.workflow_id for s in api.server.workflow_schedules.all()] == [2]
    assert await storage.query("SELECT workflow_schedule_id FROM t_workflow_schedule_parameters"
                               ) == []
    assert await storage.query("SELECT * FROM t_workflow_notification") == []
    assert await storage.query("SELECT workflow_id FROM t_user_right") == [(2,)]
    assert set(api.user("bob").rights) == {2}  # the users cache was reloaded
    assert await api.ko('<workflow action="delete" id="1"/>') == (
        "UNKNOWN_WORKFLOW", "Workflow not found")
    assert await api.ko('<workflow action="delete" name="wf1"/>') == (
        "UKNOWN_OBJECT", "Unknown Workflow name : wf1")
    await api.ok('<workflow action="delete" name="wf2"/>')
    assert api.server.workflows.all() == []


async def test_notifications(any_api: Api) -> None:
    api = any_api
    await api.ok(create("wf1"))
    n1 = await add_notification(api)
    n2 = await add_notification(api, subscribe_all=1)
    assert len(await api.ok('<workflow action="list_notifications" id="1"/>')) == 0
    subscribe = '<workflow action="subscribe_notification" id="1" notification_id="{}"/>'
    await api.ok(subscribe.format(n2))
    await api.ok(subscribe.format(n1))
    answer = await api.ok('<workflow action="list_notifications" name="wf1"/>')
    assert text(answer) == (f'<response node="localhost" status="OK"><notification id="{n1}"/>'
                            f'<notification id="{n2}"/></response>')
    assert await api.ko(subscribe.format(n1)) == (
        "SQL_ERROR", f"Duplicate entry '1-{n1}' for key 'PRIMARY'")
    assert await api.ko(subscribe.format(99)) == (
        "UNKNOWN_NOTIFICATION", "Notification ID not found")
    assert await api.ko('<workflow action="subscribe_notification" id="9" notification_id="1"/>'
                        ) == ("UNKNOWN_OBJECT", "Unknown Workflow ID : 9")
    assert await api.ko('<workflow action="subscribe_notification" id="1"/>') == (
        "MISSING_PARAMETER", "Missing 'notification_id' attribute")
    unsubscribe = '<workflow action="unsubscribe_notification" id="1" notification_id="{}"/>'
    await api.ok(unsubscribe.format(n1))
    assert api.server.workflows.get(1).notifications == (n2,)
    assert await api.ko(unsubscribe.format(n1)) == (
        "UNKNOWN_NOTIFICATION", "Workflow was not subscribed to this notification")
    await api.ok('<workflow action="clear_notifications" id="1"/>')
    assert api.server.workflows.get(1).notifications == ()
    await api.ok('<workflow action="clear_notifications" id="99"/>')  # errata 15
    assert await api.ko('<workflow action="list_notifications" id="99"/>') == (
        "UNKNOWN_OBJECT", "Unknown Workflow ID : 99")
    # a new workflow is bound to every subscribe_all notification
    await api.ok(create("wf2"))
    assert api.server.workflows.get_by_name("wf2").notifications == (n2,)


async def test_list(api: Api) -> None:
    await api.ok(create("zeta", extra='group="g" comment="c"'))
    await api.ok(create("alpha", '<workflow version="2">' + SIMPLE[len("<workflow>"):]))
    await api.server.storage.execute(
        "UPDATE t_workflow SET workflow_lastcommit = 'abc' WHERE workflow_id = 1")
    await api.server.reload("workflows")
    assert text(await api.ok('<workflows action="list"/>')) == (
        '<response node="localhost" status="OK">'
        '<workflow comment="" group="" id="2" lastcommit="" name="alpha"/>'
        '<workflow comment="c" group="g" id="1" lastcommit="abc" name="zeta"/></response>')
    answer = await api.ok('<workflows action="list" full="yes"/>')
    assert text(answer[0]) == (
        '<workflow comment="" group="" id="2" lastcommit="" name="alpha" version="2">'
        '<subjobs><job><tasks><task path="/bin/true" queue="default"/></tasks></job>'
        '</subjobs></workflow>')
    assert [w.get("name") for w in answer] == ["alpha", "zeta"]
    assert await api.ko('<workflows action="list" full="maybe"/>') == (
        "INVALID_BOOLEAN", "Attribute 'full' has invalid boolean value")
    assert await api.ko('<workflows action="get"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_actions(api: Api) -> None:
    assert await api.ko('<workflow action="nope" id="1"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await api.ko("<workflow/>") == ("MISSING_PARAMETER", "Missing 'action' attribute")


async def test_events_and_audit_log(api: Api) -> None:
    await api.ok(create("wf1"))
    await api.ok(f'<workflow action="edit" id="1" name="wf1" content="{b64(SIMPLE)}"/>')
    n = await add_notification(api)
    await api.ok(f'<workflow action="subscribe_notification" id="1" notification_id="{n}"/>')
    await api.ok(f'<workflow action="unsubscribe_notification" id="1" notification_id="{n}"/>')
    await api.ok('<workflow action="clear_notifications" id="1"/>')
    await api.ok('<workflow action="delete" id="1"/>')
    assert [e for e in api.events if e[0] != "LOG_API"] == [
        ("WORKFLOW_CREATED", 1), ("WORKFLOW_SUBSCRIBED", 1), ("WORKFLOW_MODIFIED", 1),
        ("WORKFLOW_SUBSCRIBED", 1), ("WORKFLOW_UNSUBSCRIBED", 1), ("WORKFLOW_UNSUBSCRIBED", 1),
        ("WORKFLOW_REMOVED", 1)]
    admin = api.user().id
    assert await api.log_api() == [
        (admin, 1, "Workflow", "workflow", action) for action in (
            "create", "edit", "subscribe_notification", "unsubscribe_notification",
            "clear_notifications", "delete")]


async def test_user_rights(api: Api) -> None:
    await api.ok(create("wf1"))
    await api.ok(create("wf2"))
    await api.ok(create("wf3"))
    n = await add_notification(api)
    reader = await api.add_user("reader", {1: "read", 3: "exec,kill"})
    editor = await api.add_user("editor", {1: "edit", 2: "read,edit"})
    denied = ("INSUFFICIENT_RIGHTS", "insufficient rights")
    edit = f'<workflow action="edit" id="{{}}" name="wf{{}}" content="{b64(SIMPLE)}"/>'
    subscribe = f'<workflow action="subscribe_notification" id="{{}}" notification_id="{n}"/>'

    await api.ok('<workflow action="get" id="1"/>', reader)
    await api.ok('<workflow action="list_notifications" name="wf1"/>', reader)
    for query in ('<workflow action="get" id="2"/>', '<workflow action="get" id="3"/>',
                  '<workflow action="get" id="99"/>',  # rights come before existence
                  edit.format(1, 1), subscribe.format(1),
                  '<workflow action="clear_notifications" id="1"/>', create("wf4"),
                  '<workflow action="delete" id="1"/>',
                  '<workflow action="list_notifications" id="2"/>'):
        assert await api.ko(query, reader) == denied, query
    assert await api.ko('<workflow action="get" name="nope"/>', reader) == (
        "UKNOWN_OBJECT", "Unknown Workflow name : nope")

    await api.ok(edit.format(1, 1), editor)
    await api.ok(subscribe.format(1), editor)
    await api.ok(f'<workflow action="unsubscribe_notification" id="1" notification_id="{n}"/>',
                 editor)
    await api.ok('<workflow action="clear_notifications" id="1"/>', editor)
    assert await api.ko('<workflow action="get" id="1"/>', editor) == denied
    assert await api.ko('<workflow action="delete" id="2"/>', editor) == denied

    listed = await api.ok('<workflows action="list"/>', reader)
    assert [w.get("name") for w in listed] == ["wf1"]
    listed = await api.ok('<workflows action="list" full="yes"/>', editor)
    assert [w.get("name") for w in listed] == ["wf2"]


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok(create("wf1"))
    await api.ok('<workflow action="clear_notifications" id="1"/>')
    await api.ok('<workflow action="delete" id="1"/>')
    await peer.wait_for(5)
    # one connection per broadcast: they may arrive in any order
    assert sorted(reload_queries(peer)) == [
        "scheduler", "users", "workflows", "workflows", "workflows"]
