"""A MariaDB-backed daemon that loses its database connections while instances run (issue #14):
it reconnects with backoff, loses no instance state, reports the outage in its log and in
``status type="database"``; ``--wait-db`` waits for a server that is not up yet."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

import pymysql
import pytest
from evqtest import Daemon, create_workflow, free_ports, wait_terminated
from lxml import etree
from test_cluster import MYSQL, _mysql_or_skip, _sql

from evqueue.client import Client

#: Two jobs in sequence, so that savepoints are written while the connections are killed.
WORKFLOW = ('<workflow><subjobs><job><tasks><task path="/bin/sleep" queue="{queue}">'
            '<input>0.2</input></task></tasks><subjobs><job><tasks>'
            '<task path="/bin/echo" queue="{queue}"><input>done</input></task></tasks></job>'
            '</subjobs></job></subjobs></workflow>')
INSTANCES = 40


@pytest.fixture
def database() -> Iterator[str]:
    _mysql_or_skip()
    name = f"evq_test_{secrets.token_hex(4)}"
    yield name
    db = pymysql.connect(**MYSQL)
    db.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    db.close()


@pytest.fixture
def root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="evqr")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _daemon(root: str, database: str, port: int = 3306) -> Daemon:
    return Daemon(root, **{
        "core.storage": "mysql", "mysql.host": "127.0.0.1", "mysql.port": str(port),
        "mysql.user": "root", "mysql.password": "", "mysql.database": database})


def _two_jobs_workflow(c: Client) -> None:
    """WORKFLOW on a queue of 8, so that several of its instances run at once."""
    c.query('<queue action="create" name="par" concurrency="8" scheduler="fifo" '
            'dynamic="no" />')
    create_workflow(c, "two_jobs", WORKFLOW, queue="par")


def _kill_connections(database: str) -> int:
    """KILL every connection of the daemon (all connections using ``database``)."""
    ids = [i for (i,) in _sql("information_schema", "SELECT ID FROM PROCESSLIST WHERE DB = %s "
                              "AND ID <> CONNECTION_ID()", (database,))]
    for i in ids:
        with contextlib.suppress(pymysql.MySQLError):  # it ended meanwhile
            _sql("information_schema", f"KILL CONNECTION {i}")
    return len(ids)


def _health_once(client: Client, state: str, timeout: float = 10) -> etree._Element:
    """``status type="database"`` once its ``state`` is ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        health = client.query('<status action="query" type="database" />').find("database")
        if health.get("state") == state:
            return health
        assert time.monotonic() < deadline, dict(health.attrib)
        time.sleep(0.05)


def test_instances_survive_killed_connections_and_end_exactly_once(root, database):
    d = _daemon(root, database)
    d.start()
    try:
        with d.client() as c:
            _two_jobs_workflow(c)
            killed = 0
            stop = threading.Event()

            def killer() -> None:
                nonlocal killed
                while not stop.wait(0.05):
                    killed += _kill_connections(database)

            thread = threading.Thread(target=killer)
            thread.start()
            try:  # launches, savepoints, final commits and queries all meet killed connections
                ids = [int(c.query('<instance action="launch" name="two_jobs" />').get(
                    "workflow-instance-id")) for _ in range(INSTANCES)]
                docs = [wait_terminated(c, i, timeout=60) for i in ids]
            finally:
                stop.set()
                thread.join()
            assert killed >= 5
            health = _health_once(c, "ok")  # the last kill may still be being recovered from
        assert len(set(ids)) == INSTANCES
        for doc in docs:  # every task ran once and succeeded
            tasks = doc.findall(".//task")
            assert [t.get("status") for t in tasks] == ["TERMINATED"] * 2, doc.get("id")
            assert [t.get("retval") for t in tasks] == ["0", "0"]
            assert [len(t.findall("output")) for t in tasks] == [1, 1]
        rows = _sql(database, "SELECT workflow_instance_id, workflow_instance_status, "
                    "workflow_instance_errors FROM t_workflow_instance")
        assert sorted(rows) == [(i, "TERMINATED", 0) for i in sorted(ids)]
        assert health.get("backend") == "mysql"
        assert int(health.get("outages")) >= 1
        log = d.log()
        assert "Database unavailable (" in log
        assert "Database available again after" in log
    finally:
        d.stop()
        d.kill_forker()


class Forwarder:
    """A TCP port forwarding to MariaDB while started: a database server that is not up yet
    when the daemon starts, or that goes away (every connection cut) and comes back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection((MYSQL["host"], MYSQL["port"]))
                self._sockets |= {client, upstream}
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._sockets.clear()


def test_instances_end_once_across_a_database_outage(root, database):
    """The server is away for 3 s while instances run: their progress and final states are
    queued and land once it is back; ``status type="database"`` tells the outage meanwhile."""
    (port,) = free_ports(1)
    forwarder = Forwarder(port)
    forwarder.start()
    d = _daemon(root, database, port)
    d.start()
    try:
        with d.client() as c:
            _two_jobs_workflow(c)
            ids = [int(c.query('<instance action="launch" name="two_jobs" />').get(
                "workflow-instance-id")) for _ in range(16)]
            forwarder.stop()
            health = _health_once(c, "unavailable")  # noticed at the next write or read
            assert health.get("since") and health.get("error")
            time.sleep(3)
            assert c.query('<status action="query" type="workflows" />').get("count") == "0"
            forwarder.start()
            docs = [wait_terminated(c, i, timeout=60) for i in ids]
            health = _health_once(c, "ok")
        assert health.get("pending_writes") == "0"
        for doc in docs:
            tasks = doc.findall(".//task")
            assert [t.get("retval") for t in tasks] == ["0", "0"], doc.get("id")
        rows = _sql(database, "SELECT workflow_instance_id, workflow_instance_status, "
                    "workflow_instance_errors FROM t_workflow_instance")
        assert sorted(rows) == [(i, "TERMINATED", 0) for i in sorted(ids)]
    finally:
        d.stop()
        d.kill_forker()
        forwarder.stop()


def test_wait_db_waits_for_the_server(root, database):
    (port,) = free_ports(1)
    forwarder = Forwarder(port)
    d = _daemon(root, database, port)
    open(os.path.join(root, "daemon.stderr"), "w").close()  # read before start() opens it
    started = threading.Thread(target=d.start, kwargs={"extra_args": ("--wait-db",),
                                                       "timeout": 30})
    started.start()
    try:
        deadline = time.monotonic() + 10
        while "Database not yet ready, retrying..." not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        assert d.proc.poll() is None and "evqueue core started" not in d.log()
        forwarder.start()
        started.join()
        with d.client() as c:
            health = c.query('<status action="query" type="database" />').find("database")
            assert health.get("state") == "ok"
            assert c.query('<queuepool action="list" />')[0].get("name") == "default"
    finally:
        started.join()
        if d.proc is not None:
            d.stop()
        d.kill_forker()
        forwarder.stop()
