"""``queue`` and ``queuepool`` (protocol.md §3.4, workflow.md §5.1, errata 13, 22).

Definitions live in ``t_queue`` (``queue get`` reads them there); every change reloads the live
pool (busy queues take the new limits at once) and tells the other nodes. ``queuepool list``
shows the live pool, dynamic sub-queues included. Both show the *configured* scheduler,
possibly ``default``.
"""

from __future__ import annotations

import re

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.api_log import log_api
from evqueue.protocol.errors import ApiError

_NAME = re.compile(r"[A-Za-z0-9_\-@.]{1,64}")
SCHEDULERS = ("prio", "fifo", "default")


def _append(parent: etree._Element, queue_id: int, name: str, concurrency: int,
            scheduler: str, dynamic: bool) -> None:
    etree.SubElement(parent, "queue", id=str(queue_id), name=name,
                     concurrency=str(concurrency), scheduler=scheduler,
                     dynamic="yes" if dynamic else "no")


def _unknown_queue() -> ApiError:
    return ApiError("UNKNOWN_QUEUE", "Unable to find queue")


@handler("queue")
async def queue(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    if action == "get":
        row = await call.server.storage.query_one(
            "SELECT queue_id, queue_name, queue_concurrency, queue_scheduler, queue_dynamic "
            "FROM t_queue WHERE queue_id = %s", (call.params.uint("id"),))
        if row is None:
            raise ApiError("UNKNOWN_OBJECT", "Unable to find queue")
        _append(call.response, *row)
        return
    if action in ("create", "edit"):
        queue_id = await _create_edit(call, action)
    elif action == "delete":
        queue_id = call.params.uint("id")
        result = await call.server.storage.execute(
            "DELETE FROM t_queue WHERE queue_id = %s", (queue_id,))
        if not result.rowcount:
            raise _unknown_queue()
    else:
        raise unknown_command()
    log_api(call, "Queue", queue_id)
    await reload_modules(call, "queuepool")
    event = {"create": "QUEUE_CREATED", "edit": "QUEUE_MODIFIED", "delete": "QUEUE_REMOVED"}
    call.server.events.publish(event[action], queue_id)


async def _create_edit(call: Call, action: str) -> int:
    p = call.params
    name = p.str("name")
    concurrency = p.int("concurrency")
    scheduler = p.str("scheduler")
    dynamic = p.bool("dynamic")
    queue_id = p.uint("id") if action == "edit" else 0
    if not _NAME.fullmatch(name):
        raise ApiError("INVALID_PARAMETER", "Invalid queue name")
    if concurrency <= 0:
        raise ApiError("INVALID_PARAMETER", "Invalid concurrency, must be greater than 0")
    if scheduler not in SCHEDULERS:
        raise ApiError("INVALID_PARAMETER",
                       "Invalid scheduler name, must be 'prio', 'fifo' or 'default'")
    storage = call.server.storage
    values = (name, concurrency, scheduler, int(dynamic))
    if action == "create":
        result = await storage.execute(
            "INSERT INTO t_queue (queue_name, queue_concurrency, queue_scheduler, queue_dynamic) "
            "VALUES (%s, %s, %s, %s)", values)
        call.response.set("queue-id", str(result.lastrowid))
        return result.lastrowid
    result = await storage.execute(
        "UPDATE t_queue SET queue_name = %s, queue_concurrency = %s, queue_scheduler = %s, "
        "queue_dynamic = %s WHERE queue_id = %s", (*values, queue_id))
    if not result.rowcount:
        raise _unknown_queue()
    return queue_id


@handler("queuepool")
async def queuepool(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    for q in call.server.queues.definitions():
        _append(call.response, q.id, q.name, q.concurrency, q.scheduler, q.dynamic)
