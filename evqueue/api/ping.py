"""``ping`` (protocol.md §3.1): any user, ``action`` ignored."""

from __future__ import annotations

from evqueue import VERSION
from evqueue.api.dispatch import Call, handler


@handler("ping")
async def ping(call: Call) -> None:
    r = call.response
    r.set("version", VERSION)
    r.set("git-support", "disabled")
    r.set("uptime", str(call.server.uptime))
