"""Garbage collection of old instances and logs, in batches, on a real daemon."""

from __future__ import annotations

import os
import sqlite3
import time

from evqtest import create_workflow, one_task, wait_terminated

from evqueue.client import EvqError
from evqueue.config import Config
from evqueue.engine.gc import GarbageCollector
from evqueue.server import Server
from evqueue.storage.base import Tx, now


def test_gc_purges_expired_instances_and_logs(make_daemon):
    d = make_daemon(**{"gc.enable": "yes", "gc.interval": "1", "gc.limit": "2",
                       "gc.delay": "0", "gc.workflowinstance.retention": "0"})
    db = sqlite3.connect(os.path.join(d.root, "evqueue.db"))
    db.executemany("INSERT INTO t_log (node_name, log_level, log_message, log_timestamp) "
                   "VALUES ('localhost', 4, ?, '2000-01-01 00:00:00')",
                   [(f"old {i}",) for i in range(5)])
    db.commit()
    with d.client() as c:
        create_workflow(c, "w", one_task("/bin/true"))
        ids = [int(c.query('<instance action="launch" name="w" />').get("workflow-instance-id"))
               for _ in range(5)]
        for iid in ids:
            wait_terminated(c, iid)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                for iid in ids:
                    c.query(f'<instance action="query" id="{iid}" />')
            except EvqError as e:
                assert e.code == "UNKNOWN_INSTANCE"
                if c.query('<instances action="list" />').get("rows") == "0":
                    break
            time.sleep(0.2)
        assert c.query('<instances action="list" />').get("rows") == "0"
    old = db.execute("SELECT COUNT(*) FROM t_log WHERE log_message LIKE 'old %'").fetchone()[0]
    assert old == 0
    assert db.execute("SELECT COUNT(*) FROM t_workflow_instance_parameters").fetchone()[0] == 0


async def test_passes_are_bounded_even_when_timestamps_tie(tmp_path):
    """gc.limit rows per table and pass, whatever the timestamps; running and recent
    instances stay; an instance's parameters, tags and datastore entries go with it."""
    server = Server(Config.from_mapping({
        "core.storage": "sqlite", "sqlite.path": str(tmp_path / "gc.db"),
        "logger.db.enable": "no", "logger.syslog.enable": "no",
        "gc.limit": "3", "gc.delay": "0", "gc.workflowinstance.retention": "1",
        "gc.logs.retention": "1"}))
    storage = server.storage
    await storage.open()
    try:
        old, recent = "2000-01-01 00:00:00", now()

        def fill(tx: Tx) -> None:
            for i in range(7):
                tx.execute("INSERT INTO t_log (node_name, log_level, log_message, "
                           "log_timestamp) VALUES ('n', 4, %s, %s)", (f"old {i}", old))
            tx.execute("INSERT INTO t_log (node_name, log_level, log_message, log_timestamp) "
                       "VALUES ('n', 4, 'recent', %s)", (recent,))
            for name in ("scheduledwf_1_946684800", "running_1"):
                tx.execute("INSERT INTO t_evqueue_claim (claim_name, node_name, claim_time) "
                           "VALUES (%s, 'n', %s)", (name, old))
            for i in range(5):
                status, end = ("TERMINATED", old) if i < 4 else ("EXECUTING", None)
                iid = tx.execute(
                    "INSERT INTO t_workflow_instance (node_name, workflow_id, "
                    "workflow_instance_start, workflow_instance_end, workflow_instance_status) "
                    "VALUES ('n', 1, %s, %s, %s)", (old, end, status)).lastrowid
                tx.execute("INSERT INTO t_workflow_instance_parameters (workflow_instance_id, "
                           "workflow_instance_parameter, workflow_instance_parameter_value) "
                           "VALUES (%s, 'p', 'v')", (iid,))
                tx.execute("INSERT INTO t_workflow_instance_tag (tag_id, workflow_instance_id) "
                           "VALUES (1, %s)", (iid,))
                tx.execute("INSERT INTO t_datastore (workflow_instance_id, datastore_value) "
                           "VALUES (%s, 'x')", (iid,))
            tx.execute("INSERT INTO t_workflow_instance (node_name, workflow_id, "
                       "workflow_instance_start, workflow_instance_end, "
                       "workflow_instance_status) VALUES ('n', 1, %s, %s, 'TERMINATED')",
                       (recent, recent))

        await storage.transaction(fill)

        async def count(sql: str) -> int:
            return (await storage.query_one(f"SELECT COUNT(*) FROM {sql}"))[0]

        gc = GarbageCollector(server)
        assert [await gc.collect() for _ in range(4)] == [3 + 3 + 2, 1 + 3, 1, 0]
        assert await count("t_evqueue_claim") == 0
        assert await count("t_log") == 1
        assert await count("t_workflow_instance") == 2  # the EXECUTING one, the recent one
        for table in ("t_workflow_instance_parameters", "t_workflow_instance_tag",
                      "t_datastore"):
            assert await count(table) == 1  # only the EXECUTING instance's rows are left

        # one run per interval, whichever node (or call) claims it first
        async def run_with_old_logs(bucket: int) -> int:
            await storage.execute("INSERT INTO t_log (node_name, log_level, log_message, "
                                  "log_timestamp) VALUES ('n', 4, 'old', %s)", (old,))
            await gc._run(bucket)
            return await count("t_log WHERE log_message = 'old'")

        assert await run_with_old_logs(5) == 0
        assert await run_with_old_logs(5) == 1  # interval 5 was already collected
        assert await run_with_old_logs(6) == 0
    finally:
        await storage.close()
