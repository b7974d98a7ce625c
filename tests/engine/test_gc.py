"""Garbage collection of old instances and logs, in batches, on a real daemon."""

from __future__ import annotations

import os
import sqlite3
import time

from evqtest import create_workflow, one_task, wait_terminated

from evqueue.client import EvqError


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
