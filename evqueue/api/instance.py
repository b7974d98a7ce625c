"""``instance`` and ``instances`` (protocol.md §3.6, errata 16 and 22)."""

from __future__ import annotations

import asyncio

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.engine.workflows import Workflow
from evqueue.protocol.errors import ApiError


@handler("instance")
async def instance(call: Call) -> None:
    action = call.action
    if action == "launch":
        await _launch(call)
        return
    fn = _ACTIONS.get(action)
    if fn is None:
        raise unknown_command()
    await fn(call, call.params.int("id"))


async def _launch(call: Call) -> None:
    server = call.server
    name = call.params.str("name")
    if server.workflows.find_by_name(name) is None:
        # created on another node of the cluster a moment ago: don't wait for its broadcast
        await server.workflows.reload()
    workflow = server.workflows.get_by_name(name)
    # counted once the workflow is known: failed launches count, unknown names do not
    # (golden 13/23, errata 12)
    server.statistics.workflow_queries += 1
    call.user.require(workflow.id, "exec")
    await launch(call, workflow)


async def launch(call: Call, workflow: Workflow) -> None:
    """Launch ``workflow`` with the request's mode, host, user, comment and parameters
    (shared with ``launcher launch``, which has its own rights check)."""
    server = call.server
    p = call.params
    mode = p.str("mode", "asynchronous")
    if mode not in ("synchronous", "asynchronous"):
        raise ApiError("INVALID_PARAMETER", "mode must be 'synchronous' or 'asynchronous'")
    timeout = p.int("timeout", 0)
    host = p.str("host", "")
    inst = await server.instances.launch(
        workflow, p.workflow_parameters(), host=host, user=p.str("user", "") if host else "",
        comment=p.str("comment", ""),
    )
    call.response.set("workflow-instance-id", str(inst.id))
    if mode == "synchronous" and not await _wait(call, inst.done, timeout):
        call.response.set("wait", "timedout")


async def _wait(call: Call, done: asyncio.Future, timeout: int) -> bool:
    """Wait for an instance end; False on timeout. Counts the client as a waiting thread."""
    stats = call.server.statistics
    stats.waiting_threads += 1
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout or None)
        return True
    except TimeoutError:
        return False
    finally:
        stats.waiting_threads -= 1


async def _query(call: Call, instance_id: int) -> None:
    server = call.server
    server.statistics.workflow_status_queries += 1
    workflow_id, doc = await server.instances.document(instance_id)
    call.user.require(workflow_id, "read")
    call.response.append(doc)


async def _wait_action(call: Call, instance_id: int) -> None:
    inst = call.server.instances.active_or_error(instance_id, "Unknown instance ID")
    call.user.require(inst.workflow_id, "read")
    if not await _wait(call, inst.done, call.params.int("timeout", 0)):
        raise ApiError("TIMED_OUT", "Wait timed out")


async def _cancel(call: Call, instance_id: int) -> None:
    server = call.server
    server.statistics.workflow_cancel_queries += 1
    inst = server.instances.active_or_error(instance_id, "Unknown workflow instance")
    call.user.require(inst.workflow_id, "kill")
    inst.cancel()


async def _killtask(call: Call, instance_id: int) -> None:
    inst = call.server.instances.active_or_error(instance_id, "Unknown workflow instance")
    call.user.require(inst.workflow_id, "kill")
    await inst.kill_task(call.params.int("pid"))


async def _retrytask(call: Call, instance_id: int) -> None:
    """Extension: run a failed (or retry-pending) task of a running instance again now."""
    inst = call.server.instances.active_or_error(instance_id, "Unknown workflow instance")
    call.user.require(inst.workflow_id, "exec")
    inst.retry_task(inst.task(call.params.int("evqid")))


async def _skiptask(call: Call, instance_id: int) -> None:
    """Extension: mark a queued, retry-pending or failed task SKIPPED so its job goes on."""
    inst = call.server.instances.active_or_error(instance_id, "Unknown workflow instance")
    call.user.require(inst.workflow_id, "kill")
    inst.skip_task(inst.task(call.params.int("evqid")))


async def _delete(call: Call, instance_id: int) -> None:
    call.user.require_admin()
    await call.server.instances.delete(instance_id)


async def _tag(call: Call, instance_id: int) -> None:
    tag_id = call.params.int("tag_id")
    workflow_id = await call.server.instances.workflow_of(instance_id)
    call.user.require_any(workflow_id, "exec", "edit")
    await call.server.instances.tag(instance_id, tag_id)


async def _untag(call: Call, instance_id: int) -> None:
    tag_id = call.params.int("tag_id")
    workflow_id = await call.server.instances.workflow_of(instance_id)
    call.user.require_any(workflow_id, "exec", "edit")
    await call.server.instances.untag(instance_id, tag_id)


async def _debugresume(call: Call, instance_id: int) -> None:
    workflow_id = await call.server.instances.workflow_of(instance_id, missing_ok=True)
    call.user.require(workflow_id, "read", "exec")
    inst = await call.server.instances.debug_resume(instance_id)
    call.response.set("workflow-instance-id", str(inst.id))


async def _migrate(call: Call, instance_id: int) -> None:
    call.user.require_admin()
    await call.server.instances.migrate(instance_id)


_ACTIONS = {
    "query": _query, "wait": _wait_action, "cancel": _cancel, "killtask": _killtask,
    "delete": _delete, "tag": _tag, "untag": _untag, "debugresume": _debugresume,
    "migrate": _migrate, "retrytask": _retrytask, "skiptask": _skiptask,
}


@handler("instances")
async def instances(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    p = call.params
    filters = {name: p.str(name, "") for name in (
        "filter_node", "filter_workflow", "filter_launched_from", "filter_launched_until",
        "filter_ended_from", "filter_ended_until", "filter_status",
    )}
    filter_id = p.int("filter_id", 0)
    filter_tag_id = p.int("filter_tag_id", 0)
    filter_schedule_id = p.int("filter_schedule_id", 0)
    filter_error = p.bool("filter_error", False)
    parameters = {k: v for k, v in p.prefixed("parameter_").items() if v}
    for name, value in p.workflow_parameters():
        if value:
            parameters.setdefault(name, value)
    groupby = p.str("groupby", "")
    rows, items = await call.server.instances.list(
        user=call.user, filter_id=filter_id, filter_tag_id=filter_tag_id,
        filter_schedule_id=filter_schedule_id, filter_error=filter_error,
        parameters=parameters, custom=p.prefixed("customattribute_"), groupby=groupby,
        limit=p.int("limit", 30), offset=p.int("offset", 0), **filters,
    )
    call.response.set("rows", str(rows))
    for attrs, tags in items:
        el = etree.SubElement(call.response, "workflow", attrs)
        if tags is not None:
            tags_el = etree.SubElement(el, "tags")
            for tag_id, label in tags:
                etree.SubElement(tags_el, "tag", id=str(tag_id), label=label)
