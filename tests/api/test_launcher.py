"""``launcher`` and ``launchers`` (storage module, errata 14 and 20): definitions, the
per-launcher module right of USER profiles, launching without the workflow's exec right."""

from __future__ import annotations

import pytest
from admintest import WORKFLOW_WITH_PARAMETER, add_workflow, ok_text, user_events
from apitest import Api, Peer, reload_queries, text

FIRST_ID = 4  # the original's DDL starts t_launcher's auto-increment there
DENIED = ("INSUFFICIENT_RIGHTS", "insufficient rights")


def create(name: str, workflow_id: int = 1, parameters: str = '{"p":"v"}',
           extra: str = 'group="g" description="d"') -> str:
    return (f'<launcher action="create" name="{name}" workflow_id="{workflow_id}" '
            f"user=\"users/list\" host=\"hosts/list\" parameters='{parameters}' {extra}/>")


async def test_create_get_edit_delete(any_api: Api) -> None:
    api = any_api
    wf = await add_workflow(api, "wf")
    assert text(await api.ok(create("l1", wf))) == ok_text(**{"launcher-id": str(FIRST_ID)})
    await api.ok(create("l0", wf, "[]", extra=""))
    assert text(await api.ok(f'<launcher action="get" id="{FIRST_ID}"/>')) == ok_text(
        description="d", group="g", host="hosts/list", name="l1",
        parameters="{&quot;p&quot;:&quot;v&quot;}",
        user="users/list", workflow_id=str(wf))
    assert text(await api.ok('<launchers action="list"/>')) == ok_text(
        f'<launcher description="" group="" id="{FIRST_ID + 1}" name="l0"/>'
        f'<launcher description="d" group="g" id="{FIRST_ID}" name="l1"/>')
    await api.ok(f'<launcher action="edit" id="{FIRST_ID}" name="l2" workflow_id="{wf}" '
                 'user="u" host="h" parameters="{}"/>')
    launcher = api.server.launchers.get(FIRST_ID)
    assert (launcher.name, launcher.group, launcher.description, launcher.user,
            launcher.host, launcher.parameters) == ("l2", "", "", "u", "h", "{}")
    await api.ok(f'<launcher action="delete" id="{FIRST_ID + 1}"/>')
    assert [item.id for item in api.server.launchers.all()] == [FIRST_ID]
    assert user_events(api)[-4:] == [
        ("LAUNCHER_CREATED", FIRST_ID), ("LAUNCHER_CREATED", FIRST_ID + 1),
        ("LAUNCHER_MODIFIED", FIRST_ID), ("LAUNCHER_REMOVED", FIRST_ID + 1)]
    assert await api.log_api() == []


@pytest.mark.parametrize(("query", "error"), [
    (create("l1"), ("SQL_ERROR", "Duplicate entry 'l1' for key 'launcher_name'")),
    (create("n", parameters="{"), ("INVALID_PARAMETER", "Invalid json in parameters")),
    (create("n", parameters='["' + "x" * 252 + '"]'),
     ("INVALID_PARAMETER", "Invalid json in parameters")),
    (create("n", workflow_id=99), ("UNKNOWN_OBJECT", "Unknown Workflow ID : 99")),
    ('<launcher action="create" name="n" workflow_id="1" user="u" host="h"/>',
     ("MISSING_PARAMETER", "Missing 'parameters' attribute")),
    ('<launcher action="create" name="n" workflow_id="1" user="u" parameters="1"/>',
     ("MISSING_PARAMETER", "Missing 'host' attribute")),
    ('<launcher action="create" name="n" workflow_id="1" host="h" parameters="1"/>',
     ("MISSING_PARAMETER", "Missing 'user' attribute")),
    ('<launcher action="create" name="n" user="u" host="h" parameters="1"/>',
     ("MISSING_PARAMETER", "Missing 'workflow_id' attribute")),
    ('<launcher action="create" workflow_id="1" user="u" host="h" parameters="1"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    (create("n").replace("create", "edit").replace('name="n"', 'id="99" name="n"'),
     ("UNKNOWN_LAUNCHER", "Launcher not found")),
    ('<launcher action="delete" id="99"/>', ("UNKNOWN_LAUNCHER", "Launcher not found")),
    ('<launcher action="get" id="99"/>', ("UNKNOWN_OBJECT", "Unknown Launcher ID : 99")),
    ('<launcher action="nope"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<launchers action="get"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
])
async def test_errors(any_api: Api, query: str, error: tuple[str, str]) -> None:
    wf = await add_workflow(any_api, "wf")
    assert wf == 1
    await any_api.ok(create("l1"))
    events = list(any_api.events)
    assert await any_api.ko(query) == error
    assert any_api.events == events
    assert [item.name for item in any_api.server.launchers.all()] == ["l1"]


async def test_parameters_of_255_characters(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok(create("l", wf, '["' + "x" * 251 + '"]'))


async def test_grant_revoke(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok(create("l1", wf))
    await api.ok(create("l2", wf))
    bob = await api.add_user("bob")
    grant = f'<launcher action="grant" user_id="{bob.id}" launcher_id="{FIRST_ID + 1}"/>'
    await api.ok(grant)
    await api.ok(grant)  # idempotent
    assert text(await api.ok(f'<user action="list_module_rights" id="{bob.id}" '
                             'module="storage" type="launcher"/>')) == ok_text(
        f'<right object-id="{FIRST_ID + 1}" right="yes"/>')
    bob = api.user("bob")  # a new session sees the right
    assert [e.get("name") for e in await api.ok('<launchers action="list"/>', bob)] == ["l2"]
    await api.ok(f'<launcher action="get" id="{FIRST_ID + 1}"/>', bob)
    assert await api.ko(f'<launcher action="get" id="{FIRST_ID}"/>', bob) == DENIED
    assert await api.ko('<launcher action="get" id="99"/>', bob) == DENIED

    revoke = grant.replace("grant", "revoke")
    await api.ok(revoke)
    assert await api.ko(revoke) == ("ALREADY_NO_RIGHTS", "No right found on that workflow")
    assert len(await api.ok('<launchers action="list"/>', api.user("bob"))) == 0
    assert await api.ko(f'<launcher action="grant" user_id="99" launcher_id="{FIRST_ID}"/>') == (
        "UNKNOWN_OBJECT", "Unknown User ID : 99")
    assert await api.ko(f'<launcher action="grant" user_id="{bob.id}" launcher_id="99"/>') == (
        "UNKNOWN_OBJECT", "Unknown Launcher ID : 99")
    assert await api.ko(f'<launcher action="revoke" user_id="{bob.id}"/>') == (
        "MISSING_PARAMETER", "Missing 'launcher_id' attribute")
    assert user_events(api)[-3:] == [("USER_MODIFIED", bob.id)] * 3


async def test_delete_removes_the_rights(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok(create("l1", wf))
    bob = await api.add_user("bob")
    await api.ok(f'<launcher action="grant" user_id="{bob.id}" launcher_id="{FIRST_ID}"/>')
    await api.ok(f'<launcher action="delete" id="{FIRST_ID}"/>')
    assert api.user("bob").module_rights == {}
    assert await api.server.storage.query("SELECT * FROM t_user_module") == []


async def test_launch_needs_the_launcher_right_only(api: Api) -> None:
    """A USER without exec on the workflow launches through its launcher; the query goes on
    exactly as ``instance launch`` (here: refused for a missing workflow parameter)."""
    wf = await add_workflow(api, "wf", WORKFLOW_WITH_PARAMETER)
    await api.ok(create("l1", wf))
    bob = await api.add_user("bob")
    launch = f'<launcher action="launch" id="{FIRST_ID}" mode="asynchronous"/>'
    assert await api.ko(launch, bob) == DENIED
    await api.ok(f'<launcher action="grant" user_id="{bob.id}" launcher_id="{FIRST_ID}"/>')
    bob = api.user("bob")
    assert not bob.can(wf, "exec")
    code, _ = await api.ko(launch, bob)
    assert code == "INVALID_WORKFLOW_PARAMETERS"
    assert await api.ko(launch.replace("asynchronous", "later"), bob) == (
        "INVALID_PARAMETER", "mode must be 'synchronous' or 'asynchronous'")
    assert await api.ko('<launcher action="launch" id="99"/>') == (
        "UNKNOWN_OBJECT", "Unknown Launcher ID : 99")
    assert api.server.statistics.workflow_queries == 0  # errata 12


async def test_user_profile(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok(create("l1", wf))
    bob = await api.add_user("bob")
    for query in (create("l2", wf), '<launcher action="delete" id="4"/>',
                  create("l3", wf).replace("create", "edit").replace("<launcher ",
                                                                    '<launcher id="4" '),
                  f'<launcher action="grant" user_id="{bob.id}" launcher_id="4"/>',
                  f'<launcher action="revoke" user_id="{bob.id}" launcher_id="4"/>',
                  '<launcher action="nope"/>'):
        assert await api.ko(query, bob) == DENIED, query
    assert len(await api.ok('<launchers action="list"/>', bob)) == 0


async def test_changes_are_broadcast(clustered: tuple[Api, Peer]) -> None:
    api, peer = clustered
    wf = await add_workflow(api, "wf")
    await api.ok(create("l1", wf))
    await api.ok(f'<launcher action="grant" user_id="1" launcher_id="{FIRST_ID}"/>')
    await api.ok(f'<launcher action="delete" id="{FIRST_ID}"/>')
    await api.server.cluster.close()  # waits for the broadcasts in flight
    assert sorted(reload_queries(peer)) == ["launchers", "launchers", "users", "users"]
