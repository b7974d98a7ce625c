"""``tag`` and ``tags``: every action and error, idempotent create, untagging on delete,
events, audit log, ADMIN-only rights and the cluster reload broadcast."""

from __future__ import annotations

import pytest
from admintest import ok_text, user_events
from apitest import Api, Peer, reload_queries, text


async def test_create_get_list(api: Api) -> None:
    assert text(await api.ok('<tag action="create" label="zeta"/>')) == ok_text(
        **{"tag-id": "1"})
    assert text(await api.ok('<tag action="create" label="alpha beta"/>')) == ok_text(
        **{"tag-id": "2"})
    # an existing label answers its id and changes nothing
    assert (await api.ok('<tag action="create" label="zeta"/>')).get("tag-id") == "1"
    assert text(await api.ok('<tag action="get" id="2"/>')) == ok_text(
        '<tag label="alpha beta"/>')
    assert text(await api.ok('<tags action="list"/>')) == ok_text(
        '<tag id="2" label="alpha beta"/><tag id="1" label="zeta"/>')
    assert user_events(api) == [("TAG_CREATED", 0), ("TAG_CREATED", 0)]
    assert await api.log_api() == [(1, 1, "Tag", "tag", "create"), (1, 2, "Tag", "tag", "create")]
    assert api.server.tags.exists(2)


async def test_create_is_idempotent_in_the_database_collation(any_api: Api) -> None:
    await any_api.ok('<tag action="create" label="Prod"/>')
    assert (await any_api.ok('<tag action="create" label="prod"/>')).get("tag-id") == "1"


@pytest.mark.parametrize(("query", "error"), [
    ('<tag action="create" label=""/>', ("INVALID_PARAMETER", "Invalid tag label")),
    ('<tag action="create"/>', ("MISSING_PARAMETER", "Missing 'label' attribute")),
    ('<tag action="get" id="7"/>', ("UNKNOWN_OBJECT", "Unknown Tag ID : 7")),
    ('<tag action="get"/>', ("MISSING_PARAMETER", "Missing 'id' attribute")),
    ('<tag action="edit" id="7" label="x"/>', (None, "Tag not found")),
    ('<tag action="edit" id="1" label=""/>', ("INVALID_PARAMETER", "Invalid tag label")),
    ('<tag action="edit" label="x"/>', ("MISSING_PARAMETER", "Missing 'id' attribute")),
    ('<tag action="delete" id="7"/>', ("UNKNOWN_TAG", "Tag not found")),
    ('<tag action="nope"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<tag/>', ("MISSING_PARAMETER", "Missing 'action' attribute")),
    ('<tags action="get"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
])
async def test_errors(api: Api, query: str, error: tuple[str | None, str]) -> None:
    await api.ok('<tag action="create" label="a"/>')
    events = list(api.events)
    assert await api.ko(query) == error
    assert api.events == events
    assert [t.label for t in api.server.tags.all()] == ["a"]


async def test_edit(any_api: Api) -> None:
    api = any_api
    await api.ok('<tag action="create" label="a"/>')
    await api.ok('<tag action="create" label="b"/>')
    await api.ok('<tag action="edit" id="1" label="c"/>')
    assert api.server.tags.get(1).label == "c"
    assert await api.ko('<tag action="edit" id="1" label="b"/>') == (
        "SQL_ERROR", "Duplicate entry 'b' for key 'tag_label'")
    assert user_events(api)[-1] == ("TAG_MODIFIED", 0)
    assert (await api.log_api())[-1] == (1, 1, "Tag", "tag", "edit")


async def test_delete_untags_instances(api: Api) -> None:
    storage = api.server.storage
    await api.ok('<tag action="create" label="a"/>')
    await api.ok('<tag action="create" label="b"/>')
    for tag_id, instance_id in ((1, 10), (1, 11), (2, 10)):
        await storage.execute("INSERT INTO t_workflow_instance_tag (tag_id, workflow_instance_id)"
                              " VALUES (%s, %s)", (tag_id, instance_id))
    await api.ok('<tag action="delete" id="1"/>')
    assert await storage.query("SELECT tag_id, workflow_instance_id FROM "
                               "t_workflow_instance_tag") == [(2, 10)]
    assert not api.server.tags.exists(1)
    assert text(await api.ok('<tags action="list"/>')) == ok_text('<tag id="2" label="b"/>')
    assert user_events(api)[-1] == ("TAG_REMOVED", 0)
    assert (await api.log_api())[-1] == (1, 1, "Tag", "tag", "delete")


async def test_ensure_creates_once(api: Api) -> None:
    """Automatic tags: created on first use, then found."""
    tags = api.server.tags
    assert await tags.ensure("auto") == 1
    assert await tags.ensure("auto") == 1
    assert tags.get(1).label == "auto"
    assert user_events(api) == [("TAG_CREATED", 0)]


async def test_user_profile_is_refused(api: Api) -> None:
    bob = await api.add_user("bob")
    await api.ok('<tag action="create" label="a"/>')
    for query in ('<tag action="get" id="1"/>', '<tag action="create" label="b"/>',
                  '<tag action="edit" id="1" label="b"/>', '<tag action="delete" id="1"/>',
                  '<tag action="nope"/>', '<tags action="list"/>'):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights"), query


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok('<tag action="create" label="a"/>')
    await api.ok('<tag action="create" label="a"/>')  # nothing changed: no broadcast
    await api.ok('<tag action="edit" id="1" label="b"/>')
    await api.ok('<tag action="delete" id="1"/>')
    await api.server.cluster.close()  # waits for the broadcasts in flight
    assert reload_queries(peer) == ["tags", "tags", "tags"]
