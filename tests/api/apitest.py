"""Helpers of the API query tests (fixtures in conftest.py): queries answered by a real
``Server`` through ``dispatch``, golden transcripts, a fake cluster peer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from lxml import etree

import evqueue.api  # noqa: F401  (registers every query group's handler)
from evqueue.api.dispatch import dispatch
from evqueue.config import Config
from evqueue.engine.users import User
from evqueue.protocol.framing import Framer
from evqueue.protocol.xmlout import serialize
from evqueue.server import Server

GOLDEN = json.loads(
    (Path(__file__).parents[1] / "data" / "golden" / "index.json").read_text())["transcripts"]


def golden(file_prefix: str) -> tuple[str, str]:
    """(request, response) of the golden transcript whose file name starts with the prefix."""
    for t in GOLDEN:
        if t["file"].startswith(file_prefix):
            kinds = {e["kind"]: e["data"] for e in t["exchange"]}
            return kinds["REQUEST"].strip(), kinds["RESPONSE"]
    raise KeyError(file_prefix)


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def text(elem: etree._Element) -> str:
    return serialize(elem).decode()


class Api:
    """Queries answered by ``dispatch`` as ``user`` (the admin by default)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: list[tuple[str, int]] = []
        server.events.subscribe(lambda name, oid: self.events.append((name, oid)))

    def user(self, login: str = "admin") -> User:
        user = self.server.users.lookup(login)
        assert user is not None
        return user

    async def __call__(self, query: str, user: User | None = None) -> etree._Element:
        return await dispatch(self.server, user or self.user(), etree.fromstring(query))

    async def ok(self, query: str, user: User | None = None) -> etree._Element:
        answer = await self(query, user)
        assert answer.get("status") == "OK", text(answer)
        return answer

    async def ko(self, query: str, user: User | None = None) -> tuple[str | None, str]:
        """(error-code, error) of a KO answer."""
        answer = await self(query, user)
        assert answer.get("status") == "KO", text(answer)
        assert len(answer) == 0
        return answer.get("error-code"), answer.get("error")

    async def add_user(self, login: str, rights: dict[int, str] = {}) -> User:  # noqa: B006
        """A USER profile with ``{workflow id: "read,edit,..."}`` rights."""
        storage = self.server.storage
        await storage.execute(
            "INSERT INTO t_user (user_login, user_password, user_profile, user_preferences) "
            "VALUES (%s, %s, 'USER', '')", (login, hashlib.sha1(login.encode()).hexdigest()))
        row = await storage.query_one("SELECT user_id FROM t_user WHERE user_login = %s",
                                      (login,))
        assert row is not None
        for workflow_id, granted in rights.items():
            flags = [int(r in granted.split(",")) for r in ("edit", "read", "exec", "kill")]
            await storage.execute(
                "INSERT INTO t_user_right (user_id, workflow_id, user_right_edit, "
                "user_right_read, user_right_exec, user_right_kill) "
                "VALUES (%s, %s, %s, %s, %s, %s)", (row[0], workflow_id, *flags))
        await self.server.users.reload()
        return self.user(login)

    async def log_api(self) -> list[tuple[Any, ...]]:
        await self.server.storage.flush()
        return await self.server.storage.query(
            "SELECT user_id, log_api_object_id, log_api_object_type, log_api_group, "
            "log_api_action FROM t_log_api ORDER BY log_api_id")


def mysql_database() -> str:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                        connect_timeout=3).close()
    except pymysql.Error as exc:
        message = f"MariaDB not reachable on 127.0.0.1:3306: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return f"evq_test_{secrets.token_hex(6)}"


def drop_mysql(database: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    conn.close()


async def new_server(values: dict[str, str]) -> Server:
    config = Config.from_mapping(
        {"cluster.node.name": "localhost", "logger.syslog.enable": "no",
         "logger.db.enable": "no", **values}, environ={})
    server = Server(config)
    await server.storage.open()
    await server.reload_all()
    return server


class Peer:
    """Another cluster node as seen on the wire: greets (no auth), records every query it
    receives and answers OK. The cluster notifier of the server under test talks to it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.queries: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._session, self.path)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        writer.write(f'<ready node="peer" profile="ADMIN" status="OK" time="{now}" '
                     f'version="3.3"><modules/></ready>\n'.encode())
        framer = Framer(1 << 20)
        while data := await reader.read(65536):
            for doc in framer.feed(data):
                if doc.tag == "quit":
                    writer.close()
                    return
                self.queries.append(etree.tostring(doc, encoding="unicode"))
                writer.write(b'<response node="peer" status="OK"/>\n')
        writer.close()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.queries) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.queries

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def reload_queries(peer: Peer) -> list[str]:
    """Modules named by the reload broadcasts the peer received, in order."""
    out = []
    for q in peer.queries:
        doc = etree.fromstring(q)
        assert (doc.tag, doc.get("action"), doc.get("notify")) == ("control", "reload", "no")
        out.append(doc.get("module"))
    return out
