"""``user`` and ``users``: golden 32 and 33, every action and error, self-service rights of a
USER, events, audit log and the session's rights snapshot."""

from __future__ import annotations

import hashlib

import pytest
from admintest import add_workflow, ok_text, user_events
from apitest import Api, golden, text

CREATE = '<user action="create" name="{}" password="{}" profile="{}"/>'


async def stored_password(api: Api, login: str) -> str:
    row = await api.server.storage.query_one(
        "SELECT user_password FROM t_user WHERE user_login = %s", (login,))
    assert row is not None
    return row[0]


async def test_golden_transcripts(any_api: Api) -> None:
    """32 users list, 33 user get."""
    for prefix in ("32", "33"):
        request, expected = golden(prefix)
        assert text(await any_api(request)) == expected, prefix


async def test_create(api: Api) -> None:
    answer = await api.ok(CREATE.format("bob", "secret", "USER"))
    assert text(answer) == ok_text(**{"user-id": "2"})
    assert await stored_password(api, "bob") == hashlib.sha1(b"secret").hexdigest()
    bob = api.user("bob")
    assert (bob.id, bob.profile, bob.preferences, bob.rights) == (2, "USER", "", {})
    assert text(await api.ok('<users action="list"/>')) == ok_text(
        '<user id="1" name="admin" profile="ADMIN"/><user id="2" name="bob" profile="USER"/>')
    assert user_events(api) == [("USER_CREATED", 2)]
    assert await api.log_api() == [(1, 2, "User", "user", "create")]


@pytest.mark.parametrize(("query", "error"), [
    (CREATE.format("bad name", "p", "USER"), ("INVALID_PARAMETER", "Invalid user name")),
    (CREATE.format("", "p", "USER"), ("INVALID_PARAMETER", "Invalid user name")),
    (CREATE.format("x" * 33, "p", "USER"), ("INVALID_PARAMETER", "Invalid user name")),
    (CREATE.format("bob", "p", "user"),
     ("INVALID_PARAMETER", "Invalid profile, should be 'ADMIN' or 'USER'")),
    (CREATE.format("bob", "", "USER"), ("INVALID_PARAMETER", "Empty password")),
    ('<user action="create" name="bob" profile="USER"/>', ("INVALID_PARAMETER", "Empty password")),
    ('<user action="create" password="p" profile="USER"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<user action="create" name="bob" password="p"/>',
     ("MISSING_PARAMETER", "Missing 'profile' attribute")),
])
async def test_create_errors(api: Api, query: str, error: tuple[str, str]) -> None:
    assert await api.ko(query) == error
    assert sorted(u.name for u in api.server.users.by_id.values()) == ["admin"]
    assert api.events == []


async def test_name_of_32_characters(api: Api) -> None:
    await api.ok(CREATE.format("A-z_9" + "x" * 27, "p", "ADMIN"))


async def test_duplicate_login(any_api: Api) -> None:
    await any_api.ok(CREATE.format("bob", "p", "USER"))
    assert await any_api.ko(CREATE.format("bob", "p", "USER")) == (
        "SQL_ERROR", "Duplicate entry 'bob' for key 'user_login'")
    await any_api.ok(CREATE.format("carl", "p", "USER"))
    carl = any_api.user("carl").id  # MariaDB used up an id on the failed insert (errata 14)
    assert await any_api.ko(f'<user action="edit" id="{carl}" name="bob" profile="USER"/>') == (
        "SQL_ERROR", "Duplicate entry 'bob' for key 'user_login'")


async def test_get(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    await api.ok(CREATE.format("bob", "p", "USER"))
    await api.ok(f'<user action="grant" id="2" workflow_id="{wf}" edit="no" read="yes" '
                 'exec="yes" kill="0"/>')
    expected = ok_text('<user id="2" name="bob" preferences="" profile="USER">'
                       f'<right edit="no" exec="yes" kill="no" read="yes" workflow-id="{wf}"/>'
                       '</user>')
    assert text(await api.ok('<user action="get" id="2"/>')) == expected
    assert text(await api.ok('<user action="get" name="bob"/>')) == expected
    assert text(await api.ok('<user action="get" id="0" name="bob"/>')) == expected
    assert await api.ko('<user action="get" id="9"/>') == (
        "UNKNOWN_OBJECT", "Unknown User ID : 9")
    assert await api.ko('<user action="get" name="nobody"/>') == (
        "UKNOWN_OBJECT", "Unknown User name : nobody")
    assert await api.ko('<user action="get"/>') == (
        "MISSING_PARAMETER", "Missing 'id' or 'name' attribute")
    assert await api.ko('<user action="get" id="x"/>') == (
        "INVALID_INTEGER", "Attribute 'id' has invalid integer value")


async def test_edit(api: Api) -> None:
    await api.ok(CREATE.format("bob", "old", "USER"))
    await api.ok('<user action="edit" id="2" name="robert" profile="ADMIN" password=""/>')
    robert = api.user("robert")
    assert (robert.id, robert.profile) == (2, "ADMIN")
    assert api.server.users.lookup("bob") is None
    assert await stored_password(api, "robert") == hashlib.sha1(b"old").hexdigest()
    await api.ok('<user action="edit" name="robert" profile="USER" password="new"/>')
    assert await stored_password(api, "robert") == hashlib.sha1(b"new").hexdigest()
    assert api.user("robert").profile == "USER"
    assert user_events(api) == [("USER_CREATED", 2), ("USER_MODIFIED", 2),
                                ("USER_MODIFIED", 2)]
    assert [r[4] for r in await api.log_api()] == ["create", "edit", "edit"]


@pytest.mark.parametrize(("query", "error"), [
    ('<user action="edit" id="9" name="x" profile="USER"/>', ("UNKNOWN_USER", "User not found")),
    ('<user action="edit" name="nobody" profile="USER"/>',
     ("UKNOWN_OBJECT", "Unknown User name : nobody")),
    ('<user action="edit" id="1" name="bad name" profile="USER"/>',
     ("INVALID_PARAMETER", "Invalid user name")),
    ('<user action="edit" id="1" name="admin" profile="ROOT"/>',
     ("INVALID_PARAMETER", "Invalid profile, should be 'ADMIN' or 'USER'")),
    ('<user action="edit" id="1" profile="USER"/>',
     ("MISSING_PARAMETER", "Missing 'name' attribute")),
    ('<user action="edit" id="1" name="admin"/>',
     ("MISSING_PARAMETER", "Missing 'profile' attribute")),
])
async def test_edit_errors(api: Api, query: str, error: tuple[str, str]) -> None:
    assert await api.ko(query) == error
    assert (api.user("admin").id, api.user("admin").profile) == (1, "ADMIN")
    assert api.events == []


async def test_change_password(api: Api) -> None:
    await api.ok(CREATE.format("bob", "p", "USER"))
    await api.ok('<user action="change_password" name="bob" password="n1"/>')
    assert await stored_password(api, "bob") == hashlib.sha1(b"n1").hexdigest()
    assert await api.ko('<user action="change_password" id="2" password=""/>') == (
        "INVALID_PARAMETER", "Invalid password")
    assert await api.ko('<user action="change_password" id="2"/>') == (
        "MISSING_PARAMETER", "Missing 'password' attribute")
    assert await api.ko('<user action="change_password" id="9" password="x"/>') == (
        "UNKNOWN_USER", "User not found")
    assert user_events(api)[-1] == ("USER_MODIFIED", 2)
    assert [r[4] for r in await api.log_api()] == ["create", "change_password"]


async def test_update_preferences(any_api: Api) -> None:
    api = any_api
    await api.ok('<user action="update_preferences" id="1" preferences="{&quot;a&quot;:1}"/>')
    assert text(await api.ok('<user action="get" id="1"/>')) == ok_text(
        '<user id="1" name="admin" preferences="{&quot;a&quot;:1}" profile="ADMIN"/>')
    assert api.user().preferences == '{"a":1}'
    assert await api.ko('<user action="update_preferences" id="1"/>') == (
        "MISSING_PARAMETER", "Missing 'preferences' attribute")
    code, error = await api.ko('<user action="update_preferences" id="1" preferences="é"/>')
    assert code == "SQL_ERROR"
    assert error.startswith("Incorrect string value: '\\xC3\\xA9' for column ")
    assert "user_preferences" in error
    assert api.user().preferences == '{"a":1}'


async def test_grant_revoke_clear(any_api: Api) -> None:
    api = any_api
    wf1 = await add_workflow(api, "wf1")
    wf2 = await add_workflow(api, "wf2")
    await api.ok(CREATE.format("bob", "p", "USER"))
    grant = ('<user action="grant" name="bob" workflow_id="{}" edit="{}" read="yes" exec="no" '
             'kill="no"/>')
    await api.ok(grant.format(wf1, "no"))
    await api.ok(grant.format(wf1, "yes"))  # replaces the row
    await api.ok(grant.format(wf2, "no"))
    expected = (f'<right edit="yes" exec="no" kill="no" read="yes" workflow-id="{wf1}"/>'
                f'<right edit="no" exec="no" kill="no" read="yes" workflow-id="{wf2}"/>')
    assert text(await api.ok('<user action="list_rights" id="2"/>')) == ok_text(expected)
    bob = api.user("bob")
    assert bob.can(wf1, "edit") and not bob.can(wf2, "edit") and not bob.can(wf1, "exec")
    assert await api.ko(grant.format(99, "no")) == ("UNKNOWN_WORKFLOW", "Workflow not found")
    assert await api.ko('<user action="grant" id="2" workflow_id="1" edit="no" read="no" '
                        'exec="no"/>') == ("MISSING_PARAMETER", "Missing 'kill' attribute")
    assert await api.ko('<user action="grant" id="2" workflow_id="1" edit="true" read="no" '
                        'exec="no" kill="no"/>') == (
        "INVALID_BOOLEAN", "Attribute 'edit' has invalid boolean value")
    assert await api.ko(f'<user action="grant" id="9" workflow_id="{wf1}" edit="no" '
                        'read="no" exec="no" kill="no"/>') == ("UNKNOWN_USER", "User not found")

    await api.ok(f'<user action="revoke" id="2" workflow_id="{wf2}"/>')
    assert await api.ko(f'<user action="revoke" id="2" workflow_id="{wf2}"/>') == (
        "ALREADY_NO_RIGHTS", "No right found on that workflow")
    assert list(api.user("bob").rights) == [wf1]
    await api.ok('<user action="clear_rights" id="2"/>')
    assert api.user("bob").rights == {}
    assert text(await api.ok('<user action="list_rights" id="2"/>')) == ok_text()
    assert await api.ko('<user action="clear_rights" id="9"/>') == (
        "UNKNOWN_USER", "User not found")
    assert await api.ko('<user action="list_rights" id="9"/>') == (
        "UNKNOWN_OBJECT", "Unknown User ID : 9")
    assert [r[4] for r in await api.log_api()][-6:] == [
        "create", "grant", "grant", "grant", "revoke", "clear_rights"]
    assert user_events(api)[-1] == ("USER_MODIFIED", 2)


async def test_list_module_rights(api: Api) -> None:
    await api.ok(CREATE.format("bob", "p", "USER"))
    storage = api.server.storage
    for obj, access in ((7, 1), (3, 0)):
        await storage.execute(
            "INSERT INTO t_user_module (user_id, module_name, user_module_type, "
            "user_module_object, user_module_access) VALUES (2, 'storage', 'launcher', %s, %s)",
            (obj, access))
    await storage.execute(
        "INSERT INTO t_user_module (user_id, module_name, user_module_type, "
        "user_module_object, user_module_access) VALUES (2, 'other', 'launcher', 5, 1)")
    await api.server.users.reload()
    query = '<user action="list_module_rights" id="2" module="storage" type="launcher"/>'
    assert text(await api.ok(query)) == ok_text(
        '<right object-id="3" right="no"/><right object-id="7" right="yes"/>')
    assert await api.ko('<user action="list_module_rights" id="2" module="storage"/>') == (
        "MISSING_PARAMETER", "Missing 'type' attribute")


async def test_delete(api: Api) -> None:
    wf = await add_workflow(api, "wf")
    bob = await api.add_user("bob", {wf: "read"})
    await api.server.storage.execute(
        "INSERT INTO t_user_module (user_id, module_name, user_module_type, user_module_object, "
        "user_module_access) VALUES (%s, 'storage', 'launcher', 1, 1)", (bob.id,))
    await api.ok(f'<user action="delete" id="{bob.id}"/>')
    for table in ("t_user", "t_user_right", "t_user_module"):
        assert await api.server.storage.query(
            f"SELECT * FROM {table} WHERE user_id = %s", (bob.id,)) == [], table
    assert api.server.users.lookup("bob") is None
    assert user_events(api)[-1] == ("USER_REMOVED", bob.id)
    assert await api.log_api() == [(1, bob.id, "User", "user", "delete")]
    assert await api.ko(f'<user action="delete" id="{bob.id}"/>') == (
        "UNKNOWN_USER", "User not found")
    assert await api.ko('<user action="delete" name="bob"/>') == (
        "UKNOWN_OBJECT", "Unknown User name : bob")


async def test_actions(api: Api) -> None:
    assert await api.ko('<user action="nope"/>') == ("UNKNOWN_COMMAND", "Unknown command or action")
    assert await api.ko('<user/>') == ("MISSING_PARAMETER", "Missing 'action' attribute")
    assert await api.ko('<users action="get"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_user_profile_rights(api: Api) -> None:
    """A USER may only get, change_password and update_preferences itself."""
    bob = await api.add_user("bob")
    await api.add_user("carl")
    assert text(await api.ok('<user action="get" name="bob"/>', bob)) == ok_text(
        '<user id="2" name="bob" preferences="" profile="USER"/>')
    await api.ok('<user action="get" id="2"/>', bob)
    await api.ok('<user action="change_password" id="2" password="x"/>', bob)
    await api.ok('<user action="update_preferences" name="bob" preferences="{}"/>', bob)
    denied = ("INSUFFICIENT_RIGHTS", "insufficient rights")
    for action in ("get", "change_password", "update_preferences"):
        query = f'<user action="{action}" id="3" password="x" preferences="x"/>'
        assert await api.ko(query, bob) == denied, action
        assert await api.ko(query.replace('id="3"', 'id="99"'), bob) == denied, action
    # names are resolved first, like workflow names
    assert await api.ko('<user action="get" name="carl"/>', bob) == denied
    assert await api.ko('<user action="get" name="nobody"/>', bob) == (
        "UKNOWN_OBJECT", "Unknown User name : nobody")
    for query in (CREATE.format("eve", "p", "ADMIN"),
                  '<user action="edit" id="2" name="bob" profile="ADMIN"/>',
                  '<user action="delete" id="3"/>', '<user action="clear_rights" id="2"/>',
                  '<user action="list_rights" id="2"/>',
                  '<user action="list_module_rights" id="2" module="storage" type="launcher"/>',
                  '<user action="grant" id="2" workflow_id="1" edit="1" read="1" exec="1" '
                  'kill="1"/>', '<user action="revoke" id="2" workflow_id="1"/>',
                  '<users action="list"/>', '<users action="nope"/>'):
        assert await api.ko(query, bob) == denied, query
    assert await api.ko('<user action="nope"/>', bob) == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert api.user("bob").profile == "USER"


async def test_sessions_keep_their_rights(api: Api) -> None:
    """The session's User is a snapshot: a grant applies to new connections only."""
    wf = await add_workflow(api, "wf")
    bob = await api.add_user("bob")
    await api.ok(f'<user action="grant" id="{bob.id}" workflow_id="{wf}" edit="1" read="1" '
                 'exec="1" kill="1"/>')
    assert not bob.can(wf, "read")
    assert api.user("bob").can(wf, "read")
