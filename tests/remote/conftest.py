"""Fixtures of the remote task tests: one sshd and one daemon using it, per module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from evqtest import Daemon
from sshtest import Keys, Sshd, missing, running_ssh_daemon


@pytest.fixture(scope="module")
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="evqssh"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(tmp_root: Path) -> Keys:
    reason = missing()
    if reason:
        pytest.skip(reason)
    return Keys(tmp_root / "keys")


@pytest.fixture(scope="module")
def sshd(tmp_root: Path, keys: Keys) -> Iterator[Sshd]:
    server = Sshd(tmp_root / "sshd", keys)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_root: Path, keys: Keys) -> Iterator[Daemon]:
    with running_ssh_daemon(tmp_root / "d", keys) as d:
        yield d
