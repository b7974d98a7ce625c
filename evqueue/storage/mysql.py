"""MySQL/MariaDB backend through PyMySQL, on the original engine's schema (ops.md §3).

An existing evQueue 3.3 database can be used as is (tables with the ``v3.3`` comment; ``v3.2``
ones are upgraded like the original does), and a database created here can be given back to
the C++ engine. Errors carry the server's own texts.
"""

from __future__ import annotations

import logging
from typing import Any

import pymysql
from pymysql.constants import CLIENT, FIELD_TYPE
from pymysql.converters import conversions

from evqueue.storage import schema
from evqueue.storage.base import DuplicateEntry, Result, StorageError, StorageUnavailable
from evqueue.storage.threaded import NOTICE, ThreadedStorage

log = logging.getLogger("evqueue.storage")

DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"

# The server cannot be reached, went away, or rolled the whole transaction back (1213
# deadlock): retry (after reconnecting).
_LOST = {1040, 1053, 1213, 1927, 2002, 2003, 2006, 2013, 2055}
# What ``--wait-db`` waits for at start-up (ops.md §1.1).
_NOT_READY = {2002, 2003, 2013}
_DUP_ENTRY = 1062
#: The transaction was rolled back because another one won: deadlock, or (Galera) a conflict
#: at certification, reported as a deadlock too.
_DEADLOCK = 1213
_TABLE_EXISTS = 1050
_TRIGGER_EXISTS = 1359


def _number(text: str) -> int | float:
    """DECIMAL values (``SUM()``, ``AVG()``) as int or float, like SQLite returns them."""
    return float(text) if "." in text else int(text)


# Date/time values stay 'YYYY-MM-DD HH:MM:SS' strings (no converter = the text as sent).
_CONVERSIONS = {
    k: v for k, v in conversions.items()
    if k not in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATETIME, FIELD_TYPE.DATE, FIELD_TYPE.TIME)
}
_CONVERSIONS[FIELD_TYPE.DECIMAL] = _CONVERSIONS[FIELD_TYPE.NEWDECIMAL] = _number


def _code(exc: BaseException) -> int:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    return str(args[1]) if len(args) > 1 else str(exc)


def _quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class MySQLStorage(ThreadedStorage):
    """Storage in database ``database`` of a MySQL/MariaDB server (created if absent).

    ``host="localhost"`` means the server's default UNIX socket, like the original's client
    library; anything else is TCP on ``port``. With ``wait_db``, :meth:`open` waits for a server
    that is not up yet instead of failing.
    """

    dialect = "mysql"
    commit_can_be_unknown = True

    def __init__(self, host: str, user: str, password: str, database: str, port: int = 3306,
                 wait_db: bool = False, *, readers: int = 4, retry_timeout: float = 30.0,
                 unix_socket: str = DEFAULT_SOCKET) -> None:
        super().__init__(readers=readers, retry_timeout=retry_timeout)
        self.host = host
        self.user = user
        self.password = password
        self.database = database
        self.port = port
        self.wait_db = wait_db
        self.unix_socket = unix_socket

    def _connect_args(self, *, database: bool) -> dict[str, Any]:
        args: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "charset": "utf8mb4",
            # rowcount = rows matched (as on SQLite), not rows whose values changed
            "client_flag": CLIENT.FOUND_ROWS,
            "conv": _CONVERSIONS,
            "connect_timeout": 10,
        }
        if self.host == "localhost":
            args["unix_socket"] = self.unix_socket
        else:
            args["host"] = self.host
            args["port"] = self.port
        if database:
            args["database"] = self.database
        return args

    def _connect(self, *, writer: bool) -> pymysql.connections.Connection:
        # Readers autocommit so that each read sees the latest commits (no long-lived
        # REPEATABLE READ snapshot).
        return pymysql.connect(**self._connect_args(database=True), autocommit=not writer)

    def _open_writer(self) -> pymysql.connections.Connection:
        while True:
            try:
                conn = pymysql.connect(**self._connect_args(database=False), autocommit=False)
                break
            except pymysql.Error as exc:
                if self.wait_db and _code(exc) in _NOT_READY and not self._stop.is_set():
                    log.warning("Database not yet ready, retrying...")
                    self._stop.wait(1.0)
                    continue
                error = StorageUnavailable if self._lost(exc) else StorageError
                raise error(_text(exc)) from exc
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %s",
                            (self.database,))
                if cur.fetchone() is None:
                    log.log(NOTICE, "Database %s does not exists, creating it...", self.database)
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS {_quote_name(self.database)}")
            conn.select_db(self.database)
        except pymysql.Error as exc:
            conn.close()
            raise StorageError(_text(exc)) from exc
        return conn

    def _raw_execute(self, cur: Any, sql: str, params: tuple[Any, ...]) -> None:
        cur.execute(sql, params)

    def _result(self, cur: Any, sql: str) -> Result:
        return Result(cur.lastrowid or 0, max(cur.rowcount, 0))

    def _lost(self, exc: Exception) -> bool:
        return isinstance(exc, pymysql.InterfaceError) or (
            isinstance(exc, pymysql.OperationalError) and _code(exc) in _LOST
        )

    def _conflict(self, exc: Exception) -> bool:
        return isinstance(exc, pymysql.OperationalError) and _code(exc) == _DEADLOCK

    def _session(self, conn: Any) -> Any:
        return conn.thread_id()

    def _session_alive(self, cur: Any, session: Any) -> bool:
        cur.execute("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", (session,))
        return bool(cur.fetchall())

    def _translate(self, conn: Any, exc: Exception, sql: str, params: tuple[Any, ...]
                   ) -> StorageError:
        if not isinstance(exc, pymysql.Error):
            return StorageError(str(exc))
        if _code(exc) == _DUP_ENTRY:
            return DuplicateEntry(_text(exc))
        return StorageError(_text(exc))

    def _tables(self, cur: Any) -> set[str]:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()")
        return {name for (name,) in cur.fetchall()}

    def _indexes(self, cur: Any, table: str) -> set[str]:
        cur.execute("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
        return {name for (name,) in cur.fetchall()}

    def _ddl_race(self, exc: Exception) -> bool:
        return _code(exc) == _TRIGGER_EXISTS

    def _lock_schema(self, cur: Any) -> None:
        # (a DDL statement commits: the lock must be taken after it)
        cur.execute("SELECT version FROM t_evqueue_schema FOR UPDATE")
        cur.fetchall()

    def _triggers(self, cur: Any) -> set[str]:
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = DATABASE()")
        return {name for (name,) in cur.fetchall()}

    def _create_table(self, cur: Any, table: schema.Table) -> bool:
        try:
            cur.execute(schema.mysql_create(table))
        except pymysql.Error as exc:
            if _code(exc) == _TABLE_EXISTS:  # another node created it meanwhile
                return False
            raise
        return True

    def _check_tables(self, cur: Any) -> None:
        """ops.md §3.2 steps 3-4: refuse unknown versions, upgrade 3.2, add the late column."""
        cur.execute("SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()")
        comments = {n: c for n, c in cur.fetchall() if n in schema.CORE_TABLES}
        if any(c not in (schema.TABLE_VERSION, "v3.2") for c in comments.values()):
            raise StorageError("Wrong table version, should be 3.3")
        if "v3.2" in comments.values():
            log.log(NOTICE, "Detected v3.2 tables, upgrading scheme to v3.3")
            log_api = schema.BY_NAME["t_log_api"].column("log_api_object_type")
            cur.execute(f"ALTER TABLE t_log_api MODIFY {schema.mysql_column(log_api)}")
            if not self._has_column(cur, "t_notification_type", "notification_type_scope"):
                scope = schema.BY_NAME["t_notification_type"].column("notification_type_scope")
                cur.execute(f"ALTER TABLE t_notification_type ADD {schema.mysql_column(scope)} "
                            "AFTER notification_type_id")
            for name in schema.CORE_TABLES:
                cur.execute(f"ALTER TABLE {name} COMMENT = '{schema.TABLE_VERSION}'")
        if not self._has_column(cur, "t_notification", "notification_subscribe_all"):
            column = schema.BY_NAME["t_notification"].column("notification_subscribe_all")
            cur.execute(f"ALTER TABLE t_notification ADD {schema.mysql_column(column)}")

    @staticmethod
    def _has_column(cur: Any, table: str, column: str) -> bool:
        cur.execute("SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = %s AND COLUMN_NAME = %s", (table, column))
        return cur.fetchone() is not None
