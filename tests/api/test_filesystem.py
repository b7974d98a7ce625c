"""``filesystem list``: entry types, hidden entries, relative paths under the tasks
directory, unreadable directories, and the ADMIN restriction (documented deviation)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admintest import ok_text
from apitest import Api, new_server, text


@pytest.fixture
async def fs_api(tmp_path: Path) -> AsyncIterator[Api]:
    tasks = tmp_path / "tasks"
    (tasks / "sub" / "deeper").mkdir(parents=True)
    (tasks / "run.sh").write_text("#!/bin/sh\n")
    (tasks / ".hidden").write_text("")
    (tasks / "sub" / "b.py").write_text("")
    (tasks / "link").symlink_to(tasks / "sub")
    os.mkfifo(tasks / "fifo")
    server = await new_server({"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db"),
                               "processmanager.tasks.directory": str(tasks)})
    yield Api(server)
    await server.storage.close()


async def test_list(fs_api: Api, tmp_path: Path) -> None:
    expected = ok_text('<entry name="fifo" type="unknown"/><entry name="link" type="file"/>'
                       '<entry name="run.sh" type="file"/><entry name="sub" type="directory"/>')
    assert text(await fs_api.ok('<filesystem action="list" path=""/>')) == expected
    assert text(await fs_api.ok(
        f'<filesystem action="list" path="{tmp_path}/tasks"/>')) == expected
    assert text(await fs_api.ok('<filesystem action="list" path="sub"/>')) == ok_text(
        '<entry name="b.py" type="file"/><entry name="deeper" type="directory"/>')
    assert text(await fs_api.ok('<filesystem action="list" path="sub/deeper"/>')) == ok_text()


async def test_errors(fs_api: Api, tmp_path: Path) -> None:
    assert await fs_api.ko('<filesystem action="list" path="nope"/>') == (
        None, f"Unable to open directory {tmp_path}/tasks/nope")
    assert await fs_api.ko('<filesystem action="list" path="/nonexistent/x"/>') == (
        None, "Unable to open directory /nonexistent/x")
    assert await fs_api.ko('<filesystem action="list" path="run.sh"/>') == (
        None, f"Unable to open directory {tmp_path}/tasks/run.sh")
    assert await fs_api.ko('<filesystem action="list"/>') == (
        "MISSING_PARAMETER", "Missing 'path' attribute")
    assert await fs_api.ko('<filesystem action="get" path=""/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


async def test_admin_only(fs_api: Api) -> None:
    bob = await fs_api.add_user("bob")
    for query in ('<filesystem action="list" path="/"/>', '<filesystem action="nope"/>'):
        assert await fs_api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights")
