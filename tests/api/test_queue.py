"""``queue`` and ``queuepool``: golden 02–04 and 25, every action and error, rights, events,
audit log, live pool reload and the cluster reload broadcast."""

from __future__ import annotations

import pytest
from apitest import Api, Peer, golden, reload_queries, text

CREATE = '<queue action="create" name="{}" concurrency="{}" scheduler="{}" dynamic="{}"/>'


async def test_golden_transcripts(any_api: Api) -> None:
    """02 create, 03 list, 04 duplicate (MariaDB's text on both backends), 25 list again."""
    for prefix in ("02", "03", "04", "25"):
        request, expected = golden(prefix)
        assert text(await any_api(request)) == expected, prefix


async def test_get(api: Api) -> None:
    await api.ok(CREATE.format("q1", 3, "prio", "yes"))
    answer = await api.ok('<queue action="get" id="2"/>')
    assert text(answer) == ('<response node="localhost" status="OK"><queue concurrency="3" '
                            'dynamic="yes" id="2" name="q1" scheduler="prio"/></response>')
    assert await api.ko('<queue action="get" id="99"/>') == (
        "UNKNOWN_OBJECT", "Unable to find queue")
    assert await api.ko('<queue action="get"/>') == (
        "MISSING_PARAMETER", "Missing 'id' attribute")
    assert await api.ko('<queue action="get" id="x"/>') == (
        "INVALID_INTEGER", "Attribute 'id' has invalid integer value")


async def test_create_updates_the_live_pool(api: Api) -> None:
    answer = await api.ok(CREATE.format("a-b_c@d.e", 5, "fifo", "1"))
    assert answer.get("queue-id") == "2"
    q = api.server.queues.definitions()[0]
    assert (q.id, q.name, q.concurrency, q.scheduler, q.dynamic) == (
        2, "a-b_c@d.e", 5, "fifo", True)
    assert [q.name for q in api.server.queues.definitions()] == ["a-b_c@d.e", "default"]
    assert text(await api.ok('<queue action="get" id="2"/>')) == (
        '<response node="localhost" status="OK"><queue concurrency="5" dynamic="yes" id="2" '
        'name="a-b_c@d.e" scheduler="fifo"/></response>')


@pytest.mark.parametrize(("query", "error"), [
    (CREATE.format("bad name", 1, "fifo", "no"), ("INVALID_PARAMETER", "Invalid queue name")),
    (CREATE.format("", 1, "fifo", "no"), ("INVALID_PARAMETER", "Invalid queue name")),
    (CREATE.format("x" * 65, 1, "fifo", "no"), ("INVALID_PARAMETER", "Invalid queue name")),
    (CREATE.format("q", 0, "fifo", "no"),
     ("INVALID_PARAMETER", "Invalid concurrency, must be greater than 0")),
    (CREATE.format("q", -1, "fifo", "no"),
     ("INVALID_PARAMETER", "Invalid concurrency, must be greater than 0")),
    (CREATE.format("q", 1, "lifo", "no"),
     ("INVALID_PARAMETER", "Invalid scheduler name, must be 'prio', 'fifo' or 'default'")),
    (CREATE.format("q", "x", "fifo", "no"),
     ("INVALID_INTEGER", "Attribute 'concurrency' has invalid integer value")),
    (CREATE.format("q", 1, "fifo", "true"),
     ("INVALID_BOOLEAN", "Attribute 'dynamic' has invalid boolean value")),
    ('<queue action="create" concurrency="1" scheduler="fifo" dynamic="no"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<queue action="create" name="q" scheduler="fifo" dynamic="no"/>',
     ("MISSING_PARAMETER", "Missing 'concurrency' attribute")),
    ('<queue action="create" name="q" concurrency="1" dynamic="no"/>',
     ("MISSING_PARAMETER", "Missing 'scheduler' attribute")),
    ('<queue action="create" name="q" concurrency="1" scheduler="fifo"/>',
     ("MISSING_PARAMETER", "Missing 'dynamic' attribute")),
])
async def test_create_errors(api: Api, query: str, error: tuple[str, str]) -> None:
    assert await api.ko(query) == error
    assert [q.name for q in api.server.queues.definitions()] == ["default"]
    assert api.events == []


async def test_name_of_64_characters(api: Api) -> None:
    await api.ok(CREATE.format("x" * 64, 1, "fifo", "no"))


async def test_edit(api: Api) -> None:
    await api.ok(CREATE.format("q1", 1, "fifo", "no"))
    await api.ok(CREATE.format("q2", 1, "fifo", "no"))
    edit = '<queue action="edit" id="{}" name="{}" concurrency="4" scheduler="prio" dynamic="yes"/>'
    await api.ok(edit.format(2, "renamed"))
    q = api.server.queues.get_by_id(2)
    assert q is not None
    assert (q.name, q.concurrency, q.scheduler, q.dynamic) == ("renamed", 4, "prio", True)
    # unchanged values still find the row (MySQL reports matched rows, not changed ones)
    await api.ok(edit.format(2, "renamed"))
    assert await api.ko(edit.format(99, "x")) == ("UNKNOWN_QUEUE", "Unable to find queue")
    assert await api.ko(edit.format(3, "renamed")) == (
        "SQL_ERROR", "Duplicate entry 'renamed' for key 'queue_name'")
    assert await api.ko(edit.format(2, "bad name")) == ("INVALID_PARAMETER", "Invalid queue name")
    assert await api.ko(
        '<queue action="edit" name="q" concurrency="1" scheduler="fifo" dynamic="no"/>'
    ) == ("MISSING_PARAMETER", "Missing 'id' attribute")


async def test_delete(api: Api) -> None:
    await api.ok(CREATE.format("q1", 1, "fifo", "no"))
    await api.ok('<queue action="delete" id="2"/>')
    assert [q.name for q in api.server.queues.definitions()] == ["default"]
    assert await api.ko('<queue action="delete" id="2"/>') == (
        "UNKNOWN_QUEUE", "Unable to find queue")
    assert await api.ko('<queue action="get" id="2"/>') == (
        "UNKNOWN_OBJECT", "Unable to find queue")


async def test_events_and_audit_log(api: Api) -> None:
    await api.ok(CREATE.format("q1", 1, "fifo", "no"))
    await api.ok('<queue action="edit" id="2" name="q1" concurrency="2" scheduler="fifo" '
                 'dynamic="no"/>')
    await api.ok('<queue action="delete" id="2"/>')
    await api.ko('<queue action="delete" id="2"/>')
    assert [e for e in api.events if e[0] != "LOG_API"] == [
        ("QUEUE_CREATED", 2), ("QUEUE_MODIFIED", 2), ("QUEUE_REMOVED", 2)]
    admin = api.user().id
    assert await api.log_api() == [(admin, 2, "Queue", "queue", "create"),
                                   (admin, 2, "Queue", "queue", "edit"),
                                   (admin, 2, "Queue", "queue", "delete")]


async def test_actions(api: Api) -> None:
    assert await api.ko('<queue action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await api.ko("<queue/>") == ("MISSING_PARAMETER", "Missing 'action' attribute")
    assert await api.ko('<queuepool action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_user_rights(api: Api) -> None:
    """``queue`` is ADMIN-only (checked before the action); ``queuepool list`` is for all."""
    bob = await api.add_user("bob")
    for query in ('<queue action="get" id="1"/>', CREATE.format("q", 1, "fifo", "no"),
                  '<queue action="edit" id="1" name="q" concurrency="1" scheduler="fifo" '
                  'dynamic="no"/>', '<queue action="delete" id="1"/>', '<queue action="nope"/>',
                  "<queue/>"):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights")
    answer = await api.ok('<queuepool action="list"/>', bob)
    assert [q.get("name") for q in answer] == ["default"]


async def test_list_shows_dynamic_sub_queues(api: Api) -> None:
    await api.ok(CREATE.format("dq", 2, "default", "yes"))
    api.server.queues.resolve("dq", "host1")  # a task with queue_host="host1" creates it
    answer = await api.ok('<queuepool action="list"/>')
    assert text(answer) == (
        '<response node="localhost" status="OK">'
        '<queue concurrency="1" dynamic="no" id="1" name="default" scheduler="default"/>'
        '<queue concurrency="2" dynamic="yes" id="2" name="dq" scheduler="default"/>'
        '<queue concurrency="2" dynamic="no" id="2" name="dq@host1" scheduler="default"/>'
        '</response>')


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok(CREATE.format("q1", 1, "fifo", "no"))
    await api.ok('<queue action="delete" id="2"/>')
    await api.ko('<queue action="delete" id="2"/>')
    await peer.wait_for(2)
    assert reload_queries(peer) == ["queuepool", "queuepool"]
