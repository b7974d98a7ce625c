"""``logs``, ``logsapi``, ``logsnotifications`` (protocol.md §3.12, ops.md §5): newest first,
``limit`` (default 100) and ``offset``. Open to any user, like the original (the front-end
reads them as a normal user)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.config import LOG_LEVELS
from evqueue.log import LEVEL_NAMES
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import sanitize_xml_text
from evqueue.storage.base import Row

if TYPE_CHECKING:
    from evqueue.server import Server


async def _rows(call: Call, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
    """One page of a log table; pending group-committed writes are flushed first so that a
    client sees the rows of its own previous actions."""
    p = call.params
    storage = call.server.storage
    await storage.flush()
    return await storage.query(f"{sql} LIMIT %s OFFSET %s",
                               (*params, p.int("limit", 100), p.int("offset", 0)))


@handler("logs", "logsapi", "logsnotifications")
async def logs(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    await _LISTS[call.group](call)


async def _logs(call: Call) -> None:
    max_level = LOG_LEVELS.get(call.params.str("filter_level", "LOG_DEBUG"))
    if max_level is None:
        raise ApiError(None, "Unknown filter level")
    for node, level, message, timestamp in await _rows(
        call,
        "SELECT node_name, log_level, log_message, log_timestamp FROM t_log "
        "WHERE log_level <= %s ORDER BY log_id DESC",
        (max_level,),
    ):
        name = LEVEL_NAMES[level] if 0 <= level < len(LEVEL_NAMES) else str(level)
        etree.SubElement(call.response, "log", node=node, level=name,
                         message=sanitize_xml_text(message or ""), timestamp=timestamp)


def _workflow_schedule_name(server: Server, schedule_id: int) -> str | None:
    schedule = server.workflow_schedules.get(schedule_id)
    return server.workflows.name_of(schedule.workflow_id) if schedule else None


def _retry_schedule_name(server: Server, schedule_id: int) -> str | None:
    try:
        return server.retry_schedules.get(schedule_id).name
    except ApiError:
        return None


def _queue_name(server: Server, queue_id: int) -> str | None:
    queue = server.queues.get_by_id(queue_id)
    return queue.name if queue else None


#: object type → name of the object from the in-memory definitions, None if it is gone
_NAMES: dict[str, Callable[[Server, int], str | None]] = {
    "Workflow": lambda s, i: getattr(s.workflows.find(i), "name", None),
    "WorkflowSchedule": _workflow_schedule_name,
    "RetrySchedule": _retry_schedule_name,
    "User": lambda s, i: getattr(s.users.by_id.get(i), "name", None),
    "Tag": lambda s, i: getattr(s.tags.find(i), "label", None),
    "Queue": _queue_name,
}


async def _logsapi(call: Call) -> None:
    server = call.server
    for node, user_id, object_id, object_type, group, action, timestamp in await _rows(
        call,
        "SELECT node_name, user_id, log_api_object_id, log_api_object_type, log_api_group, "
        "log_api_action, log_api_timestamp FROM t_log_api ORDER BY log_api_id DESC",
    ):
        user = server.users.by_id.get(user_id)
        resolve = _NAMES.get(object_type)
        name = resolve(server, object_id) if resolve else None
        etree.SubElement(call.response, "log", node=node, user=user.name if user else "",
                         object_id=str(object_id), object_type=object_type,
                         object_name=name or "unknown", group=group, action=action,
                         timestamp=timestamp)


async def _logsnotifications(call: Call) -> None:
    for node, pid, message, timestamp in await _rows(
        call,
        "SELECT node_name, log_notifications_pid, log_notifications_message, "
        "log_notifications_timestamp FROM t_log_notifications "
        "ORDER BY log_notifications_id DESC",
    ):
        etree.SubElement(call.response, "log", node=node, pid=str(pid),
                         message=sanitize_xml_text(message or ""), timestamp=timestamp)


_LISTS: dict[str, Callable[[Call], Awaitable[None]]] = {
    "logs": _logs, "logsapi": _logsapi, "logsnotifications": _logsnotifications,
}
