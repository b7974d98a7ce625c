"""``ping`` (protocol.md §3.1): any user, ``action`` ignored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from evqueue import VERSION
from evqueue.api.dispatch import Call, handler
from evqueue.protocol.xmlout import response, serialize

if TYPE_CHECKING:
    from evqueue.server import Server


def _fill(r: etree._Element, server: Server) -> None:
    r.set("version", VERSION)
    r.set("git-support", "disabled")
    r.set("uptime", str(server.uptime))


@handler("ping")
async def ping(call: Call) -> None:
    _fill(call.response, call.server)


_cached: tuple[str, int, bytes] = ("", -1, b"")


def ping_answer(server: Server) -> bytes:
    """The serialised answer to a bare ``<ping/>``, which only changes with the uptime (in
    seconds): built once per second, for the transports' unparsed fast path."""
    global _cached
    node, uptime, answer = _cached
    if uptime != server.uptime or node != server.node:
        r = response(server.node)
        _fill(r, server)
        answer = serialize(r)
        _cached = (server.node, int(r.get("uptime")), answer)
    return answer
