"""``logs``, ``logsapi``, ``logsnotifications``: level filter, paging, newest first, names
resolved in the audit log, open to any user."""

from __future__ import annotations

import pytest
from admintest import add_workflow, ok_text
from apitest import Api, text

TIME = "2024-05-02 14:03:11"


async def add_logs(api: Api, *rows: tuple[int, str]) -> None:
    for level, message in rows:
        await api.server.storage.execute(
            "INSERT INTO t_log (node_name, log_level, log_message, log_timestamp) "
            "VALUES ('n1', %s, %s, %s)", (level, message, TIME))


async def test_logs(any_api: Api) -> None:
    api = any_api
    await add_logs(api, (3, "error"), (7, "debug"), (4, "warning &<\n"), (0, "emerg"))
    assert text(await api.ok('<logs action="list"/>')) == ok_text(
        f'<log level="LOG_EMERG" message="emerg" node="n1" timestamp="{TIME}"/>'
        f'<log level="LOG_WARNING" message="warning &amp;&lt;&#xA;" node="n1" '
        f'timestamp="{TIME}"/>'
        f'<log level="LOG_DEBUG" message="debug" node="n1" timestamp="{TIME}"/>'
        f'<log level="LOG_ERR" message="error" node="n1" timestamp="{TIME}"/>')
    warnings = await api.ok('<logs action="list" filter_level="LOG_WARNING"/>')
    assert [e.get("message") for e in warnings] == ["emerg", "warning &<\n", "error"]
    page = await api.ok('<logs action="list" limit="2" offset="1"/>')
    assert [e.get("message") for e in page] == ["warning &<\n", "debug"]
    assert len(await api.ok('<logs action="list" filter_level="LOG_EMERG" limit="0"/>')) == 0


@pytest.mark.parametrize(("query", "error"), [
    ('<logs action="list" filter_level="LOG_NOPE"/>', (None, "Unknown filter level")),
    ('<logs action="list" limit="x"/>',
     ("INVALID_INTEGER", "Attribute 'limit' has invalid integer value")),
    ('<logsapi action="list" offset=""/>',
     ("INVALID_INTEGER", "Attribute 'offset' has invalid integer value")),
    ('<logs action="get"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<logsapi action="get"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<logsnotifications/>', ("MISSING_PARAMETER", "Missing 'action' attribute")),
])
async def test_errors(api: Api, query: str, error: tuple[str | None, str]) -> None:
    assert await api.ko(query) == error


async def test_logsapi(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok('<user action="create" name="bob" password="p" profile="USER"/>')
    await api.ok('<tag action="create" label="t"/>')
    await api.ok('<tag action="delete" id="1"/>')
    storage = api.server.storage
    for user_id, object_id, object_type in ((1, wf, "Workflow"), (42, 7, "Queue")):
        await storage.execute(
            "INSERT INTO t_log_api (node_name, user_id, log_api_object_id, log_api_object_type,"
            " log_api_group, log_api_action, log_api_timestamp) VALUES "
            "('other', %s, %s, %s, 'queue', 'edit', %s)", (user_id, object_id, object_type, TIME))
    answer = await api.ok('<logsapi action="list"/>')
    rows = [(e.get("user"), e.get("object_type"), e.get("object_id"), e.get("object_name"),
             e.get("group"), e.get("action"), e.get("node")) for e in answer]
    assert rows == [
        ("", "Queue", "7", "unknown", "queue", "edit", "other"),
        ("admin", "Workflow", str(wf), "wf", "queue", "edit", "other"),
        ("admin", "Tag", "1", "unknown", "tag", "delete", "localhost"),
        ("admin", "Tag", "1", "unknown", "tag", "create", "localhost"),
        ("admin", "User", "2", "bob", "user", "create", "localhost"),
    ]
    assert text(answer[0]) == (
        f'<log action="edit" group="queue" node="other" object_id="7" object_name="unknown" '
        f'object_type="Queue" timestamp="{TIME}" user=""/>')
    await api.ok('<queue action="create" name="q" concurrency="1" scheduler="fifo" '
                 'dynamic="no"/>')
    await api.ok('<tag action="create" label="t2"/>')
    names = [e.get("object_name") for e in await api.ok('<logsapi action="list" limit="2"/>')]
    assert names == ["t2", "q"]


async def test_logsnotifications(api: Api) -> None:
    for pid, message in ((12, "first"), (13, "second\x01")):
        await api.server.storage.execute(
            "INSERT INTO t_log_notifications (node_name, log_notifications_pid, "
            "log_notifications_message, log_notifications_timestamp) VALUES ('n1', %s, %s, %s)",
            (pid, message, TIME))
    assert text(await api.ok('<logsnotifications action="list"/>')) == ok_text(
        f'<log message="second\ufffd" node="n1" pid="13" timestamp="{TIME}"/>'
        f'<log message="first" node="n1" pid="12" timestamp="{TIME}"/>')
    assert len(await api.ok('<logsnotifications action="list" offset="1"/>')) == 1


async def test_open_to_users(api: Api) -> None:
    await add_logs(api, (3, "error"))
    bob = await api.add_user("bob")
    for group in ("logs", "logsapi", "logsnotifications"):
        await api.ok(f'<{group} action="list"/>', bob)
    assert len(await api.ok('<logs action="list"/>', bob)) == 1
