"""``notification``, ``notifications``, ``notification_type``, ``notification_types``
(protocol.md §3.10, ops.md §6, errata 2, 3, 4, 9, 10, 18 and 22).

Everything is ADMIN except ``notifications list``. Events carry object id 0, and none of
these actions is written to the API audit log, like the original. Notification
``parameters`` and type ``content`` are decoded leniently (invalid base64 is stored as
empty, errata 9); only the plugin ``zip`` is checked. Base64 written back is canonical.
"""

from __future__ import annotations

import asyncio
import base64

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.params import decode_base64
from evqueue.api.workflow import reload_modules
from evqueue.engine.notifications import read_plugin
from evqueue.protocol.errors import ApiError

SYNC_QUERY = "<control action='syncnotifications' notify='no' />"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _lenient_base64(value: str) -> bytes:
    return decode_base64(value) or b""


def _parameters(call: Call) -> str:
    """The notification's JSON configuration, stored as text."""
    try:
        return _lenient_base64(call.params.str("parameters")).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("INVALID_PARAMETER", "Parameters are not valid UTF-8") from None


@handler("notification")
async def notification(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    p = call.params
    notifications = call.server.notifications
    if action == "get":
        n = notifications.get(p.int("id"))
        etree.SubElement(call.response, "notification", type_id=str(n.type_id), name=n.name,
                         subscribe_all="yes" if n.subscribe_all else "no",
                         parameters=_b64(n.parameters.encode("utf-8")))
        return
    if action == "create":
        await notifications.create(p.int("type_id"), p.str("name"), _parameters(call),
                                   p.bool("subscribe_all", False))
    elif action == "edit":
        await notifications.edit(p.int("id"), p.int("type_id"), p.str("name"),
                                 _parameters(call), p.bool("subscribe_all", False))
    elif action == "delete":
        await notifications.delete(p.int("id"))
    else:
        raise unknown_command()
    # bindings to workflows may have changed too
    await reload_modules(call, "notifications", "workflows")
    event = {"create": "NOTIFICATION_CREATED", "edit": "NOTIFICATION_MODIFIED",
             "delete": "NOTIFICATION_REMOVED"}
    call.server.events.publish(event[action])


@handler("notifications")
async def notifications(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    notifications = call.server.notifications
    for n in notifications.all(call.params.str("scope", "*")):
        etree.SubElement(call.response, "notification", id=str(n.id), type_id=str(n.type_id),
                         name=n.name, scope=notifications.scope_of(n))


@handler("notification_type")
async def notification_type(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    p = call.params
    server = call.server
    notifications = server.notifications
    if action == "get":
        t = notifications.get_type(p.int("id"))
        etree.SubElement(call.response, "notification_type", scope=t.scope, name=t.name,
                         description=t.description)
        call.response.append(t.manifest_document())
    elif action == "get_conf":
        conf = notifications.get_conf(p.int("id"))
        etree.SubElement(call.response, "conf", content=_b64(conf))
    elif action == "set_conf":
        await notifications.set_conf(p.int("id"), _lenient_base64(p.str("content", "")))
        await reload_modules(call, "notifications")
    elif action == "register":
        plugin = await asyncio.to_thread(read_plugin, p.base64("zip"))
        await notifications.register(plugin)
        await _types_changed(call, "NOTIFICATION_TYPE_CREATED", "notifications")
    elif action == "unregister":
        await notifications.unregister(p.int("id"))
        await _types_changed(call, "NOTIFICATION_TYPE_REMOVED", "notifications", "workflows")
        server.events.publish("WORKFLOW_MODIFIED")
    else:
        raise unknown_command()


async def _types_changed(call: Call, event: str, *modules: str) -> None:
    """Reload here and on the other nodes, which also rewrite their plugin binaries."""
    await reload_modules(call, *modules)
    call.server.cluster.notify(SYNC_QUERY)
    call.server.events.publish(event)


@handler("notification_types")
async def notification_types(call: Call) -> None:
    call.user.require_admin()
    if call.action != "list":
        raise unknown_command()
    for t in call.server.notifications.types():
        etree.SubElement(call.response, "notification_type", id=str(t.id), name=t.name,
                         scope=t.scope, description=t.description, binary=t.name)
