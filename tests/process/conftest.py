"""Fixtures for the forker/Spawner tests: a node run directory and logs directory, and a
safety net that stops any forker a test left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
from proctest import Node, is_dead, is_forker, wait_until


@pytest.fixture
def node_dirs() -> Iterator[Node]:
    root = tempfile.mkdtemp(prefix="evqp")
    node = Node(os.path.join(root, "run"), os.path.join(root, "logs"))
    os.mkdir(node.run_dir)
    os.mkdir(node.logs_dir)
    yield node
    pid = node.forker_pid()
    if pid is not None and is_forker(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def node(node_dirs: Node) -> AsyncIterator[Node]:
    """A node whose spawners are closed and whose forker is shut down after the test."""
    yield node_dirs
    for sp in node_dirs.spawners:
        await sp.close()
    pid = node_dirs.forker_pid()
    if pid is not None and is_forker(pid):
        os.kill(pid, signal.SIGTERM)  # exits once its tasks are done (tests leave none)
        await wait_until(lambda: is_dead(pid), 5.0)
