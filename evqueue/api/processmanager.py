"""``processmanager tail`` (protocol.md §3.14): the end of a running task's stdout, stderr or
fd 3 log, as the front-end shows it for an EXECUTING task. ADMIN only.

The text is the last ``processmanager.logs.tailsize`` bytes of the capture file the forker (or
the SSH runner) writes, decoded as UTF-8 and made XML-safe; an empty file answers
``<response …></response>`` as the original does (errata 6).
"""

from __future__ import annotations

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import sanitize_xml_text


@handler("processmanager")
async def processmanager(call: Call) -> None:
    call.user.require_admin()
    if call.action != "tail":
        raise unknown_command()
    tid = call.params.int("tid")
    kind = call.params.str("type")
    server = call.server
    assert server.spawner is not None
    try:
        data = server.spawner.tail(tid, kind, server.config["processmanager.logs.tailsize"])
    except ValueError as e:  # "Unknown log type : X"
        raise ApiError(None, str(e)) from None
    except OSError:
        raise ApiError(None, "Error opening log file") from None
    call.response.text = sanitize_xml_text(data.decode("utf-8", "replace"))
