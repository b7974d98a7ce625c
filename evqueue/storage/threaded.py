"""The machinery both backends share: one writer thread that group-commits, a pool of reader
threads, connection-loss retries and the schema creation/upgrade sequence.

Writes (``write``, ``execute``, ``transaction``, ``flush`` markers) go through one queue. The
writer takes whatever is queued (up to :data:`MAX_BATCH` items, never waiting for more, so the
latency added is the time of the previous commit), runs it in one transaction with whatever is
queued meanwhile, commits once and resolves the waiting futures in one hop to the event loop. A
failing statement does not abort the others: both engines roll back just the failed statement,
and a failed ``transaction`` callback makes the writer run the batch again with a savepoint
around it. If the connection is lost (or the engine rolled the whole transaction back), the
batch, plus anything queued meanwhile, is replayed after reconnecting, with backoff: queued
``write()`` calls and ``transaction(keep=True)`` are kept until they land, while other callers
that wait (``execute``, ``transaction``, ``flush``) get :class:`StorageUnavailable` after
``retry_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from evqueue.storage import schema
from evqueue.storage.base import (
    Params,
    Result,
    Row,
    Storage,
    StorageError,
    StorageUnavailable,
    Tx,
    now,
)
from evqueue.storage.statement import insert_table

log = logging.getLogger("evqueue.storage")
NOTICE = 25  # the syslog NOTICE level registered by evqueue.log

T = TypeVar("T")
MAX_BATCH = 1000
RETRY_MIN = 0.05
RETRY_MAX = 1.0
#: Conflicts with other transactions retried at once in a row; then with backoff (a Galera
#: node may not have applied the winner's write set yet).
MAX_CONFLICTS = 3
#: Attempts at creating the instance count triggers while other nodes create them too.
DDL_ATTEMPTS = 5
#: Longest wait for a writer thread abandoned during start-up (a MySQL connect attempt times out
#: after 10 s).
_JOIN_TIMEOUT = 12.0

_STMT, _TX, _MARK, _STOP = range(4)
_INSERT_MARKER = ("INSERT INTO t_evqueue_claim (claim_name, node_name, claim_time) "
                  "VALUES (%s, '', %s)")


class ConnectionLost(Exception):
    """Internal: the connection or the whole transaction is gone; replay the batch (at once
    on the same connection if it was a ``conflict`` with another transaction)."""

    def __init__(self, text: str, conflict: bool = False) -> None:
        super().__init__(text)
        self.conflict = conflict


class _CommitUnknown(Exception):
    """Internal: the connection was lost while committing, so the batch may have committed.
    Before anything is replayed, the writer finds out: ``probe`` (table, column, value) is a
    row that exists only if it did, the first row it inserted with a new auto-increment id, or
    else a marker row inserted for that purpose."""

    def __init__(self, cause: Exception, outcomes: dict[_Item, Any],
                 probe: tuple[str, str, Any] | None, session: Any) -> None:
        super().__init__(str(cause))
        self.outcomes = outcomes
        self.probe = probe
        self.session = session


class _Unguarded(Exception):
    """Internal: a transaction run without a savepoint failed; run the batch again with one
    around it."""

    def __init__(self, item: _Item) -> None:
        super().__init__()
        self.item = item


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
        #: set when a statement lost the connection or the transaction (even if the callback
        #: caught the error)
        self.lost: ConnectionLost | None = None

    def execute(self, sql: str, params: Params = ()) -> Result:
        try:
            self._storage._execute(self._cur, sql, tuple(params))
        except Exception as exc:
            raise self._failure(exc, sql, params) from None
        return self._storage._noted(self._cur, sql)

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
            self.lost = lost
            return lost


class ThreadedStorage(Storage):
    """Base of the SQLite and MySQL backends (see the module docstring)."""

    #: Whether a commit can fail yet have committed (a server whose answer was lost), so that
    #: batches carry a probe row (see :class:`_CommitUnknown`).
    commit_can_be_unknown: ClassVar[bool] = False

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
        self._probe: tuple[str, str, Any] | None = None  # see _CommitUnknown
        self._unprobed = False  # the batch inserted rows without a new id
        self._health_lock = threading.Lock()
        self._down_since: float | None = None
        self._down_error = ""
        #: Number of times the database became unreachable since start.
        self.outages = 0

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

    def _conflict(self, exc: Exception) -> bool:
        """Whether ``exc`` rolled the transaction back because another one won (retry at
        once, no reconnect)."""
        return False

    def _session(self, conn: Any) -> Any:
        """The server's id of the writer connection (``None``: no server)."""
        return None

    def _session_alive(self, cur: Any, session: Any) -> bool:
        """Whether the server still runs ``session`` (so its last commit may still land)."""
        return False

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
    def _triggers(self, cur: Any) -> set[str]: ...

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
            # Join the writer before the interpreter may exit: a daemon thread still logging
            # to stderr at shutdown aborts the process (SIGABRT) instead of exiting 255.
            await asyncio.to_thread(self._writer.join, _JOIN_TIMEOUT)
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

    async def transaction(self, fn: Callable[[Tx], T], *, keep: bool = False) -> T:
        """As :meth:`Storage.transaction`. ``fn`` may be called again if the connection is lost
        before the commit, so it must not have side effects outside the database."""
        self._check_open()
        return await self._enqueue(_TX, fn=fn, keep=keep)

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

    def _enqueue(self, kind: int, keep: bool = False, **kw: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        fut = self._loop.create_future()
        deadline = None if kind == _STOP or keep else time.monotonic() + self._retry_timeout
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
        failures = conflicts = 0
        unknown: _CommitUnknown | None = None
        while True:
            if unknown is None and all(item.kind in (_MARK, _STOP) for item in batch):
                self._deliver(batch, [None] * len(batch))
                return conn
            try:
                if conn is None:
                    conn = self._connect(writer=True)
                if unknown is not None:
                    committed = self._committed(conn, unknown)
                    log.log(NOTICE, "The commit cut by the lost connection %s",
                            "had landed" if committed else "did not land: replaying it")
                    if committed:
                        if unknown.probe is not None and unknown.probe[0] == "t_evqueue_claim":
                            self._drop_marker(unknown.probe[2])
                        self._mark_up()
                        self.commit_count += 1
                        done = [item for item in batch if item in unknown.outcomes]
                        self._deliver(done, [unknown.outcomes[item] for item in done])
                        batch[:] = [item for item in batch if item not in unknown.outcomes]
                    unknown = None
                    continue
                outcomes = self._run_batch(conn, batch)
            except Exception as exc:
                if isinstance(exc, _CommitUnknown):
                    unknown = exc
                if conn is not None:
                    _rollback_quietly(conn)
                conflict = (exc.conflict if isinstance(exc, ConnectionLost)
                            else self._conflict(exc))
                if conflict and conflicts < MAX_CONFLICTS:
                    # another transaction won (deadlock, Galera certification): run the batch
                    # again at once; it now sees that commit
                    conflicts += 1
                    log.debug("Write conflict, running the batch again: %s", exc)
                    continue
                conflicts = 0
                if not conflict and (isinstance(exc, ConnectionLost | _CommitUnknown)
                                     or self._lost(exc)):
                    self._mark_down(exc)  # logged there, and when it is back
                    _close_quietly(conn)
                    conn = None
                else:
                    failures += 1
                    if failures == 1:
                        log.warning("Database write failed, will retry: %s", exc)
                self._drain(batch)
                self._expire(batch, exc)
                if not batch:
                    return conn
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if failures:
                log.log(NOTICE, "Database writes resumed after %d failed attempts", failures)
            self._mark_up()
            self.commit_count += 1
            self._deliver(batch, outcomes)
            return conn

    def _mark_down(self, exc: Exception) -> None:
        with self._health_lock:
            if self._down_since is not None:
                return
            self._down_since = time.time()
            self._down_error = str(exc)
            self.outages += 1
        log.warning("Database unavailable (%s): retrying with backoff", exc)

    def _mark_up(self) -> None:
        with self._health_lock:
            if self._down_since is None:
                return
            lasted = time.time() - self._down_since
            self._down_since = None
        log.log(NOTICE, "Database available again after %.1f s", lasted)

    def health(self) -> dict[str, str]:
        """As :meth:`Storage.health`; unavailable from the first lost connection (or file
        lock) until a write commits or a read succeeds again; ``pending_writes`` counts the
        writes queued and not yet taken by the writer."""
        with self._health_lock:
            since, error, outages = self._down_since, self._down_error, self.outages
        return {"backend": self.dialect, "state": "ok" if since is None else "unavailable",
                "since": "" if since is None else now(since),
                "error": "" if since is None else error,
                "outages": str(outages), "pending_writes": str(self._queue.qsize())}

    def _expire(self, batch: list[_Item], exc: Exception) -> None:
        moment = time.monotonic()
        kept: list[_Item] = []
        expired: list[tuple[asyncio.Future[Any], Any]] = []
        lost_writes = 0
        for item in batch:
            deadline = item.deadline
            if deadline is None:  # write() and kept transactions: only given up at shutdown
                deadline = self._close_deadline
            if item.kind != _STOP and deadline is not None and moment >= deadline:
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
        """Run and commit ``batch``, with the items queued while it ran (a commit can cost an
        fsync: as many writes as possible share it). Transactions run without savepoints (two
        round trips each on MySQL): if one fails, the batch is rolled back and run again with
        a savepoint around that one only. A transaction alone in its batch needs none: its
        failure rolls back the batch, which holds nothing else."""
        guarded: set[int] = set()
        while True:
            alone = sum(item.kind in (_STMT, _TX) for item in batch) == 1
            self._probe, self._unprobed = None, False
            cur = conn.cursor()
            try:
                self._begin(conn)
                outcomes = [self._run_item(conn, cur, item, i in guarded, alone)
                            for i, item in enumerate(batch)]
                rolled_back = alone and any(isinstance(o, Exception) for o in outcomes)
                while not rolled_back and len(batch) < MAX_BATCH and batch[-1].kind != _STOP:
                    start = len(batch)
                    self._drain(batch)
                    if len(batch) == start:
                        break
                    outcomes += [self._run_item(conn, cur, batch[i], i in guarded, False)
                                 for i in range(start, len(batch))]
                marker = self._mark_batch(cur)
                session = self._session(conn)
                try:
                    conn.commit()
                except Exception as exc:
                    if self._lost(exc) and not self._conflict(exc):
                        raise _CommitUnknown(exc, dict(zip(batch, outcomes, strict=True)),
                                             self._probe, session) from exc
                    raise
                self._drop_marker(marker)
                return outcomes
            except _Unguarded as failed:
                _rollback_quietly(conn)
                guarded.add(batch.index(failed.item))
            finally:
                _close_quietly(cur)

    def _run_item(self, conn: Any, cur: Any, item: _Item, guarded: bool, alone: bool) -> Any:
        if item.kind == _STMT:
            try:
                self._execute(cur, item.sql, item.params)
            except Exception as exc:
                return self._statement_error(conn, exc, item.sql, item.params)
            return self._noted(cur, item.sql)
        if item.kind == _TX:
            assert item.fn is not None
            if guarded:
                self._execute(cur, "SAVEPOINT evq_tx", ())
            tx = _WriterTx(self, conn, cur)
            try:
                value = item.fn(tx)
            except Exception as exc:
                if tx.lost is not None:
                    raise tx.lost from None
                if guarded:
                    self._execute(cur, "ROLLBACK TO SAVEPOINT evq_tx", ())
                    self._execute(cur, "RELEASE SAVEPOINT evq_tx", ())
                elif alone:
                    conn.rollback()
                    self._probe, self._unprobed = None, False  # nothing left to commit
                else:
                    raise _Unguarded(item) from exc
                return exc
            if tx.lost is not None:
                raise tx.lost
            if guarded:
                self._execute(cur, "RELEASE SAVEPOINT evq_tx", ())
            return value
        return None

    def _noted(self, cur: Any, sql: str) -> Result:
        """The result of a statement. The batch's first new auto-increment id is its probe
        (see :class:`_CommitUnknown`); other inserted rows get a marker row before the commit."""
        result = self._result(cur, sql)
        if self._probe is None and result.rowcount:
            table = insert_table(sql)
            if table is not None:
                desc = schema.BY_NAME.get(table)
                auto = desc.auto_column if desc is not None else None
                if auto is not None and result.lastrowid:
                    self._probe = (table, auto.name, result.lastrowid)
                else:
                    self._unprobed = True
        return result

    def _mark_batch(self, cur: Any) -> str | None:
        """Before committing a batch that inserted rows but no new id: insert a marker row, so
        that a commit whose answer is lost can be told (a replay would insert those rows
        twice, or fail on their unique key). Returns its name, to delete once committed."""
        if not self.commit_can_be_unknown or self._probe is not None or not self._unprobed:
            return None
        name = f"commit_{uuid.uuid4().hex}"
        self._execute(cur, _INSERT_MARKER, (name, now()))
        self._probe = ("t_evqueue_claim", "claim_name", name)
        return name

    def _drop_marker(self, name: str | None) -> None:
        """Queue the deletion of a committed batch's marker row (one left behind at shutdown
        is purged by the garbage collector with the old claim rows)."""
        if name is not None:
            self._queue.put(_Item(_STMT, "DELETE FROM t_evqueue_claim WHERE claim_name = %s",
                                  (name,)))

    def _committed(self, conn: Any, unknown: _CommitUnknown) -> bool:
        """Whether the batch whose commit lost its answer did commit: once the server has
        ended the lost session, the probe row exists only if it did. A batch without a probe
        (updates and deletes only) is replayed: that does the same again."""
        cur = conn.cursor()
        try:
            deadline = time.monotonic() + self._retry_timeout
            while unknown.session is not None and self._session_alive(cur, unknown.session):
                if time.monotonic() > deadline:
                    raise StorageUnavailable("the lost database session does not end")
                self._stop.wait(RETRY_MIN)
            if unknown.probe is None:
                return False
            table, column, value = unknown.probe
            self._execute(cur, f"SELECT 1 FROM {table} WHERE {column} = %s", (value,))
            return bool(cur.fetchall())
        finally:
            _rollback_quietly(conn)  # end the read's transaction: the next batch sees fresh data
            _close_quietly(cur)

    def _statement_error(self, conn: Any, exc: Exception, sql: str, params: tuple[Any, ...]
                         ) -> StorageError:
        """The error to report for one failed statement, or :class:`ConnectionLost`."""
        if isinstance(exc, StorageError):
            return exc
        if self._lost(exc) or not self._tx_alive(conn):
            raise ConnectionLost(str(exc), self._conflict(exc)) from exc
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
                    rows = list(cur.fetchall())
                finally:
                    _close_quietly(cur)
                if deadline is not None:
                    self._mark_up()
                return rows
            except StorageError:
                raise
            except Exception as exc:
                if not self._lost(exc):
                    raise self._translate(conn, exc, sql, params) from None
                if conn is not None:
                    self._drop_reader(conn)
                self._mark_down(exc)
                moment = time.monotonic()
                if deadline is None:
                    deadline = moment + self._retry_timeout
                    continue  # reconnect once at once, then back off
                if moment >= deadline or self._stop.is_set():
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
            self._ensure_instance_counts(cur)
            conn.commit()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(str(exc)) from exc
        finally:
            _close_quietly(cur)

    def _ensure_instance_counts(self, cur: Any) -> None:
        """Create the instance count triggers and recount, unless they are all there. Without
        the right to create triggers (MySQL with binary logging needs SUPER or
        ``log_bin_trust_function_creators``), lists count rows as before."""
        if set(schema.COUNT_TRIGGERS) <= self._triggers(cur):
            self.instance_counts = True
            return
        log.log(NOTICE, "Counting instances per workflow, node and status")
        for attempt in range(DDL_ATTEMPTS):
            try:
                for sql in schema.instance_count_ddl(self.dialect):
                    self._execute(cur, sql, ())
                break
            except Exception as exc:
                if self.dialect != "mysql":
                    raise
                if self._ddl_race(exc) and attempt + 1 < DDL_ATTEMPTS:
                    time.sleep(0.1 * (attempt + 1))  # another node is creating them too
                    continue
                log.warning("Cannot create the instance count triggers (%s): instances list "
                            "counts rows instead", exc)
                return
        self._lock_schema(cur)
        for sql in schema.INSTANCE_COUNT_REBUILD:
            self._execute(cur, sql, ())
        self.instance_counts = True

    def _ddl_race(self, exc: Exception) -> bool:
        """``exc`` says another node created the object this node just dropped and is
        creating again (nodes starting together on one new database)."""
        return False

    def _lock_schema(self, cur: Any) -> None:
        """Make nodes that upgrade one database together take turns until the commit
        (SQLite's ``BEGIN IMMEDIATE`` already does)."""

    def _reindex(self, cur: Any) -> None:
        """Migration 3: drop the SQLite indexes a longer key covers, add the new keys."""
        for table in schema.TABLES:
            for name in schema.redundant_indexes(table, self.dialect):
                self._execute(cur, f'DROP INDEX IF EXISTS "{name}"', ())
        self._add_missing_indexes(cur)

    def _add_missing_indexes(self, cur: Any) -> None:
        """Migration 1: our extra indexes, also on databases created by the original."""
        for table in schema.TABLES:
            have = self._indexes(cur, table.name)
            for name, ddl in schema.extra_keys(table, self.dialect):
                if name not in have:
                    log.log(NOTICE, "Adding index %s to %s", name, table.name)
                    try:
                        self._execute(cur, ddl, ())
                    except Exception:
                        # fine if another node starting on the same database just added it
                        if name not in self._indexes(cur, table.name):
                            raise


MIGRATIONS: dict[int, Callable[[ThreadedStorage, Any], None]] = {
    1: ThreadedStorage._add_missing_indexes,
    2: ThreadedStorage._add_missing_indexes,  # node_end, schedule_end, errors_end
    3: ThreadedStorage._reindex,  # start_workflow, end_workflow; SQLite: fewer indexes
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
