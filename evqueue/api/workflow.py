"""``workflow`` and ``workflows`` (protocol.md §3.5, workflow.md §1.5, errata 1, 14, 15, 22).

A workflow is named by ``id`` or, when ``id`` is absent or 0, by ``name``; the name is resolved
before the rights check (an unknown name is ``UKNOWN_OBJECT`` for everyone), the id after it
(a USER asking for an unknown id gets ``INSUFFICIENT_RIGHTS``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.engine.api_log import log_api
from evqueue.engine.workflows import Workflow, check_name
from evqueue.protocol.errors import ApiError


async def reload_modules(call: Call, *modules: str) -> None:
    """Reload what a definition change touched, here and on the other nodes of the cluster."""
    for module in modules:
        await call.server.reload(module)
    await call.server.cluster.reload_everywhere(modules)


def _attributes(w: Workflow) -> dict[str, str]:
    return {"id": str(w.id), "name": w.name, "group": w.group, "comment": w.comment}


def _workflow_id(call: Call) -> int:
    workflow_id = call.params.uint("id", 0)
    if workflow_id:
        return workflow_id
    name = call.params.str("name", "")
    if not name:
        raise ApiError("MISSING_PARAMETER", "Missing 'id' or 'name' attribute")
    return call.server.workflows.get_by_name(name).id


def _definition(call: Call) -> tuple[str, bytes, str, str]:
    """``name``, decoded ``content``, ``group``, ``comment`` of create/edit; the name is
    checked before the base64 is decoded (workflow.md §1.5)."""
    p = call.params
    name = p.str("name")
    p.str("content")  # missing: reported before a bad name
    group, comment = p.str("group", ""), p.str("comment", "")
    check_name(name)
    return name, p.base64("content"), group, comment


@handler("workflow")
async def workflow(call: Call) -> None:
    action = call.action
    if action == "create":
        await _create(call)
        return
    fn = _ACTIONS.get(action)
    if fn is None:
        raise unknown_command()
    await fn(call, _workflow_id(call))


async def _create(call: Call) -> None:
    call.user.require_admin()
    server = call.server
    workflow_id = await server.workflows.create(*_definition(call))
    call.response.set("workflow-id", str(workflow_id))
    log_api(call, "Workflow", workflow_id)
    await reload_modules(call, "workflows")
    server.events.publish("WORKFLOW_CREATED", workflow_id)
    server.events.publish("WORKFLOW_SUBSCRIBED", workflow_id)


async def _get(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "read")
    w = call.server.workflows.get(workflow_id)
    etree.SubElement(call.response, "workflow", _attributes(w)).append(w.document())


async def _edit(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "edit")
    await call.server.workflows.edit(workflow_id, *_definition(call))
    log_api(call, "Workflow", workflow_id)
    await reload_modules(call, "workflows")
    call.server.events.publish("WORKFLOW_MODIFIED", workflow_id)


async def _delete(call: Call, workflow_id: int) -> None:
    call.user.require_admin()
    await call.server.workflows.delete(workflow_id)
    log_api(call, "Workflow", workflow_id)
    # its schedules and user rights went with it
    await reload_modules(call, "workflows", "scheduler", "users")
    call.server.events.publish("WORKFLOW_REMOVED", workflow_id)


async def _list_notifications(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "read")
    for notification_id in call.server.workflows.get(workflow_id).notifications:
        etree.SubElement(call.response, "notification", id=str(notification_id))


async def _subscribe(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "edit")
    notification_id = call.params.uint("notification_id")
    await call.server.workflows.subscribe(workflow_id, notification_id)
    await _subscriptions_changed(call, workflow_id, "WORKFLOW_SUBSCRIBED")


async def _unsubscribe(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "edit")
    notification_id = call.params.uint("notification_id")
    await call.server.workflows.unsubscribe(workflow_id, notification_id)
    await _subscriptions_changed(call, workflow_id, "WORKFLOW_UNSUBSCRIBED")


async def _clear(call: Call, workflow_id: int) -> None:
    call.user.require(workflow_id, "edit")
    await call.server.workflows.clear_notifications(workflow_id)
    await _subscriptions_changed(call, workflow_id, "WORKFLOW_UNSUBSCRIBED")


async def _subscriptions_changed(call: Call, workflow_id: int, event: str) -> None:
    log_api(call, "Workflow", workflow_id)
    await reload_modules(call, "workflows")
    call.server.events.publish(event, workflow_id)


_ACTIONS: dict[str, Callable[[Call, int], Awaitable[None]]] = {
    "get": _get, "edit": _edit, "delete": _delete, "list_notifications": _list_notifications,
    "subscribe_notification": _subscribe, "unsubscribe_notification": _unsubscribe,
    "clear_notifications": _clear,
}


@handler("workflows")
async def workflows(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    full = call.params.bool("full", False)
    for w in call.server.workflows.all():
        if not call.user.can(w.id, "read"):
            continue
        attributes = {**_attributes(w), "lastcommit": w.lastcommit}
        if full:
            doc = w.document()
            doc.attrib.update(attributes)
            call.response.append(doc)
        else:
            etree.SubElement(call.response, "workflow", attributes)
