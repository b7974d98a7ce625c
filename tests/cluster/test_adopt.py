"""``instance migrate`` of an instance that a dead node saved at launch and never again."""

from __future__ import annotations

import os
import sqlite3

from evqtest import create_workflow, one_task, wait_terminated

_LAUNCH_DOC = ('<workflow name="w"><subjobs><job><tasks><task path="/bin/echo" '
               'queue="default"><input>adopted</input></task></tasks></job></subjobs></workflow>')


def test_an_instance_saved_at_launch_only_runs_when_adopted(daemon):
    """The node died between the launch row and its first progress savepoint: nothing ran,
    so the adopter must run the whole workflow, not close it as finished."""
    with daemon.client() as c:
        wid = create_workflow(c, "w", one_task("/bin/echo", "adopted"))
    db = sqlite3.connect(os.path.join(daemon.root, "evqueue.db"))
    with db:
        iid = db.execute(
            "INSERT INTO t_workflow_instance (node_name, workflow_id, workflow_instance_start, "
            "workflow_instance_status, workflow_instance_savepoint) "
            "VALUES ('dead', ?, '2026-01-01 00:00:00', 'EXECUTING', ?)",
            (wid, _LAUNCH_DOC)).lastrowid
    db.close()
    with daemon.client() as c:
        c.query(f'<instance action="migrate" id="{iid}" />')
        doc = wait_terminated(c, iid)
    task = doc.find(".//task")
    assert task.get("status") == "TERMINATED" and task.get("retval") == "0"
    assert task.find("output").text == "adopted\n"
