"""The evQueue 3.3 schema, described once and rendered as MySQL or SQLite DDL.

The description is the single source of truth for table, column and key names: the MySQL DDL
reproduces the original engine's tables (``src/DB/tables.cpp``, ops.md §3.3) so that a database
created here can still be used by the C++ engine and vice versa; the SQLite DDL is its
translation. Keys are also what the SQLite backend uses to turn its constraint errors into
MariaDB's texts (``Duplicate entry 'x' for key 'queue_name'``), so their names are MariaDB's.

Our own, additive upgrades (extra indexes, ...) are tracked in ``t_evqueue_schema``, separately
from the original's ``v3.3`` table comments.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TABLE_VERSION = "v3.3"
#: Version in ``t_evqueue_schema`` (steps: :data:`evqueue.storage.threaded.MIGRATIONS`).
SCHEMA_VERSION = 3

NOW = object()
"""Default value meaning "the current local time" (``CURRENT_TIMESTAMP``)."""


@dataclass(frozen=True)
class Column:
    """One column. ``type`` is MySQL's spelling; SQLite's is derived from it."""

    name: str
    type: str
    null: bool = False
    default: Any = None
    ascii: bool = False
    binary: bool = False
    auto: bool = False
    on_update_now: bool = False

    @property
    def is_int(self) -> bool:
        return "int" in self.type

    @property
    def is_blob(self) -> bool:
        return self.type.endswith("blob")

    @property
    def enum_values(self) -> tuple[str, ...]:
        if not self.type.startswith("enum("):
            return ()
        return tuple(v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", self.type))

    @property
    def max_length(self) -> int | None:
        m = re.fullmatch(r"varchar\((\d+)\)", self.type)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Key:
    """An index. ``name`` is MariaDB's key name (``PRIMARY`` for the primary key); a column
    may carry a MySQL prefix length, ``"col(255)"``."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    #: Ours, not the original's: added by migration to databases the original created.
    extra: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.split("(")[0] for c in self.columns)

    @property
    def primary(self) -> bool:
        return self.name == "PRIMARY"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    keys: tuple[Key, ...] = ()
    charset: str = "utf8"
    #: Core tables carry the ``v3.3`` comment that the original checks (storage ones do not).
    core: bool = True
    #: Portable ``INSERT`` statements run right after the table is created.
    seeds: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    #: The original's storage DDL starts some auto-increments high (a quirk we keep).
    auto_increment: int | None = None
    comment: str | None = TABLE_VERSION

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}.{name}")

    @property
    def auto_column(self) -> Column | None:
        return next((c for c in self.columns if c.auto), None)

    def key_for(self, columns: Sequence[str]) -> Key | None:
        """The unique key (or primary key) made of exactly these columns."""
        wanted = tuple(columns)
        for k in self.keys:
            if (k.unique or k.primary) and k.column_names == wanted:
                return k
        return None


# -- compact column constructors ----------------------------------------------------------------
def _uint(name: str, **kw: Any) -> Column:
    return Column(name, "int(10) unsigned", **kw)


def _int(name: str, **kw: Any) -> Column:
    return Column(name, "int(11)", **kw)


def _bool(name: str, **kw: Any) -> Column:
    return Column(name, "tinyint(1)", **kw)


def _varchar(name: str, size: int, **kw: Any) -> Column:
    return Column(name, f"varchar({size})", **kw)


def _text(name: str, kind: str = "text", **kw: Any) -> Column:
    return Column(name, kind, **kw)


def _enum(name: str, *values: str, **kw: Any) -> Column:
    quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
    return Column(name, f"enum({quoted})", ascii=True, **kw)


def _timestamp(name: str, **kw: Any) -> Column:
    return Column(name, "timestamp", **kw)


def _id(name: str) -> Column:
    return _uint(name, auto=True)


def _node() -> Column:
    return _varchar("node_name", 32, ascii=True)


def _pk(*columns: str) -> Key:
    return Key("PRIMARY", columns, unique=True)


def _uk(name: str, *columns: str) -> Key:
    return Key(name, columns or (name,), unique=True)


def _k(name: str, *columns: str) -> Key:
    return Key(name, columns or (name,))


def _extra(name: str, *columns: str) -> Key:
    return Key(name, columns or (name,), extra=True)


ADMIN_PASSWORD = hashlib.sha1(b"admin").hexdigest()

TABLES: tuple[Table, ...] = (
    Table("t_datastore", (
        _id("datastore_id"),
        _uint("workflow_instance_id"),
        _text("datastore_value", "longtext"),
    ), (_pk("datastore_id"), _k("workflow_instance_id"))),
    Table("t_log", (
        _id("log_id"),
        _node(),
        _int("log_level"),
        _text("log_message"),
        _timestamp("log_timestamp", default=NOW, on_update_now=True),
    ), (_pk("log_id"), _extra("log_timestamp"))),
    Table("t_log_api", (
        _id("log_api_id"),
        _node(),
        _uint("user_id"),
        _uint("log_api_object_id"),
        _enum("log_api_object_type", "Workflow", "WorkflowSchedule", "RetrySchedule", "User",
              "Tag", "Queue", "Channel", "ChannelGroup", "Alert"),
        _varchar("log_api_group", 32, ascii=True),
        _varchar("log_api_action", 32, ascii=True),
        _timestamp("log_api_timestamp", default=NOW),
    ), (_pk("log_api_id"), _extra("log_api_timestamp")), charset="utf8mb4"),
    Table("t_log_notifications", (
        _id("log_notifications_id"),
        _node(),
        _uint("log_notifications_pid"),
        _text("log_notifications_message"),
        _timestamp("log_notifications_timestamp", default=NOW),
    ), (_pk("log_notifications_id"), _extra("log_notifications_timestamp"))),
    Table("t_notification", (
        _id("notification_id"),
        _uint("notification_type_id"),
        _varchar("notification_name", 64),
        _uint("notification_subscribe_all", default=0),
        _text("notification_parameters", "longtext"),
    ), (_pk("notification_id"),)),
    Table("t_notification_type", (
        _id("notification_type_id"),
        _enum("notification_type_scope", "WORKFLOW", "ELOGS", default="WORKFLOW"),
        _varchar("notification_type_name", 32),
        _text("notification_type_description"),
        _text("notification_type_manifest", "longtext"),
        _text("notification_type_binary_content", "longblob", null=True),
        _text("notification_type_conf_content", "longblob", null=True),
    ), (_pk("notification_type_id"), _uk("notification_type_name"))),
    Table("t_queue", (
        _id("queue_id"),
        _varchar("queue_name", 64, ascii=True, binary=True),
        _uint("queue_concurrency"),
        _varchar("queue_scheduler", 32, ascii=True, default="default"),
        _bool("queue_dynamic", default=0),
    ), (_pk("queue_id"), _uk("queue_name")), seeds=(
        ("INSERT INTO t_queue (queue_name, queue_concurrency, queue_scheduler) "
         "VALUES (%s, %s, %s)", ("default", 1, "default")),
    )),
    Table("t_schedule", (
        _id("schedule_id"),
        _varchar("schedule_name", 64),
        _text("schedule_xml"),
    ), (_pk("schedule_id"), _uk("schedule_name"))),
    Table("t_tag", (
        _id("tag_id"),
        _varchar("tag_label", 64),
    ), (_pk("tag_id"), _uk("tag_label"))),
    Table("t_uniqueaction", (
        _id("uniqueaction_id"),
        _node(),
        _varchar("uniqueaction_name", 64),
        _timestamp("uniqueaction_time", default=NOW),
    ), (_pk("uniqueaction_id"), _k("uniqueaction_name", "uniqueaction_name", "uniqueaction_time"))),
    Table("t_user", (
        _id("user_id"),
        _varchar("user_login", 32),
        _varchar("user_password", 40, ascii=True),
        _varchar("user_password_salt", 40, ascii=True, null=True),
        _int("user_password_iterations", default=0),
        _enum("user_profile", "ADMIN", "USER", default="USER"),
        _text("user_preferences", ascii=True),
    ), (_pk("user_id"), _uk("user_login")), seeds=(
        ("INSERT INTO t_user (user_login, user_password, user_profile, user_preferences) "
         "VALUES (%s, %s, %s, %s)", ("admin", ADMIN_PASSWORD, "ADMIN", "")),
    )),
    Table("t_user_module", (
        _uint("user_id"),
        _varchar("module_name", 32, ascii=True),
        _varchar("user_module_type", 32, ascii=True),
        _uint("user_module_object"),
        _int("user_module_access"),
    ), (_uk("user_module", "user_id", "module_name", "user_module_type", "user_module_object"),),
        charset="utf8mb4"),
    Table("t_user_right", (
        _uint("user_id"),
        _uint("workflow_id"),
        _bool("user_right_edit"),
        _bool("user_right_read"),
        _bool("user_right_exec"),
        _bool("user_right_kill"),
    ), (_pk("user_id", "workflow_id"),)),
    Table("t_workflow", (
        _id("workflow_id"),
        _varchar("workflow_name", 64),
        _text("workflow_xml", "longtext"),
        _varchar("workflow_group", 64),
        _text("workflow_comment"),
        _varchar("workflow_lastcommit", 40, ascii=True, null=True),
    ), (_uk("workflow_id"), _uk("workflow_name"))),
    Table("t_workflow_instance", (
        _id("workflow_instance_id"),
        _varchar("node_name", 32, ascii=True, default=""),
        _int("workflow_id"),
        _uint("workflow_schedule_id", null=True),
        _varchar("workflow_instance_host", 64, null=True),
        _timestamp("workflow_instance_start", default=NOW),
        _timestamp("workflow_instance_end", null=True),
        _enum("workflow_instance_status", "EXECUTING", "TERMINATED", "ABORTED"),
        _uint("workflow_instance_errors", null=True),
        _varchar("workflow_instance_comment", 255, null=True),
        _text("workflow_instance_savepoint", "longtext", null=True),
    ), (
        _uk("workflow_instance_id"),
        _k("workflow_schedule_id"),
        _k("workflow_instance_start"),
        _k("workflow_instance_end"),
        _k("workflow_instance_status"),
        _k("workflow_instance_errors"),
        # `instances list` pages ordered by end time, filtered by status, workflow, node,
        # schedule or errors (read in index order: a page costs about one page of rows), and
        # the start-up resume of this node's executing instances. With workflow_id, the
        # `rows` count of a filter on node, schedule, errors, launch or end dates reads the
        # index only (bench/instances_list.py).
        _extra("status_end", "workflow_instance_status", "workflow_instance_end"),
        _extra("workflow_end", "workflow_id", "workflow_instance_end"),
        _extra("node_status", "node_name", "workflow_instance_status"),
        _extra("node_end", "node_name", "workflow_instance_end", "workflow_id"),
        _extra("schedule_end", "workflow_schedule_id", "workflow_instance_end", "workflow_id"),
        _extra("errors_end", "workflow_instance_errors", "workflow_instance_end",
               "workflow_id"),
        _extra("start_workflow", "workflow_instance_start", "workflow_id"),
        _extra("end_workflow", "workflow_instance_end", "workflow_id"),
    )),
    Table("t_workflow_instance_filters", (
        _uint("workflow_instance_id"),
        _varchar("workflow_instance_filter", 64),
        _varchar("workflow_instance_filter_value", 255),
    ), (
        _k("filter_and_value", "workflow_instance_filter", "workflow_instance_filter_value"),
        _extra("workflow_instance_id"),
    )),
    Table("t_workflow_instance_parameters", (
        _uint("workflow_instance_id"),
        _varchar("workflow_instance_parameter", 64),
        _text("workflow_instance_parameter_value"),
    ), (
        _k("param_and_value", "workflow_instance_parameter",
           "workflow_instance_parameter_value(255)"),
        _extra("workflow_instance_id"),
    )),
    Table("t_workflow_instance_tag", (
        _uint("tag_id"),
        _uint("workflow_instance_id"),
    ), (_pk("tag_id", "workflow_instance_id"), _k("workflow_instance_id"))),
    Table("t_workflow_notification", (
        _uint("workflow_id"),
        _uint("notification_id"),
    ), (_pk("workflow_id", "notification_id"),)),
    Table("t_workflow_schedule", (
        _id("workflow_schedule_id"),
        _node(),
        _uint("workflow_id"),
        _varchar("workflow_schedule", 255, ascii=True),
        _enum("workflow_schedule_onfailure", "CONTINUE", "SUSPEND"),
        _varchar("workflow_schedule_user", 32, null=True),
        _varchar("workflow_schedule_host", 64, null=True),
        _bool("workflow_schedule_active"),
        _text("workflow_schedule_comment"),
    ), (_pk("workflow_schedule_id"),)),
    Table("t_workflow_schedule_parameters", (
        _uint("workflow_schedule_id"),
        _varchar("workflow_schedule_parameter", 64),
        _text("workflow_schedule_parameter_value"),
    ), (_k("workflow_schedule_id"),)),
    # Storage module (src/Storage/tables.cpp)
    Table("t_storage", (
        _id("storage_id"),
        _varchar("storage_path", 255),
        _enum("storage_type", "INT", "STRING", "BOOLEAN"),
        _enum("storage_structure", "NONE", "ARRAY", "MAP"),
        _varchar("storage_name", 64),
        _text("storage_value", "mediumtext"),
    ), (_pk("storage_id"), _uk("path_name", "storage_path", "storage_name")),
        charset="utf8mb4", core=False, auto_increment=38),
    Table("t_launcher", (
        _id("launcher_id"),
        _varchar("launcher_name", 64),
        _varchar("launcher_group", 64),
        _text("launcher_description"),
        _uint("workflow_id"),
        _varchar("launcher_user", 32, null=True),
        _varchar("launcher_host", 64, null=True),
        _text("launcher_parameters"),
    ), (_pk("launcher_id"), _uk("launcher_name")), charset="utf8mb4", core=False,
        auto_increment=4),
    Table("t_display", (
        _id("display_id"),
        _varchar("display_name", 64),
        _varchar("display_group", 64),
        _varchar("storage_path", 255, ascii=True),
        _enum("display_order", "ASC", "DESC"),
        _varchar("display_item_title", 128),
        _text("display_item_content"),
    ), (_pk("display_id"), _uk("display_name")), charset="utf8mb4", core=False),
    # Ours: one row per one-node-only action occurrence (an ``any`` schedule firing); the
    # primary key makes the first node's INSERT win and every other node's fail.
    Table("t_evqueue_claim", (
        _varchar("claim_name", 128, ascii=True),
        _node(),
        _timestamp("claim_time", default=NOW),
    ), (_pk("claim_name"), _k("claim_time", "claim_time")), core=False),
)

VERSION_TABLE = Table(
    "t_evqueue_schema", (_uint("version"),), core=False, comment="evqueue schema version"
)

BY_NAME: dict[str, Table] = {t.name: t for t in (*TABLES, VERSION_TABLE)}
CORE_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES if t.core)


# -- MySQL ------------------------------------------------------------------------------------
_COLLATION = {"utf8": "utf8_unicode_ci", "utf8mb4": "utf8mb4_unicode_ci"}


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def mysql_column(c: Column) -> str:
    """The column definition as in ``CREATE TABLE`` (also used by ``ALTER TABLE``)."""
    parts = [f"`{c.name}`", c.type]
    if c.ascii:
        parts.append("CHARACTER SET ascii")
        if c.binary:
            parts.append("COLLATE ascii_bin")
    parts.append("NULL" if c.null else "NOT NULL")
    if c.auto:
        parts.append("AUTO_INCREMENT")
    if c.default is NOW:
        parts.append("DEFAULT CURRENT_TIMESTAMP")
    elif c.default is not None:
        parts.append(f"DEFAULT {_literal(c.default)}")
    elif c.null:
        parts.append("DEFAULT NULL")
    if c.on_update_now:
        parts.append("ON UPDATE CURRENT_TIMESTAMP")
    return " ".join(parts)


def _mysql_key_columns(k: Key) -> str:
    return ",".join(re.sub(r"^(\w+)", r"`\1`", c) for c in k.columns)


def mysql_key(k: Key) -> str:
    if k.primary:
        return f"PRIMARY KEY ({_mysql_key_columns(k)})"
    kind = "UNIQUE KEY" if k.unique else "KEY"
    return f"{kind} `{k.name}` ({_mysql_key_columns(k)})"


def mysql_create(t: Table) -> str:
    body = ",\n  ".join([*(mysql_column(c) for c in t.columns), *(mysql_key(k) for k in t.keys)])
    options = f"ENGINE=InnoDB DEFAULT CHARSET={t.charset} COLLATE={_COLLATION[t.charset]}"
    if t.auto_increment:
        options += f" AUTO_INCREMENT={t.auto_increment}"
    if t.comment:
        options += f" COMMENT={_literal(t.comment)}"
    return f"CREATE TABLE `{t.name}` (\n  {body}\n) {options}"


def mysql_add_index(t: Table, k: Key) -> str:
    return f"ALTER TABLE `{t.name}` ADD {mysql_key(k)}"


# -- SQLite -----------------------------------------------------------------------------------
def check_name(table: str, column: str, kind: str) -> str:
    """Name of a SQLite CHECK constraint; its failure message is mapped back to MariaDB's
    ``kind`` error (``len``: data too long, ``enum``: data truncated, ``ascii``: incorrect
    string value)."""
    return f"{table}.{column}.{kind}"


def _sqlite_column(t: Table, c: Column) -> str:
    if c.auto:
        return f'"{c.name}" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL'
    affinity = "INTEGER" if c.is_int else "BLOB" if c.is_blob else "TEXT"
    parts = [f'"{c.name}"', affinity, "NULL" if c.null else "NOT NULL"]
    if c.default is NOW:
        parts.append("DEFAULT (datetime('now','localtime'))")
    elif c.default is not None:
        parts.append(f"DEFAULT {_literal(c.default)}")
    if affinity == "TEXT" and not (c.binary or c.enum_values or c.type == "timestamp"):
        # MySQL compares these columns case-insensitively (``*_ci`` collations).
        parts.append("COLLATE NOCASE")
    if c.max_length is not None:
        parts.append(f'CONSTRAINT "{check_name(t.name, c.name, "len")}" '
                     f'CHECK (length("{c.name}") <= {c.max_length})')
    if c.enum_values:
        values = ",".join(_literal(v) for v in c.enum_values)
        parts.append(f'CONSTRAINT "{check_name(t.name, c.name, "enum")}" '
                     f'CHECK ("{c.name}" IN ({values}))')
    if c.ascii and not c.enum_values:
        parts.append(f'CONSTRAINT "{check_name(t.name, c.name, "ascii")}" '
                     f'CHECK (length(CAST("{c.name}" AS BLOB)) = length("{c.name}"))')
    return " ".join(parts)


def sqlite_index_name(t: Table, k: Key) -> str:
    """SQLite index names are global to the database, MySQL key names per table."""
    return f"{t.name}.{k.name}"


def sqlite_index(t: Table, k: Key) -> str:
    cols = ", ".join(f'"{c}"' for c in k.column_names)
    unique = "UNIQUE " if k.unique else ""
    return f'CREATE {unique}INDEX "{sqlite_index_name(t, k)}" ON "{t.name}" ({cols})'


def _sqlite_indexed(t: Table, k: Key) -> bool:
    """Whether ``k`` needs its own SQLite index: not the rowid (the auto column) nor the
    primary key, and not a plain key whose columns start a longer key (MySQL keeps the
    original's keys; on SQLite such an index only costs every write)."""
    auto = t.auto_column
    if (auto is not None and k.column_names == (auto.name,)) or k.primary:
        return False
    return k.unique or not any(
        len(o.column_names) > len(k.column_names)
        and o.column_names[: len(k.column_names)] == k.column_names for o in t.keys)


def sqlite_create(t: Table) -> list[str]:
    body = [_sqlite_column(t, c) for c in t.columns]
    auto = t.auto_column
    for k in t.keys:
        if k.primary and not (auto is not None and k.column_names == (auto.name,)):
            body.append("PRIMARY KEY (" + ", ".join(f'"{c}"' for c in k.column_names) + ")")
    statements = [f'CREATE TABLE "{t.name}" (\n  ' + ",\n  ".join(body) + "\n)"]
    statements += [sqlite_index(t, k) for k in t.keys if _sqlite_indexed(t, k)]
    for c in t.columns:
        if c.on_update_now:
            pk = auto.name if auto is not None else "rowid"
            statements.append(
                f'CREATE TRIGGER "{t.name}.{c.name}.on_update" AFTER UPDATE ON "{t.name}" '
                f'WHEN NEW."{c.name}" IS OLD."{c.name}" BEGIN '
                f'UPDATE "{t.name}" SET "{c.name}" = datetime(\'now\',\'localtime\') '
                f'WHERE "{pk}" = NEW."{pk}"; END'
            )
    if t.auto_increment:
        statements.append(
            f"INSERT INTO sqlite_sequence (name, seq) VALUES ('{t.name}', {t.auto_increment - 1})"
        )
    return statements


def redundant_indexes(t: Table, dialect: str) -> list[str]:
    """Indexes an older evqueue created on SQLite that a longer key now covers (dropped by a
    migration)."""
    if dialect == "mysql":
        return []
    return [sqlite_index_name(t, k) for k in t.keys
            if not k.primary and not k.unique and not _sqlite_indexed(t, k)]


def extra_keys(t: Table, dialect: str) -> list[tuple[str, str]]:
    """``(index name as the backend lists it, DDL)`` of our own indexes on ``t``, which a
    migration adds to databases created by the original engine (or by an older evqueue)."""
    if dialect == "mysql":
        return [(k.name, mysql_add_index(t, k)) for k in t.keys if k.extra]
    return [(sqlite_index_name(t, k), sqlite_index(t, k)) for k in t.keys
            if k.extra and _sqlite_indexed(t, k)]


# -- instance counts --------------------------------------------------------------------------
# ``instances list`` returns the exact number of matching rows. Counting index entries costs
# ~100 ns per row on SQLite and more on MariaDB: seconds for "all instances" or "one node" over
# millions of rows. Triggers keep a count per (workflow, node, status, with errors) group and
# per (tag, workflow), so that a list filtered by those alone sums a few rows. Triggers (rather
# than our own code) keep them exact whoever writes: every node of a cluster, the original C++
# engine, an administrator, in any order (tags before their instance, or after). Derived data:
# not in TABLES (``migrate-db`` copies the instances and the target's triggers count them),
# rebuilt whenever a trigger is missing (triggers are known by name: changing a body needs a
# migration that drops one).
COUNT_TABLE = "t_evqueue_instance_count"
TAG_COUNT_TABLE = "t_evqueue_tag_count"
_WI = "t_workflow_instance"
_TAG = "t_workflow_instance_tag"
_GROUP = ("workflow_id", "node_name", "workflow_instance_status")
_COUNT_COLUMNS = "workflow_id, node_name, workflow_instance_status, with_errors, instance_count"
_TAG_COUNT_COLUMNS = "tag_id, workflow_id, instance_count"


def _trigger(dialect: str, name: str, event: str, table: str, when: str,
             statements: Sequence[str]) -> str:
    """``CREATE TRIGGER`` running ``statements`` after ``event`` on ``table`` rows matching
    ``when`` (SQLite's WHEN, MySQL's IF: MySQL has no conditional triggers)."""
    body = " ".join(f"{sql};" for sql in statements)
    if dialect == "mysql":
        if when:
            body = f"IF {when} THEN {body} END IF;"
        return (f"CREATE TRIGGER {name} AFTER {event.split(' OF ')[0]} ON {table} FOR EACH ROW "
                f"BEGIN {body} END")
    condition = f" WHEN {when}" if when else ""
    return f"CREATE TRIGGER {name} AFTER {event} ON {table}{condition} BEGIN {body} END"


def _errors(row: str) -> str:
    return f"(COALESCE({row}.workflow_instance_errors, 0) > 0)"


def _count_triggers(dialect: str) -> dict[str, str]:
    """Trigger name → DDL."""
    same = "<=>" if dialect == "mysql" else "IS"
    ignore = "INSERT IGNORE" if dialect == "mysql" else "INSERT OR IGNORE"

    def group(row: str) -> str:
        return " AND ".join([*(f"{c} {same} {row}.{c}" for c in _GROUP),
                             f"with_errors = {_errors(row)}"])

    def step(table: str, where: str, sign: str) -> str:
        return f"UPDATE {table} SET instance_count = instance_count {sign} 1 WHERE {where}"

    def add(row: str) -> list[str]:
        values = ", ".join(f"{row}.{c}" for c in _GROUP)
        return [f"{ignore} INTO {COUNT_TABLE} ({_COUNT_COLUMNS}) "
                f"VALUES ({values}, {_errors(row)}, 0)", step(COUNT_TABLE, group(row), "+")]

    def tags_of(row: str) -> str:
        return f"SELECT tag_id FROM {_TAG} WHERE workflow_instance_id = {row}.workflow_instance_id"

    def tagged(row: str) -> str:
        """The tag counts of ``row``, an instance."""
        return f"workflow_id = {row}.workflow_id AND tag_id IN ({tags_of(row)})"

    def add_tags(row: str) -> list[str]:
        return [f"{ignore} INTO {TAG_COUNT_TABLE} ({_TAG_COUNT_COLUMNS}) "
                f"SELECT tag_id, {row}.workflow_id, 0 FROM {_TAG} "
                f"WHERE workflow_instance_id = {row}.workflow_instance_id",
                step(TAG_COUNT_TABLE, tagged(row), "+")]

    def of_tag(row: str) -> str:
        """The tag count of ``row``, a tag of an instance."""
        return (f"tag_id = {row}.tag_id AND workflow_id = (SELECT workflow_id FROM {_WI} "
                f"WHERE workflow_instance_id = {row}.workflow_instance_id)")

    group_changed = "NOT (" + " AND ".join(
        [*(f"OLD.{c} {same} NEW.{c}" for c in _GROUP),
         f"{_errors('OLD')} = {_errors('NEW')}"]) + ")"
    moved = (f"NOT (OLD.workflow_id {same} NEW.workflow_id AND OLD.workflow_instance_id = "
             "NEW.workflow_instance_id)")
    instance_of_tag = (f"EXISTS (SELECT 1 FROM {_WI} "
                       "WHERE workflow_instance_id = NEW.workflow_instance_id)")
    triggers = [
        ("evq_instance_count_insert", "INSERT", _WI, "", add("NEW")),
        ("evq_instance_count_update",
         "UPDATE OF " + ", ".join([*_GROUP, "workflow_instance_errors"]), _WI, group_changed,
         [step(COUNT_TABLE, group("OLD"), "-"), *add("NEW")]),
        ("evq_instance_count_delete", "DELETE", _WI, "", [step(COUNT_TABLE, group("OLD"), "-")]),
        ("evq_tag_count_instance_insert", "INSERT", _WI, f"EXISTS ({tags_of('NEW')})",
         add_tags("NEW")),
        ("evq_tag_count_instance_update", "UPDATE OF workflow_id, workflow_instance_id", _WI,
         moved, [step(TAG_COUNT_TABLE, tagged("OLD"), "-"), *add_tags("NEW")]),
        ("evq_tag_count_instance_delete", "DELETE", _WI, f"EXISTS ({tags_of('OLD')})",
         [step(TAG_COUNT_TABLE, tagged("OLD"), "-")]),
        ("evq_tag_count_tag_insert", "INSERT", _TAG, instance_of_tag,
         [f"{ignore} INTO {TAG_COUNT_TABLE} ({_TAG_COUNT_COLUMNS}) SELECT NEW.tag_id, "
          f"workflow_id, 0 FROM {_WI} WHERE workflow_instance_id = NEW.workflow_instance_id",
          step(TAG_COUNT_TABLE, of_tag("NEW"), "+")]),
        ("evq_tag_count_tag_delete", "DELETE", _TAG, "",
         [step(TAG_COUNT_TABLE, of_tag("OLD"), "-")]),
    ]
    return {name: _trigger(dialect, name, event, table, when, body)
            for name, event, table, when, body in triggers}


COUNT_TRIGGERS: tuple[str, ...] = tuple(_count_triggers("sqlite"))


def instance_count_ddl(dialect: str) -> list[str]:
    """The count tables (if missing), then their triggers, each dropped and created again."""
    if dialect == "mysql":
        ascii_ = " CHARACTER SET ascii"
        table_end = " ENGINE=InnoDB COMMENT='evqueue: instances per group (kept by triggers)'"
    else:
        ascii_, table_end = "", " WITHOUT ROWID"
    statements = [
        f"CREATE TABLE IF NOT EXISTS {COUNT_TABLE} (workflow_id INTEGER NOT NULL, "
        f"node_name VARCHAR(32){ascii_} NOT NULL DEFAULT '', "
        f"workflow_instance_status VARCHAR(16){ascii_} NOT NULL, "
        "with_errors SMALLINT NOT NULL, instance_count BIGINT NOT NULL, "
        f"PRIMARY KEY (workflow_id, node_name, workflow_instance_status, with_errors)){table_end}",
        f"CREATE TABLE IF NOT EXISTS {TAG_COUNT_TABLE} (tag_id INTEGER NOT NULL, "
        "workflow_id INTEGER NOT NULL, instance_count BIGINT NOT NULL, "
        f"PRIMARY KEY (tag_id, workflow_id)){table_end}",
    ]
    for name, ddl in _count_triggers(dialect).items():
        statements += [f"DROP TRIGGER IF EXISTS {name}", ddl]
    return statements


#: Recount everything (after the triggers were missing, e.g. in a database of the original).
INSTANCE_COUNT_REBUILD = (
    f"DELETE FROM {COUNT_TABLE}",
    f"INSERT INTO {COUNT_TABLE} ({_COUNT_COLUMNS}) SELECT {', '.join(_GROUP)}, "
    f"{_errors(_WI)}, COUNT(*) FROM {_WI} GROUP BY {', '.join(_GROUP)}, {_errors(_WI)}",
    f"DELETE FROM {TAG_COUNT_TABLE}",
    f"INSERT INTO {TAG_COUNT_TABLE} ({_TAG_COUNT_COLUMNS}) SELECT it.tag_id, wi.workflow_id, "
    f"COUNT(*) FROM {_TAG} it JOIN {_WI} wi ON wi.workflow_instance_id = "
    "it.workflow_instance_id GROUP BY it.tag_id, wi.workflow_id",
)
