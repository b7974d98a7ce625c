"""``retry_schedule`` (ADMIN) and ``retry_schedules`` (any user) (protocol.md §3.8, errata 1,
14, 22). The stored ``<schedule>`` is answered re-serialised with ``id`` and ``name`` added."""

from __future__ import annotations

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.api_log import log_api
from evqueue.engine.retry_schedules import RetrySchedule, check_name


def _element(s: RetrySchedule) -> etree._Element:
    doc = s.document()
    doc.set("id", str(s.id))
    doc.set("name", s.name)
    return doc


def _definition(call: Call) -> tuple[str, bytes]:
    """``name`` and decoded ``content``; the name is checked before the base64."""
    p = call.params
    name = p.str("name")
    p.str("content")  # missing: reported before a bad name
    check_name(name)
    return name, p.base64("content")


@handler("retry_schedule")
async def retry_schedule(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    p = call.params
    schedules = call.server.retry_schedules
    if action == "get":
        call.response.append(_element(schedules.get(p.uint("id"))))
        return
    if action == "create":
        schedule_id = await schedules.create(*_definition(call))
        call.response.set("retry-schedule-id", str(schedule_id))
        event_object = 0  # the original publishes its creation with object id 0
    elif action == "edit":
        schedule_id = p.uint("id")
        await schedules.edit(schedule_id, *_definition(call))
        event_object = schedule_id
    elif action == "delete":
        schedule_id = p.uint("id")
        await schedules.delete(schedule_id)
        event_object = schedule_id
    else:
        raise unknown_command()
    log_api(call, "RetrySchedule", schedule_id)
    await reload_modules(call, "retry_schedules")
    event = {"create": "RETRYSCHEDULE_CREATED", "edit": "RETRYSCHEDULE_MODIFIED",
             "delete": "RETRYSCHEDULE_REMOVED"}
    call.server.events.publish(event[action], event_object)


@handler("retry_schedules")
async def retry_schedules(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    for s in call.server.retry_schedules.all():
        call.response.append(_element(s))
