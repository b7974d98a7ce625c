"""``retry_schedule`` and ``retry_schedules``: golden 30–31, every action and error, the cache
instances import from, rights, events, audit log, cluster reloads."""

from __future__ import annotations

import pytest
from apitest import Api, Peer, b64, golden, reload_queries, text

from evqueue.protocol.errors import ApiError

TWO_LEVELS = '<schedule><level retry_delay="2" retry_times="3"/><level retry_delay="60" ' \
             'retry_times="5"/></schedule>'
ONE_LEVEL = '<schedule><level retry_delay="10" retry_times="1"/></schedule>'


def create(name: str, content: str = ONE_LEVEL) -> str:
    return f'<retry_schedule action="create" name="{name}" content="{b64(content)}"/>'


def edit(schedule_id: int, name: str, content: str = ONE_LEVEL) -> str:
    return (f'<retry_schedule action="edit" id="{schedule_id}" name="{name}" '
            f'content="{b64(content)}"/>')


async def test_golden_transcripts(any_api: Api) -> None:
    for prefix in ("30", "31"):
        request, expected = golden(prefix)
        assert text(await any_api(request)) == expected, prefix


async def test_get(api: Api) -> None:
    await api.ok(create("r1", TWO_LEVELS))
    assert text(await api.ok('<retry_schedule action="get" id="1"/>')) == (
        '<response node="localhost" status="OK"><schedule id="1" name="r1">'
        '<level retry_delay="2" retry_times="3"/><level retry_delay="60" retry_times="5"/>'
        '</schedule></response>')
    assert await api.ko('<retry_schedule action="get" id="2"/>') == (
        "UNKNOWN_OBJECT", "Unknown RetrySchedule ID : 2")
    assert await api.ko('<retry_schedule action="get"/>') == (
        "MISSING_PARAMETER", "Missing 'id' attribute")


async def test_cache_by_name(api: Api) -> None:
    """What ``instance launch`` imports into an instance."""
    await api.ok(create("r1", TWO_LEVELS))
    s = api.server.retry_schedules.get_by_name("r1")
    assert (s.id, s.name, s.xml) == (1, "r1", TWO_LEVELS)
    with pytest.raises(ApiError) as info:
        api.server.retry_schedules.get_by_name("nope")
    assert (info.value.code, info.value.message) == (
        "UKNOWN_OBJECT", "Unknown RetrySchedule name : nope")


@pytest.mark.parametrize(("query", "error"), [
    ('<retry_schedule action="create" content="x"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<retry_schedule action="create" name="r"/>',
     ("MISSING_PARAMETER", "Missing 'content' attribute")),
    (create(""), ("INVALID_PARAMETER", "Invalid retry schedule name")),
    (create("bad name"), ("INVALID_PARAMETER", "Invalid retry schedule name")),
    (create("x" * 65), ("INVALID_PARAMETER", "Invalid retry schedule name")),
    ('<retry_schedule action="create" name="r" content="!!!"/>',
     ("INVALID_PARAMETER", "Invalid base64 sequence")),
    (create("r", "hello"), (None, "invalid document structure on line 1")),
    (create("r", ""), (None, "invalid document structure on line 1")),
])
async def test_create_errors(api: Api, query: str, error: tuple[str | None, str]) -> None:
    assert await api.ko(query) == error
    assert api.server.retry_schedules.all() == []
    assert api.events == []


@pytest.mark.parametrize("content", [
    "<schedule/>",
    '<schedule><level retry_delay="0" retry_times="1"/></schedule>',
    '<schedule><level retry_delay="1"/></schedule>',
    '<schedule><level retry_delay="1" retry_times="1" foo="x"/></schedule>',
    '<other><level retry_delay="1" retry_times="1"/></other>',
])
async def test_xsd_errors_have_no_code(api: Api, content: str) -> None:
    code, error = await api.ko(create("r", content))
    assert code is None
    assert " on line " in error


async def test_name_of_64_characters(api: Api) -> None:
    await api.ok(create("x" * 64))


async def test_duplicate_name(any_api: Api) -> None:
    await any_api.ok(create("r1"))
    await any_api.ok(create("r2"))
    duplicate = ("SQL_ERROR", "Duplicate entry 'r1' for key 'schedule_name'")
    assert await any_api.ko(create("r1")) == duplicate
    assert await any_api.ko(edit(2, "r1")) == duplicate


async def test_edit(api: Api) -> None:
    await api.ok(create("r1"))
    await api.ok(edit(1, "renamed", TWO_LEVELS))
    s = api.server.retry_schedules.get(1)
    assert (s.name, s.xml) == ("renamed", TWO_LEVELS)
    await api.ok(edit(1, "renamed", TWO_LEVELS))  # unchanged values
    assert await api.ko(edit(9, "x")) == ("UNKNOWN_RETRY_SCHEDULE", "Retry schedule not found")
    assert await api.ko(edit(1, "bad name")) == (
        "INVALID_PARAMETER", "Invalid retry schedule name")
    assert (await api.ko(edit(1, "renamed", "<schedule/>")))[0] is None
    assert await api.ko('<retry_schedule action="edit" name="r" content="x"/>') == (
        "MISSING_PARAMETER", "Missing 'id' attribute")
    assert api.server.retry_schedules.get(1).xml == TWO_LEVELS


async def test_delete(api: Api) -> None:
    await api.ok(create("r1"))
    await api.ok('<retry_schedule action="delete" id="1"/>')
    assert api.server.retry_schedules.all() == []
    assert await api.ko('<retry_schedule action="delete" id="1"/>') == (
        "UNKNOWN_RETRY_SCHEDULE", "Retry schedule not found")


async def test_list_sorted_by_name(api: Api) -> None:
    await api.ok(create("zz", TWO_LEVELS))
    await api.ok(create("aa"))
    assert text(await api.ok('<retry_schedules action="list"/>')) == (
        '<response node="localhost" status="OK">'
        '<schedule id="2" name="aa"><level retry_delay="10" retry_times="1"/></schedule>'
        '<schedule id="1" name="zz"><level retry_delay="2" retry_times="3"/>'
        '<level retry_delay="60" retry_times="5"/></schedule></response>')
    assert await api.ko('<retry_schedules action="get"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_events_and_audit_log(api: Api) -> None:
    await api.ok(create("r1"))
    await api.ok(edit(1, "r1"))
    await api.ok('<retry_schedule action="delete" id="1"/>')
    await api.ko('<retry_schedule action="delete" id="1"/>')
    assert [e for e in api.events if e[0] != "LOG_API"] == [
        ("RETRYSCHEDULE_CREATED", 0), ("RETRYSCHEDULE_MODIFIED", 1),
        ("RETRYSCHEDULE_REMOVED", 1)]
    admin = api.user().id
    assert await api.log_api() == [
        (admin, 1, "RetrySchedule", "retry_schedule", a) for a in ("create", "edit", "delete")]


async def test_user_rights(api: Api) -> None:
    await api.ok(create("r1"))
    bob = await api.add_user("bob")
    for query in ('<retry_schedule action="get" id="1"/>', create("r2"), edit(1, "r1"),
                  '<retry_schedule action="delete" id="1"/>',
                  '<retry_schedule action="nope"/>'):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights")
    listed = await api.ok('<retry_schedules action="list"/>', bob)
    assert [s.get("name") for s in listed] == ["r1"]


async def test_actions(api: Api) -> None:
    assert await api.ko('<retry_schedule action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await api.ko("<retry_schedule/>") == (
        "MISSING_PARAMETER", "Missing 'action' attribute")


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok(create("r1"))
    await api.ok(edit(1, "r1"))
    await peer.wait_for(2)
    assert reload_queries(peer) == ["retry_schedules", "retry_schedules"]
