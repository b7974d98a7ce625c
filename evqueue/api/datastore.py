"""``datastore get`` (protocol.md §3.13, errata 10): a task output too large for the instance
document. Open to any user, like the original (the front-end reads it as a normal user).

The value is the response's text: base64 of a gzip stream when ``datastore.gzip.enable``
(canonical base64, unlike the original's), else the raw text. Compression of an output of up
to ``datastore.db.maxsize`` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import gzip

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import sanitize_xml_text


def _gzip_base64(value: str, level: int) -> str:
    return base64.b64encode(gzip.compress(value.encode("utf-8"), level, mtime=0)).decode()


@handler("datastore")
async def datastore(call: Call) -> None:
    if call.action != "get":
        raise unknown_command()
    server = call.server
    row = await server.storage.query_one(
        "SELECT datastore_value FROM t_datastore WHERE datastore_id = %s",
        (call.params.int("id"),))
    if row is None:
        raise ApiError(None, "Unknown datastore entry")
    value = row[0] or ""
    if server.config["datastore.gzip.enable"]:
        call.response.set("gzip", "yes")
        call.response.text = await asyncio.to_thread(
            _gzip_base64, value, server.config["datastore.gzip.level"])
    else:
        call.response.set("gzip", "no")
        call.response.text = sanitize_xml_text(value)
