"""``evqueue migrate-db``: a SQLite state copied into MariaDB serves the same answers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pymysql
from evqtest import create_workflow, one_task, wait_terminated
from test_cluster import MYSQL, _mysql_or_skip


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
