"""Fixtures for the API query tests: a real ``Server`` on a real database (SQLite in
``tmp_path``, or a throw-away MariaDB database), queried through ``dispatch`` directly."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from apitest import Api, Peer, drop_mysql, mysql_database, new_server


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """SQLite."""
    server = await new_server({"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db")})
    yield Api(server)
    await server.cluster.close()
    await server.storage.close()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def any_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """SQLite, then MariaDB."""
    database = None
    if request.param == "sqlite":
        values = {"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db")}
    else:
        database = mysql_database()
        values = {"core.storage": "mysql", "mysql.host": "127.0.0.1", "mysql.user": "root",
                  "mysql.password": "", "mysql.database": database}
    server = await new_server(values)
    yield Api(server)
    await server.storage.close()
    if database is not None:
        drop_mysql(database)


@pytest.fixture
async def clustered(tmp_path: Path) -> AsyncIterator[tuple[Api, Peer]]:
    """A SQLite server whose ``cluster.nodes`` lists a :class:`Peer`."""
    short = tempfile.mkdtemp(prefix="evq")  # unix socket paths are limited to 108 bytes
    peer = Peer(os.path.join(short, "peer.sock"))
    await peer.start()
    server = await new_server({"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db"),
                                "cluster.nodes": f"unix://{peer.path}"})
    yield Api(server), peer
    await server.cluster.close()
    await server.storage.close()
    await peer.close()
    shutil.rmtree(short, ignore_errors=True)
