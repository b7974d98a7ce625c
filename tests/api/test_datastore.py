"""``datastore get``: gzip+base64 or raw text, unknown entries, open to any user."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admintest import ok_text
from apitest import Api, new_server, text


async def add_entry(api: Api, value: str) -> int:
    return (await api.server.storage.execute(
        "INSERT INTO t_datastore (workflow_instance_id, datastore_value) VALUES (1, %s)",
        (value,))).lastrowid


async def test_gzip(api: Api) -> None:
    value = "line é <&>\n" * 1000
    entry = await add_entry(api, value)
    answer = await api.ok(f'<datastore action="get" id="{entry}"/>')
    assert answer.get("gzip") == "yes"
    assert gzip.decompress(base64.b64decode(answer.text, validate=True)).decode() == value
    assert len(answer.text) < len(value) // 10  # level 9 on a repetitive text


@pytest.fixture
async def raw_api(tmp_path: Path) -> AsyncIterator[Api]:
    server = await new_server({"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db"),
                               "datastore.gzip.enable": "no"})
    yield Api(server)
    await server.storage.close()


async def test_raw(raw_api: Api) -> None:
    entry = await add_entry(raw_api, "a<b&c>\r\n")
    assert text(await raw_api.ok(f'<datastore action="get" id="{entry}"/>')) == ok_text(
        "a&lt;b&amp;c&gt;&#xD;\n", gzip="no")
    empty = await add_entry(raw_api, "")
    assert text(await raw_api.ok(f'<datastore action="get" id="{empty}"/>')) == (
        '<response gzip="no" node="localhost" status="OK"></response>')


@pytest.mark.parametrize(("query", "error"), [
    ('<datastore action="get" id="99"/>', (None, "Unknown datastore entry")),
    ('<datastore action="get"/>', ("MISSING_PARAMETER", "Missing 'id' attribute")),
    ('<datastore action="list"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
])
async def test_errors(api: Api, query: str, error: tuple[str | None, str]) -> None:
    assert await api.ko(query) == error


async def test_open_to_users(api: Api) -> None:
    entry = await add_entry(api, "x")
    bob = await api.add_user("bob")
    answer = await api.ok(f'<datastore action="get" id="{entry}"/>', bob)
    assert gzip.decompress(base64.b64decode(answer.text)) == b"x"
