"""The pure helpers behind SQLite's MariaDB-compatible errors and the schema description."""

from __future__ import annotations

import sqlite3

import pytest

from evqueue.storage import schema
from evqueue.storage.base import StorageError
from evqueue.storage.sqlite import mariadb_bad_string, mariadb_key_value
from evqueue.storage.statement import UNKNOWN, insert_table, parse_write, to_qmark


def test_to_qmark():
    assert to_qmark("SELECT * FROM t WHERE a = %s AND b LIKE 'x%%'") == (
        "SELECT * FROM t WHERE a = ? AND b LIKE 'x%'")
    with pytest.raises(StorageError, match="'%d'"):
        to_qmark("SELECT '%d'")
    with pytest.raises(StorageError):
        to_qmark("SELECT 5 %")


def test_parse_insert_with_params_literals_and_expressions():
    st = parse_write(
        "INSERT INTO `t_queue` (queue_name, `queue_concurrency`, queue_scheduler, queue_dynamic) "
        "VALUES (%s, 2, 'it''s', NULL), (LOWER(%s), -3, %s, 1.5)",
        ("a", "B", "c"),
    )
    assert st is not None
    assert (st.verb, st.table) == ("INSERT", "t_queue")
    assert st.columns == ("queue_name", "queue_concurrency", "queue_scheduler", "queue_dynamic")
    assert st.rows == (("a", 2, "it's", None), (UNKNOWN, -3, "c", 1.5))


def test_parse_insert_without_columns_or_values():
    st = parse_write("INSERT OR IGNORE INTO t_tag VALUES (%s, %s)", (1, "x"))
    assert st is not None and st.columns is None and st.rows == ((1, "x"),)
    st = parse_write("INSERT INTO t_tag (tag_label) SELECT tag_label FROM t_tag")
    assert st is not None and st.rows == ()


def test_parse_update_keeps_the_where_tail_and_its_params():
    st = parse_write(
        "UPDATE t_workflow SET workflow_name = %s, workflow_xml = CONCAT(%s, 'x'), "
        "workflow_group = %s WHERE workflow_id = %s AND workflow_group <> %s",
        ("n", "xml", "g", 7, "h"),
    )
    assert st is not None
    assert st.columns == ("workflow_name", "workflow_xml", "workflow_group")
    assert st.rows == (("n", UNKNOWN, "g"),)
    assert st.where == "WHERE workflow_id = %s AND workflow_group <> %s"
    assert st.where_params == (7, "h")
    st = parse_write("UPDATE t_tag SET tag_label = 'x'")
    assert st is not None and st.where == "" and st.rows == (("x",),)


@pytest.mark.parametrize("sql", ["SELECT 1", "DELETE FROM t", "INSERT", "UPDATE t", "INSERT x",
                                 "UPDATE t SET", ""])
def test_parse_other_or_broken_statements(sql):
    assert parse_write(sql) is None


def test_insert_table():
    assert insert_table("  insert into `t_log` (a) values (1)") == "t_log"
    assert insert_table("INSERT OR REPLACE INTO t_tag VALUES (1)") == "t_tag"
    assert insert_table("UPDATE t_log SET a = 1") is None


def test_mariadb_key_value():
    assert mariadb_key_value(["a", 1, None]) == "a-1-NULL"
    assert mariadb_key_value(["x" * 64]) == "x" * 64
    assert mariadb_key_value(["x" * 65]) == "x" * 61 + "..."
    # 64 bytes at most: a 2-byte character is not split
    assert mariadb_key_value(["\u00e9" * 64]) == "\u00e9" * 30 + "..."


def test_mariadb_bad_string():
    assert mariadb_bad_string("ab" + "\u00e9" * 4 + "cdef") == "\\xC3\\xA9" * 3 + "..."
    assert mariadb_bad_string("\U0001f600x") == "\\xF0\\x9F\\x98\\x80x"
    assert mariadb_bad_string("a\u00e9") == "\\xC3\\xA9"


def test_every_key_resolves_and_sqlite_ddl_is_valid():
    conn = sqlite3.connect(":memory:")
    for table in (*schema.TABLES, schema.VERSION_TABLE):
        names = {c.name for c in table.columns}
        for key in table.keys:
            assert set(key.column_names) <= names, (table.name, key.name)
            if key.unique:
                assert table.key_for(key.column_names) is key
        for ddl in schema.sqlite_create(table):
            conn.execute(ddl)
        if table.core:
            assert schema.mysql_create(table).endswith("COMMENT='v3.3'")
    assert len({t.name for t in schema.TABLES}) == len(schema.TABLES)
    assert schema.BY_NAME["t_queue"].key_for(("queue_name",)).name == "queue_name"
    assert schema.BY_NAME["t_workflow_notification"].key_for(
        ("workflow_id", "notification_id")).name == "PRIMARY"


def test_sqlite_list_queries_use_indexes():
    """`instances list` pages must not sort or scan the whole instance table."""
    conn = sqlite3.connect(":memory:")
    for table in schema.TABLES:
        for ddl in schema.sqlite_create(table):
            conn.execute(ddl)
    base = "SELECT * FROM t_workflow_instance"
    order = " ORDER BY workflow_instance_end DESC LIMIT 30 OFFSET 60"
    for where in ("", " WHERE workflow_instance_status = 'TERMINATED'", " WHERE workflow_id = 3",
                  " WHERE workflow_id = 3 AND workflow_instance_errors > 0",
                  " WHERE workflow_instance_end < '2024-01-01 00:00:00'"):
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + base + where + order))
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, (where, plan)
