"""The machinery both backends share: one writer thread that group-commits, a pool of reader
threads, connection-loss retries and the schema creation/upgrade sequence.

Writes (``write``, ``execute``, ``transaction``, ``flush`` markers) go through one queue. The
writer takes whatever is queued (up to :data:`MAX_BATCH` items, never waiting for more, so the
latency added is the time of the previous commit), runs it in one transaction, commits once and
resolves the waiting futures in one hop to the event loop. A failing statement does not abort
the others: both engines roll back just the failed statement, and ``transaction`` callbacks run
inside a savepoint. If the connection is lost (or the engine rolled the whole transaction back),
the batch, plus anything queued meanwhile, is replayed after reconnecting, with backoff: queued
``write()`` calls are kept until they land, while callers that wait (``execute``,
``transaction``, ``flush``) get :class:`StorageUnavailable` after ``retry_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from evqueue.storage import schema
from evqueue.storage.base import (
    Params,
    Result,
    Row,
    Storage,
    StorageError,
    StorageUnavailable,
    Tx,
)

log = logging.getLogger("evqueue.storage")
NOTICE = 25  # the syslog NOTICE level registered by evqueue.log

T = TypeVar("T")
MAX_BATCH = 1000
RETRY_MIN = 0.05
RETRY_MAX = 1.0

_STMT, _TX, _MARK, _STOP = range(4)


class ConnectionLost(Exception):
    """Internal: the connection or the whole transaction is gone; replay the batch."""


@dataclass(eq=False)
class _Item:
    kind: int
    sql: str = ""
    params: tuple[Any, ...] = ()
    fn: Callable[[Any], Any] | None = None
    future: asyncio.Future[Any] | None = None
    deadline: float | None = None


class _WriterTx:
    """The :class:`~evqueue.storage.base.Tx` handed to ``transaction`` callbacks."""

    def __init__(self, storage: ThreadedStorage, conn: Any, cur: Any) -> None:
        self._storage = storage
        self._conn = conn
        self._cur = cur
        self.lost = False

    def execute(self, sql: str, params: Params = ()) -> Result:
        try:
            self._storage._execute(self._cur, sql, tuple(params))
        except Exception as exc:
            raise self._failure(exc, sql, params) from None
        return self._storage._result(self._cur, sql)

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            self._storage._execute(self._cur, sql, tuple(params))
        except Exception as exc:
            raise self._failure(exc, sql, params) from None
        return list(self._cur.fetchall())

    def _failure(self, exc: Exception, sql: str, params: Params) -> Exception:
        try:
            return self._storage._statement_error(self._conn, exc, sql, tuple(params))
        except ConnectionLost as lost:
            self.lost = True
            return lost


class ThreadedStorage(Storage):
    """Base of the SQLite and MySQL backends (see the module docstring)."""

    def __init__(self, *, readers: int = 4, retry_timeout: float = 30.0) -> None:
        self._n_readers = readers
        self._retry_timeout = retry_timeout
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[Any] = []
        self._reader_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._close_deadline: float | None = None
        #: Number of transactions the writer committed (group commit makes it far smaller than
        #: the number of writes; exposed for monitoring and tests).
        self.commit_count = 0

    # -- backend hooks (called from storage threads) -------------------------------------------
    @abstractmethod
    def _connect(self, *, writer: bool) -> Any:
        """A new DB-API connection (the writer's is not autocommit)."""

    @abstractmethod
    def _open_writer(self) -> Any:
        """The writer connection at ``open()`` (MySQL: wait for the server, create the DB)."""

    @abstractmethod
    def _raw_execute(self, cur: Any, sql: str, params: tuple[Any, ...]) -> None:
        """Run portable SQL on ``cur``."""

    def _execute(self, cur: Any, sql: str, params: tuple[Any, ...]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Executing query : %s %r", sql, params)
        self._raw_execute(cur, sql, params)

    @abstractmethod
    def _result(self, cur: Any, sql: str) -> Result:
        """``lastrowid`` (first id of the statement, 0 if none) and rows matched."""

    @abstractmethod
    def _lost(self, exc: Exception) -> bool:
        """Whether ``exc`` means the server or file is (temporarily) unusable: retry."""

    @abstractmethod
    def _translate(self, conn: Any, exc: Exception, sql: str, params: tuple[Any, ...]
                   ) -> StorageError:
        """The :class:`StorageError` (with MariaDB's text) for a failed statement."""

    def _begin(self, conn: Any) -> None:
        """Start the batch transaction (MySQL starts one implicitly)."""

    def _tx_alive(self, conn: Any) -> bool:
        """Whether the transaction survived a failed statement."""
        return True

    @abstractmethod
    def _tables(self, cur: Any) -> set[str]: ...

    @abstractmethod
    def _indexes(self, cur: Any, table: str) -> set[str]: ...

    @abstractmethod
    def _create_table(self, cur: Any, table: schema.Table) -> bool:
        """Create ``table`` (with its indexes); ``False`` if another process just did."""

    def _check_tables(self, cur: Any) -> None:
        """Check and upgrade tables created by the original engine (MySQL only)."""

    # -- Storage API -----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None or self._closed:
            raise StorageError("Storage already opened")
        self._loop = asyncio.get_running_loop()
        ready: ThreadFuture[Any] = ThreadFuture()
        self._writer = threading.Thread(
            target=self._writer_main, args=(ready,), name="evq-db-writer", daemon=True
        )
        self._writer.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._stop.set()
            self._closed = True
            raise
        self._readers = ThreadPoolExecutor(self._n_readers, thread_name_prefix="evq-db-reader")

    async def close(self) -> None:
        if self._closed or self._writer is None:
            self._closed = True
            return
        self._closed = True
        self._close_deadline = time.monotonic() + self._retry_timeout
        stop = self._enqueue(_STOP)
        await stop
        await asyncio.to_thread(self._writer.join)
        self._stop.set()
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        with self._reader_lock:
            for conn in self._reader_conns:
                _close_quietly(conn)
            self._reader_conns.clear()

    async def query(self, sql: str, params: Params = ()) -> list[Row]:
        self._check_open()
        assert self._loop is not None and self._readers is not None
        return await self._loop.run_in_executor(self._readers, self._read, sql, tuple(params))

    async def execute(self, sql: str, params: Params = ()) -> Result:
        self._check_open()
        return await self._enqueue(_STMT, sql=sql, params=tuple(params))

    async def transaction(self, fn: Callable[[Tx], T]) -> T:
        """As :meth:`Storage.transaction`. ``fn`` may be called again if the connection is lost
        before the commit, so it must not have side effects outside the database."""
        self._check_open()
        return await self._enqueue(_TX, fn=fn)

    def write(self, sql: str, params: Params = ()) -> None:
        self._check_open()
        self._queue.put(_Item(_STMT, sql, tuple(params)))

    async def flush(self) -> None:
        self._check_open()
        await self._enqueue(_MARK)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("Storage is closed")
        if self._writer is None or self._loop is None:
            raise StorageError("Storage is not opened")

    def _enqueue(self, kind: int, **kw: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        fut = self._loop.create_future()
        deadline = None if kind == _STOP else time.monotonic() + self._retry_timeout
        self._queue.put(_Item(kind, future=fut, deadline=deadline, **kw))
        return fut

    # -- writer thread ---------------------------------------------------------------------------
    def _writer_main(self, ready: ThreadFuture[Any]) -> None:
        try:
            conn = self._open_writer()
            try:
                self._ensure_schema(conn)
            except BaseException:
                _close_quietly(conn)
                raise
        except Exception as exc:
            with contextlib.suppress(InvalidStateError):  # open() was cancelled
                ready.set_exception(
                    exc if isinstance(exc, StorageError) else StorageError(str(exc))
                )
            return
        try:
            if self._stop.is_set():
                raise InvalidStateError("open() was cancelled")
            ready.set_result(None)
        except InvalidStateError:
            _close_quietly(conn)
            return
        while True:
            batch = [self._queue.get()]
            self._drain(batch)
            conn = self._commit(conn, batch)
            if batch and batch[-1].kind == _STOP:
                break
        _close_quietly(conn)

    def _drain(self, batch: list[_Item]) -> None:
        while len(batch) < MAX_BATCH and batch[-1].kind != _STOP:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _commit(self, conn: Any, batch: list[_Item]) -> Any:
        """Run ``batch`` until it commits (replaying it after connection losses); returns the
        connection to use next. ``batch`` may grow with items queued during an outage."""
        delay = RETRY_MIN
        failures = 0
        while True:
            if all(item.kind in (_MARK, _STOP) for item in batch):
                self._deliver(batch, [None] * len(batch))
                return conn
            try:
                if conn is None:
                    conn = self._connect(writer=True)
                outcomes = self._run_batch(conn, batch)
            except Exception as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "Database write failed, will retry: %s", exc
                )
                if conn is not None:
                    _rollback_quietly(conn)
                    if isinstance(exc, ConnectionLost) or self._lost(exc):
                        _close_quietly(conn)
                        conn = None
                self._drain(batch)
                self._expire(batch, exc)
                if not batch:
                    return conn
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if failures:
                log.log(NOTICE, "Database writes resumed after %d failed attempts", failures)
            self.commit_count += 1
            self._deliver(batch, outcomes)
            return conn

    def _expire(self, batch: list[_Item], exc: Exception) -> None:
        now = time.monotonic()
        kept: list[_Item] = []
        expired: list[tuple[asyncio.Future[Any], Any]] = []
        lost_writes = 0
        for item in batch:
            deadline = item.deadline
            if item.future is None and self._close_deadline is not None:
                deadline = self._close_deadline  # write() items: only given up at shutdown
            if item.kind != _STOP and deadline is not None and now >= deadline:
                if item.future is None:
                    lost_writes += 1
                else:
                    expired.append((item.future, StorageUnavailable(str(exc))))
            else:
                kept.append(item)
        if lost_writes:
            log.error("Database unavailable at shutdown: %d queued writes lost", lost_writes)
        batch[:] = kept
        self._resolve(expired)

    def _run_batch(self, conn: Any, batch: list[_Item]) -> list[Any]:
        cur = conn.cursor()
        try:
            self._begin(conn)
            # a transaction alone in its batch needs no savepoint: a failure rolls the batch
            # back (two round trips less per launch on MySQL)
            alone = sum(item.kind in (_STMT, _TX) for item in batch) == 1
            outcomes = [self._run_item(conn, cur, item, alone) for item in batch]
            conn.commit()
            return outcomes
        finally:
            _close_quietly(cur)

    def _run_item(self, conn: Any, cur: Any, item: _Item, alone: bool) -> Any:
        if item.kind == _STMT:
            try:
                self._execute(cur, item.sql, item.params)
            except Exception as exc:
                return self._statement_error(conn, exc, item.sql, item.params)
            return self._result(cur, item.sql)
        if item.kind == _TX:
            assert item.fn is not None
            if not alone:
                self._execute(cur, "SAVEPOINT evq_tx", ())
            tx = _WriterTx(self, conn, cur)
            try:
                value = item.fn(tx)
            except Exception as exc:
                if tx.lost or isinstance(exc, ConnectionLost):
                    raise ConnectionLost(str(exc)) from exc
                if alone:
                    conn.rollback()
                else:
                    self._execute(cur, "ROLLBACK TO SAVEPOINT evq_tx", ())
                    self._execute(cur, "RELEASE SAVEPOINT evq_tx", ())
                return exc
            if tx.lost:
                raise ConnectionLost("connection lost inside a transaction")
            if not alone:
                self._execute(cur, "RELEASE SAVEPOINT evq_tx", ())
            return value
        return None

    def _statement_error(self, conn: Any, exc: Exception, sql: str, params: tuple[Any, ...]
                         ) -> StorageError:
        """The error to report for one failed statement, or :class:`ConnectionLost`."""
        if isinstance(exc, StorageError):
            return exc
        if self._lost(exc) or not self._tx_alive(conn):
            raise ConnectionLost(str(exc)) from exc
        return self._translate(conn, exc, sql, params)

    def _deliver(self, batch: list[_Item], outcomes: list[Any]) -> None:
        done = []
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future is not None:
                done.append((item.future, outcome))
            elif isinstance(outcome, Exception):
                log.error("Database write failed: %s (query: %s)", outcome, item.sql)
        self._resolve(done)

    def _resolve(self, done: list[tuple[asyncio.Future[Any], Any]]) -> None:
        if not done or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(_resolve_all, done)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    # -- reader threads --------------------------------------------------------------------------
    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        deadline: float | None = None
        delay = RETRY_MIN
        while True:
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    conn = self._local.conn = self._connect(writer=False)
                    with self._reader_lock:
                        self._reader_conns.append(conn)
                cur = conn.cursor()
                try:
                    self._execute(cur, sql, params)
                    return list(cur.fetchall())
                finally:
                    _close_quietly(cur)
            except StorageError:
                raise
            except Exception as exc:
                if not self._lost(exc):
                    raise self._translate(conn, exc, sql, params) from None
                if conn is not None:
                    self._drop_reader(conn)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._retry_timeout
                    continue  # reconnect once at once, then back off
                if now >= deadline or self._stop.is_set():
                    raise StorageUnavailable(str(exc)) from None
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _drop_reader(self, conn: Any) -> None:
        self._local.conn = None
        with self._reader_lock:
            if conn in self._reader_conns:
                self._reader_conns.remove(conn)
        _close_quietly(conn)

    # -- schema ----------------------------------------------------------------------------------
    def _ensure_schema(self, conn: Any) -> None:
        """ops.md §3.2: create missing tables (with seeds), check/upgrade the original's
        tables, then apply our own migrations up to :data:`schema.SCHEMA_VERSION`."""
        cur = conn.cursor()
        try:
            self._begin(conn)
            existing = self._tables(cur)
            for table in (*schema.TABLES, schema.VERSION_TABLE):
                if table.name in existing or not self._create_table(cur, table):
                    continue
                for sql, params in table.seeds:
                    self._execute(cur, sql, params)
                if table is schema.VERSION_TABLE:
                    self._execute(cur, "INSERT INTO t_evqueue_schema (version) VALUES (0)", ())
            self._check_tables(cur)
            self._execute(cur, "SELECT MAX(version) FROM t_evqueue_schema", ())
            row = cur.fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > schema.SCHEMA_VERSION:
                raise StorageError(
                    f"Database schema version {version} is newer than this evqueue supports "
                    f"({schema.SCHEMA_VERSION})"
                )
            for target in range(version + 1, schema.SCHEMA_VERSION + 1):
                MIGRATIONS[target](self, cur)
                self._execute(cur, "UPDATE t_evqueue_schema SET version = %s", (target,))
            conn.commit()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(str(exc)) from exc
        finally:
            _close_quietly(cur)

    def _add_missing_indexes(self, cur: Any) -> None:
        """Migration 1: our extra indexes, also on databases created by the original."""
        for table in schema.TABLES:
            have = self._indexes(cur, table.name)
            for name, ddl in schema.extra_keys(table, self.dialect):
                if name not in have:
                    log.log(NOTICE, "Adding index %s to %s", name, table.name)
                    self._execute(cur, ddl, ())


MIGRATIONS: dict[int, Callable[[ThreadedStorage, Any], None]] = {
    1: ThreadedStorage._add_missing_indexes,
}


def _resolve_all(done: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, outcome in done:
        if fut.done():
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def _close_quietly(obj: Any) -> None:
    with contextlib.suppress(Exception):  # a broken connection may fail to close: no matter
        obj.close()


def _rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):  # the connection is probably gone; it is replaced
        conn.rollback()
