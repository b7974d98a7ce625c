"""Shared fixtures: real daemons in temporary directories, talked to over real sockets."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from evqtest import Daemon


@pytest.fixture
def make_daemon() -> Iterator:
    """Factory: ``make_daemon(**config_overrides)`` starts a daemon; all are stopped after."""
    daemons: list[Daemon] = []
    roots: list[str] = []

    def make(root: str | None = None, start: bool = True, **overrides: str) -> Daemon:
        if root is None:
            root = tempfile.mkdtemp(prefix="evq")
            roots.append(root)
        d = Daemon(root, **overrides)
        daemons.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in daemons:
        if d.proc is not None:
            d.stop()
        d.kill_forker()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()
