"""Fixtures of the client tests: fake servers (see fakeserver.py) and the real daemon."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakeserver import FakeServer


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(node: str = "fake", users: dict[str, str] | None = None) -> FakeServer:
        server = FakeServer(node, users).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fake(make_fake: Callable[..., FakeServer]) -> FakeServer:
    return make_fake()


@pytest.fixture
def closed_url() -> str:
    """A tcp URL on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def live(make_daemon: Callable[..., Any]) -> Any:
    """The real daemon (tests/conftest.py); skipped while it cannot start."""
    try:
        return make_daemon()
    except (RuntimeError, OSError, ImportError) as e:
        pytest.skip(f"the evqueue daemon cannot start here: {e}")
