"""``display`` and ``displays`` (storage module, errata 14 and 20): every action and error,
events, rights and the cluster reload broadcast."""

from __future__ import annotations

import pytest
from admintest import ok_text, user_events
from apitest import Api, Peer, reload_queries, text

CREATE = ('<display action="create" name="{}" group="{}" path="a/b" order="{}" '
          'item_title="{{name}}" item_content="{{value}}"/>')


async def test_actions(any_api: Api) -> None:
    api = any_api
    assert text(await api.ok(CREATE.format("d1", "g2", "ASC"))) == ok_text(
        **{"display-id": "1"})
    await api.ok('<display action="create" name="d0" path="/a" order="DESC" item_title="t" '
                 'item_content="c"/>')
    await api.ok(CREATE.format("d2", "g1", "DESC"))
    assert text(await api.ok('<display action="get" id="1"/>')) == ok_text(
        group="g2", item_content="{value}", item_title="{name}", name="d1", order="ASC",
        path="a/b")
    assert text(await api.ok('<displays action="list"/>')) == ok_text(
        '<display group="" id="2" name="d0"/><display group="g2" id="1" name="d1"/>'
        '<display group="g1" id="3" name="d2"/>')
    assert text(await api.ok('<displays action="listgroups"/>')) == ok_text(
        '<group name=""/><group name="g1"/><group name="g2"/>')
    await api.ok('<display action="edit" id="1" name="d9" group="g3" path="x" order="DESC" '
                 'item_title="t" item_content="c"/>')
    d = api.server.displays.get(1)
    assert (d.name, d.group, d.path, d.order, d.item_title, d.item_content) == (
        "d9", "g3", "x", "DESC", "t", "c")
    await api.ok('<display action="delete" id="2"/>')
    assert [d.id for d in api.server.displays.all()] == [3, 1]
    assert user_events(api) == [
        ("DISPLAY_CREATED", 1), ("DISPLAY_CREATED", 2), ("DISPLAY_CREATED", 3),
        ("DISPLAY_MODIFIED", 1), ("DISPLAY_REMOVED", 2)]
    assert await api.log_api() == []


@pytest.mark.parametrize(("query", "error"), [
    (CREATE.format("d1", "g", "ASC"), ("INVALID_PARAMETER", "Display « d1 » already exists")),
    (CREATE.format("new", "g", "UP"), ("INVALID_PARAMETER", "Order must be ASC or DESC")),
    ('<display action="create" name="n" path="p" order="ASC" item_title="t"/>',
     ("MISSING_PARAMETER", "Missing 'item_content' attribute")),
    ('<display action="create" path="p" order="ASC" item_title="t" item_content="c"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<display action="create" name="n" order="ASC" item_title="t" item_content="c"/>',
     ("MISSING_PARAMETER", "Missing 'path' attribute")),
    ('<display action="edit" id="2" name="d1" path="p" order="ASC" item_title="t" '
     'item_content="c"/>', ("INVALID_PARAMETER", "Display « d1 » already exists")),
    ('<display action="edit" id="9" name="n" path="p" order="ASC" item_title="t" '
     'item_content="c"/>', ("UNKNOWN_DISPLAY", "Display not found")),
    ('<display action="edit" name="n" path="p" order="ASC" item_title="t" item_content="c"/>',
     ("MISSING_PARAMETER", "Missing 'id' attribute")),
    ('<display action="delete" id="9"/>', ("UNKNOWN_DISPLAY", "Display not found")),
    ('<display action="get" id="9"/>', ("UNKNOWN_OBJECT", "Unknown Display ID : 9")),
    ('<display action="nope"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<displays action="nope"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
])
async def test_errors(any_api: Api, query: str, error: tuple[str, str]) -> None:
    await any_api.ok(CREATE.format("d1", "g", "ASC"))
    await any_api.ok(CREATE.format("d2", "g", "ASC"))
    events = list(any_api.events)
    assert await any_api.ko(query) == error
    assert any_api.events == events
    assert [d.name for d in any_api.server.displays.all()] == ["d1", "d2"]


async def test_path_is_ascii(api: Api) -> None:
    code, error = await api.ko(CREATE.format("d", "g", "ASC").replace("a/b", "é"))
    assert (code, error.split(":")[0]) == ("SQL_ERROR", "Incorrect string value")


async def test_user_profile(api: Api) -> None:
    await api.ok(CREATE.format("d1", "g", "ASC"))
    bob = await api.add_user("bob")
    await api.ok('<display action="get" id="1"/>', bob)
    assert len(await api.ok('<displays action="list"/>', bob)) == 1
    assert len(await api.ok('<displays action="listgroups"/>', bob)) == 1
    for query in (CREATE.format("d2", "g", "ASC"), '<display action="delete" id="1"/>',
                  '<display action="edit" id="1" name="x" path="p" order="ASC" item_title="t" '
                  'item_content="c"/>', '<display action="nope"/>'):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights"), query


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    await api.ok(CREATE.format("d1", "g", "ASC"))
    await api.ok('<display action="delete" id="1"/>')
    await api.server.cluster.close()  # waits for the broadcasts in flight
    assert reload_queries(peer) == ["displays", "displays"]
