"""``instances list`` (protocol.md §3.6.3, errata 16, live-findings 24) and the errors of the
instance actions that work on stored instances (protocol.md §3.6.2, errata 22), on SQLite and
MariaDB. The history is written straight into the tables, with chosen dates."""

from __future__ import annotations

from admintest import add_workflow
from apitest import Api, text

#: id: (workflow, node, host, start, end, status, errors, schedule id, comment)
HISTORY = {
    1: ("alpha", "localhost", "", "2026-01-10 10:15:00", "2026-01-10 10:16:00", "TERMINATED",
        0, None, "first"),
    2: ("alpha", "localhost", "", "2026-01-10 11:05:00", "2026-01-10 11:06:00", "TERMINATED",
        2, 7, ""),
    3: ("beta", "node2", "h1", "2026-02-03 10:00:00", "2026-02-03 12:00:00", "TERMINATED",
        0, None, ""),
    4: ("beta", "localhost", None, "2025-12-31 23:59:59", None, "EXECUTING", 0, None, ""),
    5: ("alpha", "localhost", "", "2026-01-10 10:45:00", "2026-01-11 00:00:00", "TERMINATED",
        1, 0, ""),
    6: ("deleted", "localhost", "", "2026-01-10 10:00:00", "2026-01-10 10:00:01",
        "TERMINATED", 0, None, ""),
}
PARAMETERS = [(1, "p", "x"), (2, "p", "y"), (5, "p", "x"), (5, "q", "z")]
CUSTOM = [(1, "ca", "v1"), (3, "ca", "v2")]
TAGS = [(1, 1), (1, 3), (2, 3)]  # (tag id, instance id); tags 1 = t1, 2 = t2


async def _history(api: Api) -> dict[str, int]:
    """The rows above; returns workflow name → id (``deleted`` has no workflow any more)."""
    ids = {name: await add_workflow(api, name) for name in ("alpha", "beta")}
    storage = api.server.storage
    for iid, (name, node, host, start, end, status, errors, schedule, comment) in \
            HISTORY.items():
        await storage.execute(
            "INSERT INTO t_workflow_instance (workflow_instance_id, node_name, workflow_id, "
            "workflow_schedule_id, workflow_instance_host, workflow_instance_start, "
            "workflow_instance_end, workflow_instance_status, workflow_instance_errors, "
            "workflow_instance_comment, workflow_instance_savepoint) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (iid, node, ids.get(name, 999), schedule, host, start, end, status, errors,
             comment, f'<workflow name="{name}" status="{status}"/>'))
    for iid, name, value in PARAMETERS:
        await storage.execute(
            "INSERT INTO t_workflow_instance_parameters (workflow_instance_id, "
            "workflow_instance_parameter, workflow_instance_parameter_value) "
            "VALUES (%s, %s, %s)", (iid, name, value))
    for iid, name, value in CUSTOM:
        await storage.execute(
            "INSERT INTO t_workflow_instance_filters (workflow_instance_id, "
            "workflow_instance_filter, workflow_instance_filter_value) VALUES (%s, %s, %s)",
            (iid, name, value))
    for label in ("t1", "t2"):
        await api.ok(f'<tag action="create" label="{label}"/>')
    for tag_id, iid in TAGS:
        await storage.execute("INSERT INTO t_workflow_instance_tag (tag_id, "
                              "workflow_instance_id) VALUES (%s, %s)", (tag_id, iid))
    return ids


async def _ids(api: Api, attributes: str = "", body: str = "", **kw: object) -> list[int]:
    answer = await api.ok(f'<instances action="list" {attributes}>{body}</instances>', **kw)
    return [int(row.get("id")) for row in answer]


async def test_rows_shape_and_order(any_api: Api) -> None:
    """Ended last first (executing ones after), ``host`` only when not NULL, ``schedule_id``
    only when not NULL (0 for debugresume), tags by label; instances of a deleted workflow are
    hidden."""
    await _history(any_api)
    answer = await any_api.ok('<instances action="list" />')
    assert answer.get("rows") == "5"
    assert [row.get("id") for row in answer] == ["3", "5", "2", "1", "4"]
    rows = {row.get("id"): text(row) for row in answer}
    assert rows["1"] == (
        '<workflow comment="first" end_time="2026-01-10 10:16:00" errors="0" host="" id="1" '
        'name="alpha" node_name="localhost" start_time="2026-01-10 10:15:00" '
        'status="TERMINATED"><tags><tag id="1" label="t1"/></tags></workflow>')
    assert rows["2"] == (
        '<workflow comment="" end_time="2026-01-10 11:06:00" errors="2" host="" id="2" '
        'name="alpha" node_name="localhost" schedule_id="7" start_time="2026-01-10 11:05:00" '
        'status="TERMINATED"><tags/></workflow>')
    assert rows["3"].endswith('<tags><tag id="1" label="t1"/><tag id="2" label="t2"/></tags>'
                              '</workflow>')
    assert rows["4"] == (
        '<workflow comment="" end_time="" errors="0" id="4" name="beta" node_name="localhost" '
        'start_time="2025-12-31 23:59:59" status="EXECUTING"><tags/></workflow>')
    assert 'schedule_id="0"' in rows["5"]


#: (attributes, <parameter> children, expected ids)
FILTERS = [
    ('filter_id="3"', "", [3]),
    ('filter_id="6"', "", []),  # its workflow was deleted
    ('filter_node="node2"', "", [3]),
    ('filter_workflow="alpha"', "", [5, 2, 1]),
    ('filter_workflow="nope"', "", []),
    ('filter_launched_from="2026-01-10 10:30"', "", [3, 5, 2]),
    ('filter_launched_until="2026-01-10 11:00:00"', "", [5, 1, 4]),
    ('filter_launched_from="2026-01-10" filter_launched_until="2026-01-11"', "", [5, 2, 1]),
    ('filter_ended_from="2026-01-10 11:00:00"', "", [3, 5, 2]),
    ('filter_ended_until="2026-01-10 12:00:00"', "", [2, 1]),
    ('filter_launched_from="yesterday"', "", [3, 5, 2, 1, 4]),  # malformed: ignored
    ('filter_status="EXECUTING"', "", [4]),
    ('filter_status="TERMINATED"', "", [3, 5, 2, 1]),
    ('filter_status="PAUSED"', "", []),  # unknown: no match, no error
    ('filter_error="yes"', "", [5, 2]),
    ('filter_error="no"', "", [3, 5, 2, 1, 4]),
    ('filter_tag_id="1"', "", [3, 1]),
    ('filter_tag_id="2"', "", [3]),
    ('filter_tag_id="9"', "", []),
    ('filter_schedule_id="7"', "", [2]),
    ('parameter_p="x"', "", [5, 1]),
    ('parameter_p="x" parameter_q="z"', "", [5]),
    ('parameter_p=""', "", [3, 5, 2, 1, 4]),  # empty values are ignored
    ("", '<parameter name="p" value="y"/>', [2]),
    ('parameter_q="z"', '<parameter name="p" value="x"/>', [5]),
    ("", '<parameter name="p" value="x"/><parameter name="q" value="nope"/>', []),
    ('customattribute_ca="v1"', "", [1]),
    ('customattribute_ca="v2"', "", [3]),
    ('customattribute_other="v1"', "", []),
    ('filter_workflow="alpha" filter_error="1" filter_node="localhost"', "", [5, 2]),
]


async def test_filters(any_api: Api) -> None:
    await _history(any_api)
    for attributes, body, expected in FILTERS:
        answer = await any_api.ok(f'<instances action="list" {attributes}>{body}</instances>')
        assert [int(row.get("id")) for row in answer] == expected, (attributes, body)
        assert answer.get("rows") == str(len(expected)), (attributes, body)


async def test_paging(any_api: Api) -> None:
    await _history(any_api)
    for attributes, expected in (('limit="2"', ["3", "5"]), ('limit="2" offset="2"', ["2", "1"]),
                                 ('limit="2" offset="4"', ["4"]), ('offset="9"', [])):
        answer = await any_api.ok(f'<instances action="list" {attributes} />')
        assert [row.get("id") for row in answer] == expected, attributes
        assert answer.get("rows") == "5"


async def test_every_page_is_a_slice_of_the_whole_order(any_api: Api) -> None:
    """Pages are bounded by their last end time before sorting (only one page gets sorted):
    with ties on that time and running rows after the ended ones, every page is still the
    matching slice of the full order."""
    ids = await _history(any_api)
    for iid in range(10, 16):  # three pairs of identical end times, and one more running
        end = None if iid == 15 else f"2026-01-10 10:16:0{iid % 3}"
        await any_api.server.storage.execute(
            "INSERT INTO t_workflow_instance (workflow_instance_id, node_name, workflow_id, "
            "workflow_instance_start, workflow_instance_end, workflow_instance_status, "
            "workflow_instance_errors) VALUES (%s, 'localhost', %s, '2026-01-10 10:00:00', "
            "%s, %s, 0)", (iid, ids["alpha"], end, "EXECUTING" if end is None else "TERMINATED"))
    whole = await _ids(any_api, 'limit="100"')
    assert len(whole) == 11
    for limit in range(1, 6):
        for offset in range(12):
            page = await _ids(any_api, f'limit="{limit}" offset="{offset}"')
            assert page == whole[offset:offset + limit], (limit, offset)


async def test_default_limit_is_30(api: Api) -> None:
    workflow_id = await add_workflow(api, "many")
    for _ in range(35):
        await api.server.storage.execute(
            "INSERT INTO t_workflow_instance (node_name, workflow_id, workflow_instance_host, "
            "workflow_instance_start, workflow_instance_status) "
            "VALUES ('localhost', %s, '', '2026-01-01 00:00:00', 'EXECUTING')", (workflow_id,))
    answer = await api.ok('<instances action="list" />')
    assert (answer.get("rows"), len(answer)) == ("35", 30)


#: (attributes, expected rows)
GROUPS = [
    ('groupby="hour"', [
        '<workflow count="1" day="3" hour="10" month="2" name="beta" node_name="node2" '
        'year="2026"/>',
        '<workflow count="1" day="10" hour="11" month="1" name="alpha" node_name="localhost" '
        'year="2026"/>',
        '<workflow count="2" day="10" hour="10" month="1" name="alpha" node_name="localhost" '
        'year="2026"/>',
        '<workflow count="1" day="31" hour="23" month="12" name="beta" node_name="localhost" '
        'year="2025"/>']),
    ('groupby="day"', [
        '<workflow count="1" day="3" month="2" name="beta" node_name="node2" year="2026"/>',
        '<workflow count="3" day="10" month="1" name="alpha" node_name="localhost" '
        'year="2026"/>',
        '<workflow count="1" day="31" month="12" name="beta" node_name="localhost" '
        'year="2025"/>']),
    ('groupby="month" filter_workflow="alpha"', [
        '<workflow count="3" month="1" name="alpha" node_name="localhost" year="2026"/>']),
    ('groupby="year"', [
        '<workflow count="3" name="alpha" node_name="localhost" year="2026"/>',
        '<workflow count="1" name="beta" node_name="node2" year="2026"/>',
        '<workflow count="1" name="beta" node_name="localhost" year="2025"/>']),
    # an unknown period groups by workflow and node only (errata 16)
    ('groupby="week"', [
        '<workflow count="3" name="alpha" node_name="localhost"/>',
        '<workflow count="1" name="beta" node_name="localhost"/>',
        '<workflow count="1" name="beta" node_name="node2"/>']),
]


async def test_groupby(any_api: Api) -> None:
    """Counts per workflow, node and period, newest period first (then by workflow and node);
    ``rows`` counts groups."""
    await _history(any_api)
    for attributes, expected in GROUPS:
        answer = await any_api.ok(f'<instances action="list" {attributes} />')
        assert [text(row) for row in answer] == expected, attributes
        assert answer.get("rows") == str(len(expected)), attributes


async def test_groupby_paging(any_api: Api) -> None:
    await _history(any_api)
    answer = await any_api.ok('<instances action="list" groupby="day" limit="1" offset="1" />')
    assert [row.get("count") for row in answer] == ["3"]
    assert answer.get("rows") == "3"


async def test_users_see_the_workflows_they_may_read(any_api: Api) -> None:
    ids = await _history(any_api)
    reader = await any_api.add_user("reader", {ids["alpha"]: "read", ids["beta"]: "exec,kill"})
    nobody = await any_api.add_user("nobody")
    answer = await any_api.ok('<instances action="list" />', reader)
    assert [row.get("id") for row in answer] == ["5", "2", "1"]
    assert answer.get("rows") == "3"
    answer = await any_api.ok('<instances action="list" groupby="week" />', reader)
    assert [(row.get("name"), row.get("count")) for row in answer] == [("alpha", "3")]
    answer = await any_api.ok('<instances action="list" filter_workflow="beta" />', reader)
    assert (answer.get("rows"), len(answer)) == ("0", 0)
    answer = await any_api.ok('<instances action="list" />', nobody)
    assert (answer.get("rows"), len(answer)) == ("0", 0)


#: (query, (error-code, error)) of the instance actions on stored instances
ACTION_ERRORS = [
    ('<instance action="delete" />', ("MISSING_PARAMETER", "Missing 'id' attribute")),
    ('<instance action="delete" id="99" />', ("UNKNOWN_INSTANCE", "Instance ID not found")),
    ('<instance action="delete" id="4" />', ("UNKNOWN_INSTANCE", "Instance ID not found")),
    ('<instance action="tag" id="1" tag_id="9" />', ("UNKNOWN_TAG", "Unknown Tag")),
    ('<instance action="tag" id="99" tag_id="1" />',
     ("UNKNOWN_INSTANCE", "Instance ID not found")),
    ('<instance action="tag" id="4" tag_id="1" />',
     ("INSTANCE_IS_RUNNING", "Instance is not terminated")),
    ('<instance action="tag" id="1" tag_id="1" />',
     ("INSTANCE_ALREADY_TAGGED", "Instance is already tagged")),
    ('<instance action="tag" id="1" />', ("MISSING_PARAMETER", "Missing 'tag_id' attribute")),
    ('<instance action="untag" id="2" tag_id="1" />',
     ("UNKNOWN_TAG_OR_INSTANCE", "Instance ID or tag ID not found")),
    ('<instance action="untag" id="99" tag_id="1" />',
     ("UNKNOWN_INSTANCE", "Instance ID not found")),
    ('<instance action="debugresume" id="99" />',
     (None, "Unable to find instance to resume, or instance is not terminated")),
    ('<instance action="debugresume" id="4" />',
     (None, "Unable to find instance to resume, or instance is not terminated")),
    ('<instance action="migrate" id="1" />',
     (None, "Workflow ID not found or already belongs to this node")),
    ('<instance action="migrate" id="4" />',  # executing, but on this node
     (None, "Workflow ID not found or already belongs to this node")),
    ('<instance action="query" id="99" />', ("UNKNOWN_INSTANCE", "Unknown workflow instance")),
    ('<instance action="query" id="4" />',
     ("WRONG_NODE", "Workflow instance is still running on another node, query the "
                    "corresponding node")),
    ('<instance action="wait" id="1" />', ("UNKNOWN_INSTANCE", "Unknown instance ID")),
    ('<instance action="cancel" id="1" />', ("UNKNOWN_INSTANCE", "Unknown workflow instance")),
]


async def test_action_errors(any_api: Api) -> None:
    await _history(any_api)
    for query, error in ACTION_ERRORS:
        assert await any_api.ko(query) == error, query


async def test_stored_savepoint_errors(api: Api) -> None:
    await _history(api)
    storage = api.server.storage
    await storage.execute("UPDATE t_workflow_instance SET workflow_instance_savepoint = NULL "
                          "WHERE workflow_instance_id = 1")
    await storage.execute("UPDATE t_workflow_instance SET workflow_instance_savepoint = 'oops' "
                          "WHERE workflow_instance_id = 2")
    assert await api.ko('<instance action="query" id="1" />') == (
        "INVALID_XML", "Invalid workflow XML")
    assert await api.ko('<instance action="query" id="2" />') == (None, "Invalid XML document")
    # a terminated instance without savepoint cannot be resumed either
    assert await api.ko('<instance action="debugresume" id="1" />') == (
        None, "Unable to find instance to resume, or instance is not terminated")


async def test_rights_of_the_actions(api: Api) -> None:
    ids = await _history(api)
    user = await api.add_user("u", {ids["alpha"]: "read,edit", ids["beta"]: "exec"})
    denied = ("INSUFFICIENT_RIGHTS", "insufficient rights")
    assert await api.ko('<instance action="delete" id="1" />', user) == denied
    assert await api.ko('<instance action="debugresume" id="1" />', user) == denied  # no exec
    assert await api.ko('<instance action="debugresume" id="3" />', user) == denied  # no read
    assert await api.ko('<instance action="migrate" id="1" />', user) == denied
    await api.ok('<instance action="tag" id="5" tag_id="2" />', user)  # edit on alpha
    assert await api.ko('<instance action="untag" id="3" tag_id="1" />',
                        await api.add_user("v")) == denied


async def test_tag_untag_delete(any_api: Api) -> None:
    await _history(any_api)
    any_api.events.clear()
    await any_api.ok('<instance action="tag" id="2" tag_id="2" />')
    assert await _ids(any_api, 'filter_tag_id="2"') == [3, 2]
    await any_api.ok('<instance action="untag" id="3" tag_id="2" />')
    assert await _ids(any_api, 'filter_tag_id="2"') == [2]
    await any_api.ok('<instance action="delete" id="3" />')
    assert await _ids(any_api) == [5, 2, 1, 4]
    assert [e for e in any_api.events if e[0] != "LOG_API"] == [
        ("INSTANCE_TAGGED", 2), ("INSTANCE_UNTAGGED", 3), ("INSTANCE_REMOVED", 3)]
    storage = any_api.server.storage
    for table in ("t_workflow_instance_filters", "t_workflow_instance_tag"):
        assert await storage.query(
            f"SELECT * FROM {table} WHERE workflow_instance_id = 3") == []
    await any_api.ok('<instance action="delete" id="5" />')
    assert await storage.query("SELECT workflow_instance_parameter FROM "
                               "t_workflow_instance_parameters WHERE workflow_instance_id = 5"
                               ) == []
    assert await _ids(any_api, 'parameter_p="x"') == [1]


async def test_pages_of_a_common_tag(any_api: Api) -> None:
    """A tag on most instances: its pages are read in end order (not by sorting every tagged
    instance), with the same rows, order and total as without the tag filter."""
    await _history(any_api)
    storage = any_api.server.storage
    for iid in (1, 2, 4, 5, 6):  # 6: its workflow was deleted, hidden
        await storage.execute("INSERT INTO t_workflow_instance_tag (tag_id, "
                              "workflow_instance_id) VALUES (2, %s)", (iid,))
    for attributes, expected in (('limit="1"', [3]), ('limit="2" offset="1"', [5, 2]),
                                 ('limit="2" offset="3"', [1, 4]), ('offset="5"', []),
                                 ('filter_workflow="alpha" limit="2"', [5, 2])):
        answer = await any_api.ok(f'<instances action="list" filter_tag_id="2" {attributes} />')
        assert [int(row.get("id")) for row in answer] == expected, attributes
        assert answer.get("rows") == ("3" if "alpha" in attributes else "5"), attributes
