"""Query dispatch: root element name → handler, rights and errors → response element.

Handlers are ``async def handler(call: Call) -> None`` registered per query group with
:func:`handler`; they read ``call.params``, check ``call.user``'s rights, act through
``call.server`` and fill ``call.response``. They raise :class:`ApiError` for KO answers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.api.params import Params
from evqueue.engine.users import User
from evqueue.engine.xpath import XPathError, evaluate, string_value
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import error_response, response
from evqueue.storage.base import StorageError

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

Handler = Callable[["Call"], Awaitable[None]]
_HANDLERS: dict[str, Handler] = {}


def handler(*groups: str) -> Callable[[Handler], Handler]:
    """Register a coroutine as the handler of one or more query groups."""

    def register(fn: Handler) -> Handler:
        for group in groups:
            _HANDLERS[group] = fn
        return fn

    return register


def unknown_command() -> ApiError:
    return ApiError("UNKNOWN_COMMAND", "Unknown command or action")


@dataclass(slots=True)
class Call:
    """One query being answered."""

    server: Server
    user: User
    query: etree._Element
    params: Params
    response: etree._Element
    #: ``api`` for TCP/unix, ``ws`` for websockets (synchronous waits differ)
    transport: str

    @property
    def group(self) -> str:
        return self.query.tag

    @property
    def action(self) -> str:
        action = self.query.get("action")
        if action is None:
            raise ApiError("MISSING_PARAMETER", "Missing 'action' attribute")
        return action


async def dispatch(
    server: Server, user: User, query: etree._Element, transport: str = "api"
) -> etree._Element:
    """Answer one query; never raises (errors become KO responses)."""
    node = server.node
    fn = _HANDLERS.get(query.tag)
    try:
        if fn is None:
            raise unknown_command()
        call = Call(server, user, query, Params(query), response(node), transport)
        await fn(call)
    except ApiError as e:
        return error_response(node, e)
    except StorageError as e:
        return error_response(node, ApiError("SQL_ERROR", str(e)))
    except Exception:
        log.exception("Unexpected exception in handler of <%s>", query.tag)
        return error_response(node, ApiError("UNEXPECTED_EXCEPTION", "Unexpected exception"))
    xpathfilter = query.get("xpathfilter")
    if xpathfilter is not None:
        return _filter(node, call.response, xpathfilter)
    return call.response


def _filter(node: str, doc: etree._Element, expression: str) -> etree._Element:
    """Apply the generic ``xpathfilter`` attribute (protocol.md §1.7) with the engine's XPath
    dialect, context = the response root; a bad expression gives a KO answer instead of the
    original's dropped connection."""
    try:
        result = evaluate(expression, doc)
    except XPathError as e:
        return error_response(node, ApiError("UNEXPECTED_EXCEPTION", str(e)))
    out = response(node)
    if isinstance(result, bool):
        out.text = "true" if result else "false"
    elif isinstance(result, (int, float, str)):
        out.text = str(int(result)) if isinstance(result, float) and result.is_integer() \
            else str(result)
    else:
        last = None
        for item in result:
            if isinstance(item, etree._Element):
                out.append(_deep_copy(item))
                last = out[-1]
                continue
            text = str(item) if isinstance(item, (str, int, float)) else string_value(item)
            if last is None:
                out.text = (out.text or "") + text
            else:
                last.tail = (last.tail or "") + text
    return out


def _deep_copy(elem: etree._Element) -> etree._Element:
    c = copy.deepcopy(elem)
    c.tail = None
    return c
