"""SQLite backend (the default): one file, WAL, ``synchronous=NORMAL`` with group commit.

Constraint errors are reported with MariaDB's texts so that clients see the same
``SQL_ERROR`` answers on both backends; SQLite only names the table and columns, so the key name
comes from :mod:`evqueue.storage.schema` and the offending value from the statement itself.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from evqueue.storage import schema
from evqueue.storage.base import DuplicateEntry, Result, StorageError
from evqueue.storage.statement import UNKNOWN, WriteStatement, insert_table, parse_write, to_qmark
from evqueue.storage.threaded import ThreadedStorage

log = logging.getLogger("evqueue.storage")

# Errors after which the same statements may succeed later (lock held by another process,
# disk full, I/O error, file not reachable): the writer keeps its queue and retries.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN",
              "SQLITE_READONLY", "SQLITE_PROTOCOL")

_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_NOT_NULL = re.compile(r"NOT NULL constraint failed: \w+\.(\w+)$")
_CHECK = re.compile(r"CHECK constraint failed: (\w+)\.(\w+)\.(\w+)$")


class SQLiteStorage(ThreadedStorage):
    """Storage in the SQLite file ``path`` (its parent directory is created if needed)."""

    dialect = "sqlite"

    def __init__(self, path: str, *, readers: int = 4, retry_timeout: float = 30.0,
                 busy_timeout: float = 5.0) -> None:
        super().__init__(readers=readers, retry_timeout=retry_timeout)
        self.path = path
        self._busy_timeout = busy_timeout

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False, cached_statements=256)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = self._connect(writer=True)
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"Unable to open SQLite database {self.path}: {exc}") from exc
        if str(mode).lower() != "wal":
            log.warning("SQLite database %s is not in WAL mode (%s)", self.path, mode)
        return conn

    def _raw_execute(self, cur: sqlite3.Cursor, sql: str, params: tuple[Any, ...]) -> None:
        cur.execute(to_qmark(sql), params)

    def _result(self, cur: sqlite3.Cursor, sql: str) -> Result:
        rowcount = max(cur.rowcount, 0)
        table = schema.BY_NAME.get(insert_table(sql) or "")
        lastrowid = 0
        if table is not None and table.auto_column is not None and rowcount and cur.lastrowid:
            # MySQL reports the first id of a multi-row insert; ids of one statement are
            # consecutive here (one writer).
            lastrowid = cur.lastrowid - rowcount + 1
        return Result(lastrowid, rowcount)

    def _lost(self, exc: Exception) -> bool:
        name = getattr(exc, "sqlite_errorname", "") or ""
        return isinstance(exc, sqlite3.OperationalError) and name.startswith(_TRANSIENT)

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _tx_alive(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    def _tables(self, cur: sqlite3.Cursor) -> set[str]:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in cur.fetchall()}

    def _indexes(self, cur: sqlite3.Cursor, table: str) -> set[str]:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                    (table,))
        return {name for (name,) in cur.fetchall()}

    def _triggers(self, cur: sqlite3.Cursor) -> set[str]:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cur.fetchall()}

    def _create_table(self, cur: sqlite3.Cursor, table: schema.Table) -> bool:
        for ddl in schema.sqlite_create(table):
            cur.execute(ddl)
        return True

    # -- MariaDB error texts ---------------------------------------------------------------------
    def _translate(self, conn: sqlite3.Connection | None, exc: Exception, sql: str,
                   params: tuple[Any, ...]) -> StorageError:
        text = str(exc)
        if not isinstance(exc, sqlite3.IntegrityError):
            return StorageError(text)
        if m := _UNIQUE.match(text):
            qualified = [c.strip().split(".", 1) for c in m.group(1).split(",")]
            table = qualified[0][0]
            columns = tuple(c[-1] for c in qualified)
            return _duplicate(conn, table, columns, parse_write(sql, params))
        if m := _NOT_NULL.match(text):
            return StorageError(f"Column '{m.group(1)}' cannot be null")
        if m := _CHECK.match(text):
            return _check_failed(*m.groups(), parse_write(sql, params))
        return StorageError(text)


def _column_values(stmt: WriteStatement | None, column: str) -> list[Any]:
    """Values written to ``column`` by each row of ``stmt`` (:data:`UNKNOWN` if not known)."""
    if stmt is None:
        return []
    columns = stmt.columns
    if columns is None:
        table = schema.BY_NAME.get(stmt.table)
        columns = tuple(c.name for c in table.columns) if table else ()
    return [dict(zip(columns, row, strict=False)).get(column, UNKNOWN) for row in stmt.rows]


def _duplicate(conn: sqlite3.Connection | None, table: str, columns: tuple[str, ...],
               stmt: WriteStatement | None) -> DuplicateEntry:
    desc = schema.BY_NAME.get(table)
    key = desc.key_for(columns) if desc else None
    candidates = [tuple(v) for v in zip(*(_column_values(stmt, c) for c in columns), strict=True)]
    if stmt is not None and stmt.verb == "UPDATE" and conn is not None:
        candidates = _update_candidates(conn, table, columns, stmt, candidates)
    value = _conflicting(conn, table, columns, candidates)
    name = key.name if key else columns[0]
    return DuplicateEntry(f"Duplicate entry '{mariadb_key_value(value)}' for key '{name}'")


def _update_candidates(conn: sqlite3.Connection, table: str, columns: tuple[str, ...],
                       stmt: WriteStatement, candidates: list[tuple[Any, ...]]
                       ) -> list[tuple[Any, ...]]:
    """For an UPDATE that sets only part of a composite key, read the rest from the rows that
    the statement's WHERE selects."""
    assert stmt.columns is not None
    new = dict(zip(stmt.columns, stmt.rows[0], strict=True))
    missing = [c for c in columns if c not in new]
    if not missing:
        return candidates
    select = ", ".join(f'"{c}"' for c in missing)
    try:
        rows = conn.execute(f'SELECT {select} FROM "{table}" {to_qmark(stmt.where)}',
                            stmt.where_params).fetchmany(100)
    except (sqlite3.Error, StorageError):
        return candidates
    return [
        tuple(new[c] if c in new else dict(zip(missing, row, strict=True))[c] for c in columns)
        for row in rows
    ]


def _conflicting(conn: sqlite3.Connection | None, table: str, columns: tuple[str, ...],
                 candidates: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The candidate key value that collides (with a stored row or an earlier row of the
    same statement); the first one if it cannot be told."""
    known = [c for c in candidates if UNKNOWN not in c]
    if len(candidates) <= 1 or conn is None:
        return candidates[0] if candidates else (UNKNOWN,) * len(columns)
    where = " AND ".join(f'"{c}" = ?' for c in columns)
    seen: set[tuple[Any, ...]] = set()
    for cand in known:
        if cand in seen:
            return cand
        seen.add(cand)
        try:
            if conn.execute(f'SELECT 1 FROM "{table}" WHERE {where} LIMIT 1', cand).fetchone():
                return cand
        except sqlite3.Error:
            break
    return candidates[0]


def mariadb_key_value(values: Sequence[Any]) -> str:
    """A key value as MariaDB prints it in ``Duplicate entry '%-.64T'``: parts joined with
    ``-``, cut to 64 bytes with ``...`` (without splitting a character)."""
    text = "-".join(_printed(v) for v in values)
    raw = text.encode()
    if len(raw) > 64:
        text = raw[:61].decode(errors="ignore") + "..."
    return text


def _printed(value: Any) -> str:
    if value is None:
        return "NULL"
    if value is UNKNOWN:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _check_failed(table: str, column: str, kind: str, stmt: WriteStatement | None
                  ) -> StorageError:
    desc = schema.BY_NAME.get(table)
    col = desc.column(column) if desc and column in {c.name for c in desc.columns} else None
    values = _column_values(stmt, column)

    def row_of(bad: Any) -> int:
        return next((i + 1 for i, v in enumerate(values) if isinstance(v, str) and bad(v)), 1)

    if kind == "len":
        limit = col.max_length if col and col.max_length else 0
        row = row_of(lambda v: len(v) > limit)
        return StorageError(f"Data too long for column '{column}' at row {row}")
    if kind == "enum":
        allowed = col.enum_values if col else ()
        row = row_of(lambda v: v not in allowed)
        return StorageError(f"Data truncated for column '{column}' at row {row}")
    row = row_of(lambda v: not v.isascii())
    bad = values[row - 1] if len(values) >= row else ""
    return StorageError(
        f"Incorrect string value: '{mariadb_bad_string(bad)}' for column "
        f"`main`.`{table}`.`{column}` at row {row}"
    )


def mariadb_bad_string(value: Any) -> str:
    """MariaDB's excerpt of a string its column charset cannot hold: up to 6 bytes from the
    first non-ASCII byte, non-printable bytes as ``\\xHH``, then ``...`` if more follow."""
    raw = value.encode() if isinstance(value, str) else b""
    start = next((i for i, b in enumerate(raw) if b >= 0x80), 0)
    chunk = raw[start:start + 6]
    text = "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02X}" for b in chunk)
    return text + ("..." if len(raw) > start + 6 else "")
