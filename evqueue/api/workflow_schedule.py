"""``workflow_schedule`` and ``workflow_schedules`` — ADMIN (protocol.md §3.7, workflow.md §7,
errata 22). Every change reloads the scheduler here and on the other nodes."""

from __future__ import annotations

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.api_log import log_api
from evqueue.engine.workflow_schedules import ScheduleDefinition, WorkflowSchedule
from evqueue.protocol.errors import ApiError


def _definition(call: Call) -> ScheduleDefinition:
    p = call.params
    return ScheduleDefinition(
        workflow_id=p.uint("workflow_id"),
        node=p.str("node"),
        schedule=p.str("schedule"),
        onfailure=p.str("onfailure"),
        user=p.str("user", ""),
        host=p.str("host", ""),
        active=p.bool("active", True),
        comment=p.str("comment", ""),
        parameters=p.workflow_parameters(),
    )


def _append_parameters(elem: etree._Element, s: WorkflowSchedule) -> None:
    for name, value in s.parameters:
        etree.SubElement(elem, "parameter", name=name, value=value)


@handler("workflow_schedule")
async def workflow_schedule(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    schedules = call.server.workflow_schedules
    if action == "get":
        _get(call)
        return
    if action == "create":
        schedule_id = await schedules.create(_definition(call))
        call.response.set("schedule-id", str(schedule_id))
        event = "WORKFLOWSCHEDULE_CREATED"
    elif action in ("edit", "delete", "lock", "unlock"):
        schedule_id = call.params.uint("id")
        event = "WORKFLOWSCHEDULE_MODIFIED"
        if action == "edit":
            await schedules.edit(schedule_id, _definition(call))
        elif action == "delete":
            await schedules.delete(schedule_id)
            event = "WORKFLOWSCHEDULE_REMOVED"
        elif not await schedules.set_active(schedule_id, action == "unlock"):
            raise ApiError("UNKNOWN_WORKFLOW_SCHEDULE", "Workflow schedule not found")
    else:
        raise unknown_command()
    log_api(call, "WorkflowSchedule", schedule_id)
    await reload_modules(call, "scheduler")
    call.server.events.publish(event, schedule_id)


def _get(call: Call) -> None:
    schedule_id = call.params.uint("id")
    s = call.server.workflow_schedules.get(schedule_id)
    if s is None:
        raise ApiError("UNKNOWN_OBJECT", f"Unknown WorkflowSchedule ID : {schedule_id}")
    elem = etree.SubElement(call.response, "workflow_schedule", {
        "workflow_id": str(s.workflow_id), "schedule": s.schedule, "onfailure": s.onfailure,
        "user": s.user or "", "host": s.host or "", "active": str(int(s.active)),
        "comment": s.comment, "node": s.node,
    })
    _append_parameters(elem, s)


@handler("workflow_schedules")
async def workflow_schedules(call: Call) -> None:
    call.user.require_admin()
    if call.action != "list":
        raise unknown_command()
    display_parameters = call.params.bool("display_parameters", False)
    workflows = call.server.workflows
    for s in call.server.workflow_schedules.all():
        workflow = workflows.find(s.workflow_id)
        attributes = {
            "id": str(s.id), "node": s.node, "workflow_id": str(s.workflow_id),
            "schedule": s.schedule, "onfailure": s.onfailure, "active": str(int(s.active)),
            "comment": s.comment, "workflow_name": workflow.name if workflow else "",
            "workflow_group": workflow.group if workflow else "",
        }
        if s.user is not None:
            attributes["user"] = s.user
        if s.host is not None:
            attributes["host"] = s.host
        elem = etree.SubElement(call.response, "workflow_schedule", attributes)
        if display_parameters:
            _append_parameters(elem, s)
