"""Fixtures running the storage suite against both backends: SQLite in ``tmp_path`` and MariaDB
(127.0.0.1:3306, root, no password) in a throw-away database ``evq_test_<hex>``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pymysql
import pytest

from evqueue.storage.mysql import MySQLStorage
from evqueue.storage.sqlite import SQLiteStorage
from evqueue.storage.threaded import ThreadedStorage

MYSQL_HOST = "127.0.0.1"
MYSQL_PORT = 3306


def mysql_admin(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="",
                           database=database, autocommit=True, connect_timeout=3)


def _mysql_unreachable() -> str | None:
    try:
        mysql_admin().close()
    except pymysql.Error as exc:
        return str(exc)
    return None


class Backend:
    """One backend under test: makes storages on this test's database and gives direct,
    synchronous access to it (bypassing the code under test) for setup and checks."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target  # sqlite file path or MySQL database name

    def make(self, **kw: Any) -> ThreadedStorage:
        kw.setdefault("retry_timeout", 5.0)
        if self.name == "sqlite":
            return SQLiteStorage(self.target, **kw)
        host = kw.pop("host", MYSQL_HOST)
        port = kw.pop("port", MYSQL_PORT)
        return MySQLStorage(host, "root", "", self.target, port=port, **kw)

    def admin(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                rows = conn.execute(sql.replace("%s", "?"), params).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        conn = mysql_admin(self.target)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "state" / "evqueue.db"))
        return
    reason = _mysql_unreachable()
    if reason is not None:
        message = f"MariaDB not reachable on {MYSQL_HOST}:{MYSQL_PORT}: {reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    database = f"evq_test_{secrets.token_hex(6)}"
    yield Backend("mysql", database)
    conn = mysql_admin()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    conn.close()


@pytest.fixture
def mysql_backend(backend: Backend) -> Backend:
    if backend.name != "mysql":
        pytest.skip("MySQL-only behaviour")
    return backend


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[ThreadedStorage]:
    st = backend.make()
    await st.open()
    yield st
    await st.close()


class TcpProxy:
    """A TCP forwarder to MariaDB that can be stopped and restarted on the same port, to
    play a database server that goes away and comes back."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: Cut the next connection that sends ``COMMIT``, after passing it on to the server
        #: ("forward": it commits, but its answer is lost) or without ("drop")
        self.cut_commit: str | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(MYSQL_HOST, MYSQL_PORT)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       upstream: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    cut = upstream and self.cut_commit is not None and b"COMMIT" in data
                    if cut:
                        up_writer.transport.pause_reading()  # no answer goes back
                    if not cut or self.cut_commit == "forward":
                        dst.write(data)
                        await dst.drain()
                    if cut:
                        self.cut_commit = None
                        await asyncio.sleep(0.3)  # the server commits (or not) meanwhile
                        writer.transport.abort()
                        break
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = TcpProxy()
    await p.start()
    yield p
    if p._server is not None:
        await p.stop()
