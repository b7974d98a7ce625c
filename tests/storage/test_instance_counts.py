"""The per-group instance counts kept by triggers (``instances list`` totals), on both backends."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets

from conftest import MYSQL_HOST, MYSQL_PORT, mysql_admin

from evqueue.storage import schema
from evqueue.storage.mysql import MySQLStorage

GROUPS = ("SELECT workflow_id, node_name, workflow_instance_status, "
          "COALESCE(workflow_instance_errors, 0) > 0, COUNT(*) FROM t_workflow_instance "
          "GROUP BY 1, 2, 3, 4")
COUNTS = (f"SELECT workflow_id, node_name, workflow_instance_status, with_errors, instance_count "
          f"FROM {schema.COUNT_TABLE} WHERE instance_count <> 0")
TAG_GROUPS = ("SELECT it.tag_id, wi.workflow_id, COUNT(*) FROM t_workflow_instance_tag it JOIN "
              "t_workflow_instance wi ON wi.workflow_instance_id = it.workflow_instance_id "
              "GROUP BY 1, 2")
TAG_COUNTS = (f"SELECT tag_id, workflow_id, instance_count FROM {schema.TAG_COUNT_TABLE} "
              "WHERE instance_count <> 0")
INSERT = ("INSERT INTO t_workflow_instance (node_name, workflow_id, workflow_instance_status, "
          "workflow_instance_errors) VALUES (%s, %s, %s, %s)")


async def _groups(storage, sql: str) -> set[tuple[int, str, str, int, int]]:
    return {(int(w), n, s, int(e), int(c)) for w, n, s, e, c in await storage.query(sql)}


async def _tag_groups(storage, sql: str) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in await storage.query(sql)}


async def _check(storage) -> None:
    assert await _groups(storage, COUNTS) == await _groups(storage, GROUPS)
    assert await _tag_groups(storage, TAG_COUNTS) == await _tag_groups(storage, TAG_GROUPS)


async def test_counts_follow_every_kind_of_write(storage):
    """Inserts, status/error/node/workflow changes, savepoint-only updates and deletes (one
    by one and in bulk), tags added and removed (also before their instance exists, and left
    behind by a deleted instance), in random order: the counts always equal a GROUP BY of the
    rows (tags: of the tags joined to their instances)."""
    assert storage.instance_counts
    rng = random.Random(7)
    nodes, statuses = ("n1", "n2", ""), ("EXECUTING", "TERMINATED", "ABORTED")
    for step in range(400):
        ids = [r[0] for r in await storage.query(
            "SELECT workflow_instance_id FROM t_workflow_instance")]
        op = rng.random()
        if op < 0.4 or not ids:
            await storage.execute(INSERT, (rng.choice(nodes), rng.randint(1, 3),
                                           rng.choice(statuses), rng.choice((None, 0, 2))))
        elif op < 0.6:
            await storage.execute(
                "UPDATE t_workflow_instance SET workflow_instance_status = %s, "
                "workflow_instance_errors = %s WHERE workflow_instance_id = %s",
                (rng.choice(statuses), rng.choice((None, 0, 1)), rng.choice(ids)))
        elif op < 0.65:  # as ``migrate`` does
            await storage.execute("UPDATE t_workflow_instance SET node_name = %s "
                                  "WHERE workflow_instance_id = %s",
                                  (rng.choice(nodes), rng.choice(ids)))
        elif op < 0.7:
            await storage.execute("UPDATE t_workflow_instance SET workflow_id = %s "
                                  "WHERE workflow_instance_id = %s",
                                  (rng.randint(1, 3), rng.choice(ids)))
        elif op < 0.8:
            await storage.execute("UPDATE t_workflow_instance SET workflow_instance_savepoint "
                                  "= 'x' WHERE workflow_instance_id = %s", (rng.choice(ids),))
        elif op < 0.85:
            await storage.execute("DELETE FROM t_workflow_instance WHERE workflow_instance_id "
                                  "= %s", (rng.choice(ids),))
        elif op < 0.87:
            await storage.execute("DELETE FROM t_workflow_instance WHERE workflow_id = %s",
                                  (rng.randint(1, 3),))
        elif op < 0.95:  # a tag, sometimes on an instance id that does not exist (yet)
            await storage.execute(
                "INSERT INTO t_workflow_instance_tag (tag_id, workflow_instance_id) "
                "SELECT %s, %s WHERE NOT EXISTS (SELECT 1 FROM t_workflow_instance_tag WHERE "
                "tag_id = %s AND workflow_instance_id = %s)",
                (tag := rng.randint(1, 2), iid := rng.choice([*ids, max(ids) + 1]), tag, iid))
        else:
            await storage.execute("DELETE FROM t_workflow_instance_tag WHERE tag_id = %s AND "
                                  "workflow_instance_id = %s",
                                  (rng.randint(1, 2), rng.choice(ids)))
        if step % 25 == 0:
            await _check(storage)
    await _check(storage)


async def test_counts_are_rebuilt_when_their_triggers_are_missing(backend, storage):
    """A database written without the triggers (by the original engine, or an evqueue that
    could not create them) is recounted at the next start."""
    for _ in range(5):
        await storage.execute(INSERT, ("n1", 1, "TERMINATED", 1))
    await storage.close()
    for trigger in schema.COUNT_TRIGGERS:
        backend.admin(f"DROP TRIGGER {trigger}")
    for _ in range(3):
        backend.admin(INSERT, ("n2", 2, "EXECUTING", None))
    backend.admin(f"UPDATE {schema.COUNT_TABLE} SET instance_count = 99")
    again = backend.make()
    await again.open()
    try:
        assert again.instance_counts
        assert await _groups(again, COUNTS) == {(1, "n1", "TERMINATED", 1, 5),
                                                (2, "n2", "EXECUTING", 0, 3)}
        await again.execute(INSERT, ("n2", 2, "EXECUTING", None))
        assert (2, "n2", "EXECUTING", 0, 4) in await _groups(again, COUNTS)
    finally:
        await again.close()


async def test_nodes_starting_together_on_a_new_database(mysql_backend):
    """Three cluster nodes open one new database at once: the schema, the triggers and the
    counts are set up, and every node counts."""
    nodes = [mysql_backend.make() for _ in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        assert all(node.instance_counts for node in nodes)
        await asyncio.gather(*(node.execute(INSERT, (f"n{k}", 1, "EXECUTING", None))
                               for k, node in enumerate(nodes)))
        assert await _groups(nodes[0], COUNTS) == await _groups(nodes[0], GROUPS)
        assert len(await _groups(nodes[0], COUNTS)) == 3
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


async def test_without_the_right_to_create_triggers(mysql_backend, caplog):
    """An account that may not create triggers (MariaDB with binary logging and no SUPER
    behaves alike): the daemon starts, says why in the log, and counts rows instead."""
    user = f"evq_{secrets.token_hex(4)}"
    root = mysql_admin()
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
            cur.execute("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON "
                        f"`{mysql_backend.target}`.* TO '{user}'@'%'")
        storage = MySQLStorage(MYSQL_HOST, user, "pw", mysql_backend.target, port=MYSQL_PORT,
                               retry_timeout=5.0)
        with caplog.at_level(logging.WARNING, logger="evqueue.storage"):
            await storage.open()
        try:
            assert not storage.instance_counts
            assert "Cannot create the instance count triggers" in caplog.text
            await storage.execute(INSERT, ("n1", 1, "EXECUTING", None))
            assert await storage.query("SELECT COUNT(*) FROM t_workflow_instance") == [(1,)]
        finally:
            await storage.close()
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        root.close()
