"""``statistics`` (protocol.md §3.3, errata 11–13): global counters and live queues."""

from __future__ import annotations

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError


@handler("statistics")
async def statistics(call: Call) -> None:
    server = call.server
    action = call.action
    type_ = call.params.str("type")
    if action == "query":
        server.statistics.statistics_queries += 1
        if type_ == "global":
            etree.SubElement(call.response, "statistics", server.statistics.as_attributes())
        elif type_ == "queue":
            node = etree.SubElement(call.response, "statistics")
            for q in server.queues.live_queues():
                etree.SubElement(node, "queue", {
                    "name": q.name, "concurrency": str(q.concurrency), "size": str(q.size),
                    "running_tasks": str(q.running), "scheduler": q.effective_scheduler,
                })
        else:
            raise ApiError("UNKNOWN_TYPE", "Unknown statistics type")
    elif action == "reset":
        call.user.require_admin()
        if type_ != "global":
            raise ApiError("UNKNOWN_TYPE", "Unknown statistics type for this action")
        server.statistics.reset()
    else:
        raise unknown_command()
