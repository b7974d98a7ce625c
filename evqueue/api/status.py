"""``status`` (protocol.md §3.2): live instances, scheduler state, effective configuration."""

from __future__ import annotations

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError


@handler("status")
async def status(call: Call) -> None:
    if call.action != "query":
        raise unknown_command()
    server = call.server
    server.statistics.statistics_queries += 1
    type_ = call.params.str("type")
    if type_ == "workflows":
        limit = call.params.int("limit", 0)
        active = server.instances.active
        call.response.set("count", str(len(active)))
        n = 0
        for inst in active.values():  # no await inside: no copy needed
            if limit and n >= limit:
                break
            if call.user.can(inst.workflow_id, "read"):
                call.response.append(etree.Element("workflow", dict(inst.doc.attrib)))
                n += 1
    elif type_ == "scheduler":
        call.user.require_admin()
        node = etree.SubElement(call.response, "status")
        for attrs in server.scheduler.status():
            etree.SubElement(node, "workflow", attrs)
    elif type_ == "configuration":
        call.user.require_admin()
        node = etree.SubElement(call.response, "configuration")
        for name, value in server.config.entries():
            etree.SubElement(node, "entry", name=name, value=value)
    elif type_ == "database":  # ours (docs/deviations.md): is the database reachable
        etree.SubElement(call.response, "database", server.storage.health())
    else:
        raise ApiError("UNKNOWN_TYPE", "Unknown type")
