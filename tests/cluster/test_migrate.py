"""``evqueue migrate-db``: a SQLite state copied into MariaDB serves the same answers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pymysql
from evqtest import create_workflow, one_task, wait_terminated
from test_cluster import MYSQL, _mysql_or_skip

from evqueue.migrate import migrate
from evqueue.storage.base import now
from evqueue.storage.mysql import MySQLStorage
from evqueue.storage.sqlite import SQLiteStorage


def test_sqlite_state_moves_to_mysql(make_daemon):
    _mysql_or_skip()
    lite = make_daemon()
    with lite.client() as c:
        create_workflow(c, "w", one_task("/bin/echo", "moved"))
        c.query('<queue action="create" name="q2" concurrency="3" scheduler="prio" '
                'dynamic="no" />')
        iid = int(c.query('<instance action="launch" name="w" />').get("workflow-instance-id"))
        before = wait_terminated(c, iid)
    lite.stop()
    database = f"evq_test_{secrets.token_hex(4)}"
    try:
        my = make_daemon(start=False, **{
            "core.storage": "mysql", "mysql.host": "127.0.0.1", "mysql.user": "root",
            "mysql.password": "", "mysql.database": database})
        r = subprocess.run([sys.executable, "-m", "evqueue", "migrate-db", "--from",
                            f"sqlite:{os.path.join(lite.root, 'evqueue.db')}", "--to", "mysql",
                            "--config", my.config_path], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "copied" in r.stdout
        my.start()
        with my.client() as c:
            doc = c.query(f'<instance action="query" id="{iid}" />')[0]
            assert doc.find(".//output").text == before.find(".//output").text == "moved\n"
            assert [q.get("name") for q in c.query('<queuepool action="list" />')] == [
                "default", "q2"]
            new = int(c.query('<instance action="launch" name="w" />').get(
                "workflow-instance-id"))
            assert new > iid  # ids continue after the copied ones
            wait_terminated(c, new)
        # a second migration into a database that holds data is refused
        r = subprocess.run([sys.executable, "-m", "evqueue", "migrate-db", "--from",
                            f"sqlite:{os.path.join(lite.root, 'evqueue.db')}", "--to", "mysql",
                            "--config", my.config_path], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and "already holds data" in r.stderr
    finally:
        db = pymysql.connect(**MYSQL)
        db.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        db.close()


async def test_large_tables_are_copied_in_bounded_chunks(tmp_path):
    """More rows than one read, and values too big to share one INSERT, keep ids and data."""
    _mysql_or_skip()
    source = SQLiteStorage(str(tmp_path / "state.db"))
    await source.open()
    for i in range(450):
        source.write("INSERT INTO t_log (node_name, log_level, log_message, log_timestamp) "
                     "VALUES (%s, %s, %s, %s)", ("n1", 6, f"message {i}", now()))
    for i in range(3):
        source.write("INSERT INTO t_datastore (workflow_instance_id, datastore_value) "
                     "VALUES (%s, %s)", (i, f"{i}" * (3 << 20)))
    await source.flush()
    database = f"evq_test_{secrets.token_hex(4)}"
    target = MySQLStorage("127.0.0.1", "root", "", database)
    await target.open()
    try:
        copied = await migrate(source, target)
        assert copied["t_log"] == 450 and copied["t_datastore"] == 3
        sql = "SELECT log_id, log_message FROM t_log ORDER BY log_id"
        assert await target.query(sql) == await source.query(sql)
        sql = ("SELECT datastore_id, workflow_instance_id, LENGTH(datastore_value), "
               "SUBSTR(datastore_value, 1, 1) FROM t_datastore ORDER BY datastore_id")
        assert await target.query(sql) == await source.query(sql)
    finally:
        await source.close()
        await target.close()
        db = pymysql.connect(**MYSQL)
        db.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        db.close()
