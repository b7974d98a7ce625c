"""One suite, run against SQLite and MariaDB: schema, queries, group commit, error texts."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time

import pytest

from evqueue.storage import open_storage, schema
from evqueue.storage.base import DuplicateEntry, StorageError, StorageUnavailable
from evqueue.storage.mysql import MySQLStorage
from evqueue.storage.sqlite import SQLiteStorage

DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

ADD_QUEUE = "INSERT INTO t_queue (queue_name, queue_concurrency) VALUES (%s, %s)"
ADD_LOG = "INSERT INTO t_log (node_name, log_level, log_message) VALUES (%s, %s, %s)"
ADD_WORKFLOW = ("INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, "
                "workflow_comment) VALUES (%s, '<workflow/>', '', '')")
ADD_INSTANCE = ("INSERT INTO t_workflow_instance (workflow_id, workflow_instance_status, "
                "workflow_instance_end) VALUES (%s, %s, %s)")


def columns_sql(backend_name: str) -> str:
    if backend_name == "sqlite":
        return "SELECT name FROM pragma_table_info(%s) ORDER BY cid"
    return ("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION")


# -- schema -------------------------------------------------------------------------------------
async def test_schema_created_with_seeds(backend, storage):
    for table in (*schema.TABLES, schema.VERSION_TABLE):
        rows = await storage.query(columns_sql(backend.name), (table.name,))
        assert [r[0] for r in rows] == [c.name for c in table.columns], table.name
    assert await storage.query("SELECT * FROM t_queue") == [(1, "default", 1, "default", 0)]
    assert await storage.query(
        "SELECT user_id, user_login, user_password, user_password_salt, "
        "user_password_iterations, user_profile, user_preferences FROM t_user"
    ) == [(1, "admin", "d033e22ae348aeb5660fc2140aec35850c4da997", None, 0, "ADMIN", "")]
    assert await storage.query("SELECT version FROM t_evqueue_schema") == [
        (schema.SCHEMA_VERSION,)
    ]
    # the storage module's quirky starting ids are kept
    r = await storage.execute("INSERT INTO t_launcher (launcher_name, launcher_group, "
                              "launcher_description, workflow_id, launcher_parameters) "
                              "VALUES ('l', '', '', 1, '')")
    assert r.lastrowid == 4


async def test_mysql_tables_carry_the_original_version_comment(mysql_backend, storage):
    rows = dict(mysql_backend.admin(
        "SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE()"))
    assert {rows[name] for name in schema.CORE_TABLES} == {"v3.3"}
    create = mysql_backend.admin("SHOW CREATE TABLE t_queue")[0][1]
    assert "`queue_name` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL" in create
    assert "UNIQUE KEY `queue_name` (`queue_name`)" in create
    assert "ENGINE=InnoDB" in create


async def test_reopen_is_idempotent(backend, storage):
    await storage.execute(ADD_QUEUE, ("kept", 2))
    await storage.close()
    again = backend.make()
    await again.open()
    try:
        assert await again.query("SELECT queue_name FROM t_queue ORDER BY queue_id") == [
            ("default",), ("kept",)]
        assert await again.query("SELECT COUNT(*) FROM t_user") == [(1,)]
        assert await again.query("SELECT COUNT(*) FROM t_evqueue_schema") == [(1,)]
    finally:
        await again.close()


async def test_newer_schema_version_is_refused(backend, storage):
    await storage.close()
    backend.admin("UPDATE t_evqueue_schema SET version = 999")
    with pytest.raises(StorageError, match="schema version 999 is newer"):
        await backend.make().open()


async def test_missing_indexes_are_added_by_migration(backend, storage):
    await storage.close()
    if backend.name == "sqlite":
        backend.admin('DROP INDEX "t_workflow_instance.status_end"')
        indexes = "SELECT name FROM sqlite_master WHERE type = 'index'"
        name = "t_workflow_instance.status_end"
    else:
        backend.admin("ALTER TABLE t_workflow_instance DROP KEY status_end")
        indexes = ("SELECT INDEX_NAME FROM information_schema.STATISTICS "
                   "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't_workflow_instance'")
        name = "status_end"
    backend.admin("UPDATE t_evqueue_schema SET version = 0")
    assert name not in {r[0] for r in backend.admin(indexes)}
    again = backend.make()
    await again.open()
    await again.close()
    assert name in {r[0] for r in backend.admin(indexes)}
    assert backend.admin("SELECT version FROM t_evqueue_schema") == [(schema.SCHEMA_VERSION,)]


async def test_sqlite_drops_indexes_a_longer_key_covers(backend, storage):
    """On SQLite a plain key whose columns start a longer key gets no index of its own (MySQL
    keeps the original's keys); a database of schema 2, which had them, loses them."""
    if backend.name != "sqlite":
        pytest.skip("SQLite-only behaviour")
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index'"
    covered = {"t_workflow_instance.workflow_instance_end", "t_workflow_instance.end_workflow"}
    assert {r[0] for r in backend.admin(indexes)} & covered == {
        "t_workflow_instance.end_workflow"}
    await storage.close()
    backend.admin('CREATE INDEX "t_workflow_instance.workflow_instance_end" ON '
                  't_workflow_instance (workflow_instance_end)')
    backend.admin('DROP INDEX "t_workflow_instance.end_workflow"')
    backend.admin("UPDATE t_evqueue_schema SET version = 2")
    again = backend.make()
    await again.open()
    await again.close()
    assert {r[0] for r in backend.admin(indexes)} & covered == {
        "t_workflow_instance.end_workflow"}


async def test_mysql_unknown_table_version_is_refused(mysql_backend, storage):
    await storage.close()
    mysql_backend.admin("ALTER TABLE t_queue COMMENT = 'v3.1'")
    with pytest.raises(StorageError, match=r"^Wrong table version, should be 3\.3$"):
        await mysql_backend.make().open()


async def test_mysql_v32_tables_are_upgraded(mysql_backend, storage, caplog):
    await storage.close()
    admin = mysql_backend.admin
    admin("ALTER TABLE t_notification_type DROP COLUMN notification_type_scope")
    admin("ALTER TABLE t_notification DROP COLUMN notification_subscribe_all")
    admin("ALTER TABLE t_log_api MODIFY log_api_object_type enum('Workflow','WorkflowSchedule',"
          "'RetrySchedule','User','Tag','Queue') CHARACTER SET ascii NOT NULL")
    for name in schema.CORE_TABLES:
        admin(f"ALTER TABLE {name} COMMENT = 'v3.2'")
    caplog.set_level(logging.INFO, logger="evqueue.storage")
    again = mysql_backend.make()
    await again.open()
    try:
        assert "Detected v3.2 tables, upgrading scheme to v3.3" in caplog.text
        await again.execute(
            "INSERT INTO t_log_api (node_name, user_id, log_api_object_id, log_api_object_type, "
            "log_api_group, log_api_action) VALUES ('n', 1, 1, 'Alert', 'g', 'a')")
        await again.execute(
            "INSERT INTO t_notification_type (notification_type_name, "
            "notification_type_description, notification_type_manifest) VALUES ('p', '', '')")
        assert await again.query("SELECT notification_type_scope FROM t_notification_type") == [
            ("WORKFLOW",)]
        assert await again.query("SELECT COUNT(notification_subscribe_all) FROM t_notification"
                                 ) == [(0,)]
        comments = {c for (_, c) in admin(
            "SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE()") if _ in schema.CORE_TABLES}
        assert comments == {"v3.3"}
    finally:
        await again.close()


# -- statements -------------------------------------------------------------------------------
async def test_execute_results(storage):
    r = await storage.execute(ADD_QUEUE, ("q1", 2))
    assert (r.lastrowid, r.rowcount) == (2, 1)
    assert await storage.query_one("SELECT queue_concurrency FROM t_queue WHERE queue_name = %s",
                                   ("q1",)) == (2,)
    assert await storage.query_one("SELECT 1 FROM t_queue WHERE queue_name = 'nope'") is None
    # several rows: the first id, like MySQL
    r = await storage.execute(ADD_QUEUE[:-8] + "(%s, 1), (%s, 1), (%s, 1)", ("a", "b", "c"))
    assert (r.lastrowid, r.rowcount) == (3, 3)
    # explicit id
    r = await storage.execute(
        "INSERT INTO t_queue (queue_id, queue_name, queue_concurrency) VALUES (50, 'x', 1)")
    assert r.lastrowid == 50
    # rowcount counts matched rows, even when nothing changes
    r = await storage.execute("UPDATE t_queue SET queue_concurrency = 2 WHERE queue_name = 'q1'")
    assert (r.lastrowid, r.rowcount) == (0, 1)
    r = await storage.execute("DELETE FROM t_queue WHERE queue_name IN ('a', 'b', 'zz')")
    assert (r.lastrowid, r.rowcount) == (0, 2)
    # no auto-increment column: no id
    r = await storage.execute("INSERT INTO t_workflow_notification VALUES (7, 8)")
    assert (r.lastrowid, r.rowcount) == (0, 1)
    # a literal percent sign is written %% (PyMySQL's rule, kept on SQLite)
    assert await storage.query("SELECT queue_name FROM t_queue WHERE queue_name LIKE 'q%%'") == [
        ("q1",)]


async def test_transaction_commits_or_rolls_back(storage):
    def two_queues(tx):
        a = tx.execute(ADD_QUEUE, ("t1", 1)).lastrowid
        b = tx.execute(ADD_QUEUE, ("t2", 1)).lastrowid
        return a, b, tx.query("SELECT COUNT(*) FROM t_queue")[0][0]

    assert await storage.transaction(two_queues) == (2, 3, 3)

    def fails(tx):
        tx.execute(ADD_QUEUE, ("t3", 1))
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await storage.transaction(fails)

    def duplicate(tx):
        tx.execute(ADD_QUEUE, ("t4", 1))
        tx.execute(ADD_QUEUE, ("t1", 1))

    with pytest.raises(DuplicateEntry, match="Duplicate entry 't1' for key 'queue_name'"):
        await storage.transaction(duplicate)

    def recovers(tx):
        try:
            tx.execute(ADD_QUEUE, ("t1", 1))
        except DuplicateEntry:
            tx.execute(ADD_QUEUE, ("t5", 1))
        return "ok"

    assert await storage.transaction(recovers) == "ok"
    assert [r[0] for r in await storage.query("SELECT queue_name FROM t_queue ORDER BY queue_id")
            ] == ["default", "t1", "t2", "t5"]


async def test_a_failing_transaction_does_not_spoil_its_batch(storage):
    """Batched with other writes, a failing transaction is undone alone (the batch runs again
    with a savepoint around it); alone in its batch (the test above) it rolls the batch back."""
    def fails(tx):
        tx.execute(ADD_QUEUE, ("x2", 1))
        raise ValueError("no")

    blocker = asyncio.ensure_future(storage.transaction(lambda tx: time.sleep(0.3)))
    await asyncio.sleep(0.1)  # the writer is busy: the three below queue up as one batch
    before = storage.commit_count
    results = await asyncio.gather(
        storage.execute(ADD_QUEUE, ("x1", 1)), storage.transaction(fails),
        storage.execute(ADD_QUEUE, ("x3", 1)), return_exceptions=True)
    await blocker
    assert isinstance(results[1], ValueError)
    assert storage.commit_count - before <= 2  # the blocker's batch, then theirs (or one)
    assert [r[0] for r in await storage.query("SELECT queue_name FROM t_queue ORDER BY queue_id")
            ] == ["default", "x1", "x3"]


async def test_a_failing_write_does_not_spoil_its_batch(storage, caplog):
    storage.write(ADD_QUEUE, ("w1", 1))
    storage.write(ADD_QUEUE, ("default", 1))
    storage.write(ADD_QUEUE, ("w2", 1))
    await storage.flush()
    assert [r[0] for r in await storage.query("SELECT queue_name FROM t_queue ORDER BY queue_id")
            ] == ["default", "w1", "w2"]
    assert "Duplicate entry 'default' for key 'queue_name'" in caplog.text


async def test_write_then_flush_keeps_order(storage):
    await storage.execute(ADD_LOG, ("n", 1, "start"))
    for i in range(300):
        storage.write(ADD_LOG, ("n", 1, f"m{i}"))
        storage.write("UPDATE t_log SET log_level = %s WHERE log_id = 1", (i,))
    await storage.flush()
    rows = await storage.query("SELECT log_message FROM t_log WHERE log_id > 1 ORDER BY log_id")
    assert [r[0] for r in rows] == [f"m{i}" for i in range(300)]
    assert await storage.query("SELECT log_level FROM t_log WHERE log_id = 1") == [(299,)]


async def test_group_commit_of_2000_concurrent_writes(storage):
    before = storage.commit_count
    results = await asyncio.gather(*(
        storage.execute(ADD_LOG, ("n", 7, str(i))) for i in range(2000)))
    ids = [r.lastrowid for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 2000
    rows = await storage.query("SELECT log_id, log_message FROM t_log ORDER BY log_id")
    assert [int(m) for _, m in rows] == list(range(2000))
    assert [i for i, _ in rows] == ids
    assert storage.commit_count - before <= 200, "writes were not group-committed"


async def test_close_commits_pending_writes(backend, storage):
    for i in range(500):
        storage.write(ADD_LOG, ("n", 1, str(i)))
    await storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.write(ADD_LOG, ("n", 1, "late"))
    with pytest.raises(StorageError, match="closed"):
        await storage.query("SELECT 1")
    assert backend.admin("SELECT COUNT(*) FROM t_log") == [(500,)]


async def test_datetime_columns_come_back_as_strings(storage):
    await storage.execute(ADD_WORKFLOW, ("wf",))
    await storage.execute(ADD_INSTANCE, (1, "TERMINATED", "2024-02-03 04:05:06"))
    start, end = await storage.query_one(
        "SELECT workflow_instance_start, workflow_instance_end FROM t_workflow_instance")
    assert DATETIME.match(start) and end == "2024-02-03 04:05:06"
    assert await storage.query(
        "SELECT MAX(workflow_instance_end), SUM(workflow_id), COUNT(*) FROM t_workflow_instance"
    ) == [("2024-02-03 04:05:06", 1, 1)]
    await storage.execute(ADD_LOG, ("n", 1, "x"))
    (stamp,) = await storage.query_one("SELECT log_timestamp FROM t_log")
    assert DATETIME.match(stamp)
    # t_log.log_timestamp is refreshed on update (MySQL's ON UPDATE CURRENT_TIMESTAMP)
    await storage.execute("UPDATE t_log SET log_timestamp = '2000-01-01 00:00:00'")
    await storage.execute("UPDATE t_log SET log_message = 'y'")
    (updated,) = await storage.query_one("SELECT log_timestamp FROM t_log")
    assert DATETIME.match(updated) and updated >= stamp


# -- error texts --------------------------------------------------------------------------------
async def _setup_objects(storage):
    await storage.execute(ADD_WORKFLOW, ("wf1",))
    await storage.execute(ADD_WORKFLOW, ("wf2",))
    await storage.execute("INSERT INTO t_schedule (schedule_name, schedule_xml) VALUES ('s1', '')")
    await storage.execute("INSERT INTO t_tag (tag_label) VALUES ('t1'), ('t2')")
    await storage.execute("INSERT INTO t_launcher (launcher_name, launcher_group, "
                          "launcher_description, workflow_id, launcher_parameters) "
                          "VALUES ('l1', '', '', 1, '')")
    await storage.execute("INSERT INTO t_workflow_notification (workflow_id, notification_id) "
                          "VALUES (1, 1)")
    await storage.execute(ADD_INSTANCE, (1, "EXECUTING", None))
    await storage.execute("INSERT INTO t_storage (storage_path, storage_type, storage_structure, "
                          "storage_name, storage_value) VALUES (%s, 'INT', 'NONE', 'v', '1')",
                          ("p" * 70,))
    await storage.execute("INSERT INTO t_storage (storage_path, storage_type, storage_structure, "
                          "storage_name, storage_value) VALUES (%s, 'INT', 'NONE', 'w', '1'), "
                          "('a', 'INT', 'NONE', 'b', '1'), ('c', 'INT', 'NONE', 'b', '1')",
                          ("p" * 70,))


DUPLICATES = [
    (ADD_QUEUE, ("default", 1), "Duplicate entry 'default' for key 'queue_name'"),
    ("UPDATE t_workflow SET workflow_name = %s, workflow_group = %s WHERE workflow_id = %s",
     ("wf1", "g", 2), "Duplicate entry 'wf1' for key 'workflow_name'"),
    (ADD_WORKFLOW, ("WF2",), "Duplicate entry 'WF2' for key 'workflow_name'"),
    ("INSERT INTO t_schedule (schedule_name, schedule_xml) VALUES (%s, %s)", ("s1", ""),
     "Duplicate entry 's1' for key 'schedule_name'"),
    ("INSERT INTO t_user (user_login, user_password, user_profile, user_preferences) "
     "VALUES (%s, %s, %s, '')", ("admin", "x", "USER"),
     "Duplicate entry 'admin' for key 'user_login'"),
    ("UPDATE t_tag SET tag_label = %s WHERE tag_id = %s", ("t1", 2),
     "Duplicate entry 't1' for key 'tag_label'"),
    ("INSERT INTO t_launcher (launcher_name, launcher_group, launcher_description, workflow_id, "
     "launcher_parameters) VALUES (%s, '', '', 1, '')", ("l1",),
     "Duplicate entry 'l1' for key 'launcher_name'"),
    ("INSERT INTO t_workflow_notification (workflow_id, notification_id) VALUES (%s, %s)", (1, 1),
     "Duplicate entry '1-1' for key 'PRIMARY'"),
    ("INSERT INTO t_workflow_notification VALUES (2, 2), (1, 1)", (),
     "Duplicate entry '1-1' for key 'PRIMARY'"),
    ("INSERT INTO t_workflow_instance (workflow_instance_id, workflow_id, "
     "workflow_instance_status) VALUES (%s, 1, 'EXECUTING')", (1,),
     "Duplicate entry '1' for key 'workflow_instance_id'"),
    ("INSERT INTO t_storage (storage_path, storage_type, storage_structure, storage_name, "
     "storage_value) VALUES (%s, 'INT', 'NONE', 'v', '2')", ("p" * 70,),
     "Duplicate entry '" + "p" * 61 + "...' for key 'path_name'"),
    ("UPDATE t_storage SET storage_name = %s WHERE storage_name = %s", ("v", "w"),
     "Duplicate entry '" + "p" * 61 + "...' for key 'path_name'"),
    ("UPDATE t_storage SET storage_path = %s WHERE storage_path = %s", ("a", "c"),
     "Duplicate entry 'a-b' for key 'path_name'"),
]


async def test_duplicate_entry_texts_match_mariadb(storage):
    await _setup_objects(storage)
    for sql, params, text in DUPLICATES:
        with pytest.raises(DuplicateEntry) as info:
            await storage.execute(sql, params)
            pytest.fail(f"no error for {sql}")
        assert str(info.value) == text, sql
    # queue names are case-sensitive (ascii_bin), unlike the other names
    await storage.execute(ADD_QUEUE, ("Default", 1))


async def test_other_constraint_errors_use_mariadb_texts(backend, storage):
    cases = [
        (ADD_QUEUE, ("x" * 65, 1), "Data too long for column 'queue_name' at row 1"),
        (ADD_QUEUE, (None, 1), "Column 'queue_name' cannot be null"),
        (ADD_INSTANCE, (1, "RUNNING", None),
         "Data truncated for column 'workflow_instance_status' at row 1"),
        ("UPDATE t_user SET user_preferences = %s WHERE user_id = 1", ("d\u00e9j\u00e0 vu",),
         "Incorrect string value: '\\xC3\\xA9j\\xC3\\xA0 ...' for column "
         "`DB`.`t_user`.`user_preferences` at row 1"),
    ]
    db = "main" if backend.name == "sqlite" else backend.target
    for sql, params, text in cases:
        with pytest.raises(StorageError) as info:
            await storage.execute(sql, params)
        assert not isinstance(info.value, DuplicateEntry)
        assert str(info.value) == text.replace("`DB`", f"`{db}`"), sql


async def test_other_errors_carry_the_database_text(backend, storage):
    with pytest.raises(StorageError, match="t_nothere") as info:
        await storage.query("SELECT * FROM t_nothere")
    expected = ("no such table: t_nothere" if backend.name == "sqlite"
                else f"Table '{backend.target}.t_nothere' doesn't exist")
    assert str(info.value) == expected
    with pytest.raises(StorageError):
        await storage.execute("UPDAT t_queue SET queue_name = 'x'")
    with pytest.raises(StorageError):
        await storage.query("SELECT '%d'")


# -- concurrency ------------------------------------------------------------------------------
async def test_event_loop_keeps_running_during_slow_sql(backend, storage):
    gaps: list[float] = []

    async def heartbeat():
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    slow_query = ("SELECT SLEEP(0.4)" if backend.name == "mysql" else
                  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                  "WHERE x < 1500000) SELECT COUNT(*) FROM c")
    beat = asyncio.create_task(heartbeat())
    started = time.monotonic()
    await asyncio.gather(
        storage.query(slow_query),
        storage.transaction(lambda tx: time.sleep(0.4)),
    )
    elapsed = time.monotonic() - started
    beat.cancel()
    assert elapsed >= 0.3
    assert len(gaps) >= 15
    assert max(gaps) < 0.15


async def test_sqlite_file_is_created_in_wal_mode(backend, storage):
    if backend.name != "sqlite":
        pytest.skip("SQLite-only behaviour")
    # the parent directory did not exist before open()
    assert backend.admin("PRAGMA journal_mode") == [("wal",)]


async def test_open_storage_factory(tmp_path):
    cfg = {"core.storage": "sqlite", "sqlite.path": str(tmp_path / "db.sqlite"),
           "mysql.host": "db", "mysql.user": "u", "mysql.password": "p",
           "mysql.database": "evq", "mysql.port": 3307}
    st = open_storage(cfg)
    assert isinstance(st, SQLiteStorage) and st.path == cfg["sqlite.path"]
    assert not (tmp_path / "db.sqlite").exists()  # not opened
    cfg["core.storage"] = "mysql"
    my = open_storage(cfg, wait_db=True)
    assert isinstance(my, MySQLStorage)
    assert (my.host, my.user, my.password, my.database, my.port, my.wait_db) == (
        "db", "u", "p", "evq", 3307, True)
    cfg["core.storage"] = "oracle"
    with pytest.raises(ValueError, match="oracle"):
        open_storage(cfg)


# -- MySQL connection handling ------------------------------------------------------------------
async def test_mysql_reconnects_after_its_connections_are_killed(mysql_backend, storage):
    await storage.query("SELECT 1")
    ids = [r[0] for r in mysql_backend.admin(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        (mysql_backend.target,))]
    assert len(ids) >= 2  # the writer and a reader
    for i in ids:
        mysql_backend.admin(f"KILL {i}")
    assert (await storage.execute(ADD_QUEUE, ("after", 1))).rowcount == 1
    assert await storage.query("SELECT COUNT(*) FROM t_queue") == [(2,)]


class Outage:
    """Makes the database unusable for a storage and back: the MariaDB server goes away (a
    proxy in between stops), or another process holds the SQLite file's write lock."""

    def __init__(self, backend, proxy) -> None:
        self.backend = backend
        self.proxy = proxy
        self._lock: sqlite3.Connection | None = None
        self.on = False

    def make(self, **kw):
        if self.backend.name == "sqlite":
            return self.backend.make(busy_timeout=0.05, **kw)
        return self.backend.make(port=self.proxy.port, **kw)

    async def begin(self) -> None:
        self.on = True
        if self.backend.name == "sqlite":
            self._lock = sqlite3.connect(self.backend.target, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
        else:
            await self.proxy.stop()

    async def end(self) -> None:
        if not self.on:
            return
        self.on = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        else:
            await self.proxy.start()


async def test_outage_keeps_writes_fails_waiting_callers_and_shows_in_health(backend, proxy,
                                                                             caplog):
    caplog.set_level(logging.INFO, logger="evqueue.storage")
    outage = Outage(backend, proxy)
    st = outage.make(retry_timeout=0.5)
    await st.open()
    try:
        await st.query("SELECT 1")
        assert st.health() | {"since": ""} == {
            "backend": backend.name, "state": "ok", "since": "", "error": "", "outages": "0",
            "pending_writes": "0"}
        await outage.begin()
        for i in range(20):
            st.write(ADD_LOG, ("n", 1, str(i)))
        kept = asyncio.ensure_future(st.transaction(
            lambda tx: tx.execute(ADD_LOG, ("n", 1, "kept")).rowcount, keep=True))
        with pytest.raises(StorageUnavailable):
            await st.execute(ADD_LOG, ("n", 1, "lost"))
        assert not kept.done()  # retried past retry_timeout, until the database is back
        if backend.name == "mysql":  # SQLite readers (WAL) are not blocked by the lock
            with pytest.raises(StorageUnavailable):
                await st.query("SELECT 1")
        health = st.health()
        assert health["state"] == "unavailable" and DATETIME.match(health["since"])
        assert health["error"] and health["outages"] == "1"
        assert "Database unavailable (" in caplog.text
        await outage.end()
        assert await kept == 1
        rows = await st.query("SELECT log_message FROM t_log ORDER BY log_id")
        assert [r[0] for r in rows] == [str(i) for i in range(20)] + ["kept"]
        assert st.health()["state"] == "ok" and st.health()["outages"] == "1"
        assert "Database available again after" in caplog.text
    finally:
        await outage.end()
        await st.close()


async def test_close_during_outage_gives_up_after_the_retry_time(backend, proxy, caplog):
    outage = Outage(backend, proxy)
    st = outage.make(retry_timeout=0.5)
    await st.open()
    await outage.begin()
    try:
        st.write(ADD_LOG, ("n", 1, "doomed"))
        kept = asyncio.ensure_future(st.transaction(
            lambda tx: tx.execute(ADD_LOG, ("n", 1, "kept")), keep=True))
        started = time.monotonic()
        await asyncio.wait_for(st.close(), 5)
        assert time.monotonic() - started < 3
        with pytest.raises(StorageUnavailable):
            await kept
    finally:
        await outage.end()
    assert "Database unavailable at shutdown: 1 queued writes lost" in caplog.text
    assert backend.admin("SELECT COUNT(*) FROM t_log") == [(0,)]


@pytest.mark.parametrize("lands", [True, False])
@pytest.mark.parametrize("new_id", [True, False])
async def test_mysql_commit_whose_answer_is_lost(mysql_backend, proxy, caplog, lands, new_id):
    """The connection breaks after COMMIT was sent: once the server has ended that session,
    the writer finds out whether the batch landed (a row it inserted with a new id exists, or
    else a marker row it inserted for that purpose), and replays it only if not. Either way
    the write is there once (a replay would break the unique key), as the caller was told."""
    caplog.set_level(logging.INFO, logger="evqueue.storage")
    st = mysql_backend.make(port=proxy.port)
    await st.open()
    try:
        proxy.cut_commit = "forward" if lands else "drop"
        if new_id:
            result = await st.execute(ADD_QUEUE, ("once", 1))
            expected = [(result.lastrowid,)]
            rows = "SELECT queue_id FROM t_queue WHERE queue_name = 'once'"
        else:
            result = await st.execute("INSERT INTO t_evqueue_claim (claim_name, node_name) "
                                      "VALUES ('once', 'n1')")
            expected = [("once",)]
            rows = "SELECT claim_name FROM t_evqueue_claim"  # the marker is gone
        assert proxy.cut_commit is None  # the cut happened
        assert result.rowcount == 1
        await st.flush()
        assert await st.query(rows) == expected
        assert ("had landed" if lands else "did not land: replaying it") in caplog.text
    finally:
        await st.close()


async def test_mysql_wait_db(mysql_backend, proxy, caplog):
    await proxy.stop()
    with pytest.raises(StorageUnavailable, match="Can't connect"):
        await mysql_backend.make(port=proxy.port).open()
    # an open() that is waiting can be cancelled (the daemon is stopped meanwhile)
    abandoned = mysql_backend.make(port=proxy.port, wait_db=True)
    opening = asyncio.create_task(abandoned.open())
    await asyncio.sleep(0.1)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await asyncio.to_thread(abandoned._writer.join, 3)
    assert not abandoned._writer.is_alive()

    st = mysql_backend.make(port=proxy.port, wait_db=True)
    opening = asyncio.create_task(st.open())
    await asyncio.sleep(0.3)
    assert not opening.done()
    assert "Database not yet ready, retrying..." in caplog.text
    await proxy.start()
    await asyncio.wait_for(opening, 5)
    try:
        assert await st.query("SELECT queue_name FROM t_queue") == [("default",)]
    finally:
        await st.close()
