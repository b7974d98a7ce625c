"""``tag`` and ``tags`` (protocol.md §3.11, errata 14 and 22): all ADMIN.

Events carry object id 0 like the original's. ``create`` of an existing label answers its id
and changes nothing (no event, no audit row).
"""

from __future__ import annotations

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.api_log import log_api

_EVENTS = {"create": "TAG_CREATED", "edit": "TAG_MODIFIED", "delete": "TAG_REMOVED"}


@handler("tag")
async def tag(call: Call) -> None:
    call.user.require_admin()
    action = call.action
    p = call.params
    tags = call.server.tags
    if action == "get":
        etree.SubElement(call.response, "tag", label=tags.get(p.int("id")).label)
        return
    if action == "create":
        tag_id, created = await tags.create(p.str("label"))
        call.response.set("tag-id", str(tag_id))
        if not created:
            return
    elif action == "edit":
        tag_id = p.int("id")
        await tags.edit(tag_id, p.str("label"))
    elif action == "delete":
        tag_id = p.int("id")
        await tags.delete(tag_id)
    else:
        raise unknown_command()
    log_api(call, "Tag", tag_id)
    await reload_modules(call, "tags")
    call.server.events.publish(_EVENTS[action])


@handler("tags")
async def tags(call: Call) -> None:
    call.user.require_admin()
    if call.action != "list":
        raise unknown_command()
    for t in call.server.tags.all():
        etree.SubElement(call.response, "tag", id=str(t.id), label=t.label)
