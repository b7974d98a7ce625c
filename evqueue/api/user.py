"""``user`` and ``users`` (protocol.md §3.9, ops.md §7, errata 14, 17 and 22).

The target user is named by ``id`` or, when ``id`` is absent or 0, by ``name``. As for
workflows, a name is resolved before the rights check (an unknown name is ``UKNOWN_OBJECT``
for everyone) and an id after it, so a USER cannot probe other users' ids. A USER may only
``get``, ``change_password`` and ``update_preferences`` itself; the rest is ADMIN-only.
Sessions keep the rights they authenticated with (the original's snapshot): changes reload
the cache for new connections.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.api_log import log_api
from evqueue.engine.users import RIGHTS, User
from evqueue.protocol.auth import sha1_hex
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Tx

_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
PROFILES = ("ADMIN", "USER")


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _target_id(call: Call) -> int:
    user_id = call.params.int("id", 0)
    if user_id:
        return user_id
    name = call.params.str("name", "")
    if not name:
        raise ApiError("MISSING_PARAMETER", "Missing 'id' or 'name' attribute")
    return call.server.users.get_by_name(name).id


def _mutation_target(call: Call) -> User:
    """The existing target of a mutation (an unknown id is ``UNKNOWN_USER``)."""
    user = call.server.users.by_id.get(_target_id(call))
    if user is None:
        raise ApiError("UNKNOWN_USER", "User not found")
    return user


def _self_service_target(call: Call) -> int:
    """Target id of the actions a USER may run on itself."""
    user_id = _target_id(call)
    if not call.user.is_admin and call.user.id != user_id:
        raise ApiError("INSUFFICIENT_RIGHTS", "insufficient rights")
    return user_id


def _check_definition(name: str, profile: str) -> None:
    if not _NAME.fullmatch(name):
        raise ApiError("INVALID_PARAMETER", "Invalid user name")
    if profile not in PROFILES:
        raise ApiError("INVALID_PARAMETER", "Invalid profile, should be 'ADMIN' or 'USER'")


def _rights(parent: etree._Element, user: User) -> None:
    """One ``<right>`` per workflow the user has a row for, by workflow id."""
    for workflow_id, r in sorted(user.rights.items()):
        etree.SubElement(parent, "right", {"workflow-id": str(workflow_id),
                                           **{k: _yes_no(getattr(r, k)) for k in RIGHTS}})


@handler("user")
async def user(call: Call) -> None:
    action = call.action
    if action == "get":
        target = call.server.users.get(_self_service_target(call))
        el = etree.SubElement(call.response, "user", id=str(target.id), name=target.name,
                              profile=target.profile, preferences=target.preferences)
        _rights(el, target)
        return
    if action in _READS:
        call.user.require_admin()
        _READS[action](call, call.server.users.get(_target_id(call)))
        return
    mutation = _MUTATIONS.get(action)
    if mutation is None:
        raise unknown_command()
    if action not in _SELF_SERVICE:
        call.user.require_admin()
    user_id = await mutation(call)
    event = {"create": "USER_CREATED", "delete": "USER_REMOVED"}.get(action, "USER_MODIFIED")
    log_api(call, "User", user_id)
    await reload_modules(call, "users")
    call.server.events.publish(event, user_id)


def _list_rights(call: Call, target: User) -> None:
    _rights(call.response, target)


def _list_module_rights(call: Call, target: User) -> None:
    module = call.params.str("module")
    type_ = call.params.str("type")
    for (m, t, object_id), access in sorted(target.module_rights.items()):
        if (m, t) == (module, type_):
            etree.SubElement(call.response, "right",
                             {"object-id": str(object_id), "right": _yes_no(access)})


async def _create(call: Call) -> int:
    p = call.params
    name = p.str("name")
    password = p.str("password", "")
    profile = p.str("profile")
    _check_definition(name, profile)
    if not password:
        raise ApiError("INVALID_PARAMETER", "Empty password")
    result = await call.server.storage.execute(
        "INSERT INTO t_user (user_login, user_password, user_profile, user_preferences) "
        "VALUES (%s, %s, %s, %s)", (name, sha1_hex(password), profile, ""))
    call.response.set("user-id", str(result.lastrowid))
    return result.lastrowid


async def _edit(call: Call) -> int:
    p = call.params
    name = p.str("name")
    profile = p.str("profile")
    password = p.str("password", "")
    _check_definition(name, profile)
    target = _mutation_target(call)
    if password:
        sql = ("UPDATE t_user SET user_login = %s, user_profile = %s, user_password = %s "
               "WHERE user_id = %s")
        values: tuple[object, ...] = (name, profile, sha1_hex(password), target.id)
    else:
        sql = "UPDATE t_user SET user_login = %s, user_profile = %s WHERE user_id = %s"
        values = (name, profile, target.id)
    await call.server.storage.execute(sql, values)
    return target.id


async def _change_password(call: Call) -> int:
    password = call.params.str("password")
    user_id = _self_service_target(call)
    if not password:
        raise ApiError("INVALID_PARAMETER", "Invalid password")
    return await _update_self(call, user_id, "user_password", sha1_hex(password))


async def _update_preferences(call: Call) -> int:
    preferences = call.params.str("preferences")
    return await _update_self(call, _self_service_target(call), "user_preferences", preferences)


async def _update_self(call: Call, user_id: int, column: str, value: str) -> int:
    result = await call.server.storage.execute(
        f"UPDATE t_user SET {column} = %s WHERE user_id = %s", (value, user_id))
    if not result.rowcount:
        raise ApiError("UNKNOWN_USER", "User not found")
    return user_id


async def _delete(call: Call) -> int:
    user_id = _mutation_target(call).id

    def delete(tx: Tx) -> None:
        for table in ("t_user", "t_user_right", "t_user_module"):
            tx.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))

    await call.server.storage.transaction(delete)
    return user_id


async def _clear_rights(call: Call) -> int:
    user_id = _mutation_target(call).id
    await call.server.storage.execute("DELETE FROM t_user_right WHERE user_id = %s", (user_id,))
    return user_id


async def _grant(call: Call) -> int:
    p = call.params
    workflow_id = p.int("workflow_id")
    flags = [int(p.bool(right)) for right in RIGHTS]
    user_id = _mutation_target(call).id
    if not call.server.workflows.exists(workflow_id):
        raise ApiError("UNKNOWN_WORKFLOW", "Workflow not found")

    def grant(tx: Tx) -> None:
        tx.execute("DELETE FROM t_user_right WHERE user_id = %s AND workflow_id = %s",
                   (user_id, workflow_id))
        tx.execute(
            "INSERT INTO t_user_right (user_id, workflow_id, user_right_edit, user_right_read, "
            "user_right_exec, user_right_kill) VALUES (%s, %s, %s, %s, %s, %s)",
            (user_id, workflow_id, *flags))

    await call.server.storage.transaction(grant)
    return user_id


async def _revoke(call: Call) -> int:
    workflow_id = call.params.int("workflow_id")
    user_id = _mutation_target(call).id
    result = await call.server.storage.execute(
        "DELETE FROM t_user_right WHERE user_id = %s AND workflow_id = %s",
        (user_id, workflow_id))
    if not result.rowcount:
        raise ApiError("ALREADY_NO_RIGHTS", "No right found on that workflow")
    return user_id


_READS: dict[str, Callable[[Call, User], None]] = {
    "list_rights": _list_rights, "list_module_rights": _list_module_rights,
}
_MUTATIONS: dict[str, Callable[[Call], Awaitable[int]]] = {
    "create": _create, "edit": _edit, "change_password": _change_password,
    "update_preferences": _update_preferences, "delete": _delete,
    "clear_rights": _clear_rights, "grant": _grant, "revoke": _revoke,
}
_SELF_SERVICE = frozenset({"change_password", "update_preferences"})


@handler("users")
async def users(call: Call) -> None:
    call.user.require_admin()
    if call.action != "list":
        raise unknown_command()
    for u in sorted(call.server.users.by_id.values(), key=lambda u: u.name):
        etree.SubElement(call.response, "user", id=str(u.id), name=u.name, profile=u.profile)
