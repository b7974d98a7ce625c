"""The storage interface every backend implements (sqlite and mysql share one schema).

Callers write SQL once, in a portable subset understood by both backends:

* placeholders are ``%s`` (PyMySQL style); the sqlite backend rewrites them to ``?``;
* no engine-specific functions in queries (no ``NOW()``): times are passed as
  ``'YYYY-MM-DD HH:MM:SS'`` local-time strings built by :func:`evqueue.storage.base.now`;
* ``LIMIT n OFFSET m`` for paging, ``INSERT`` with explicit column lists.

Rows come back as tuples of ``int | str | bytes | None``; date/time columns are returned as
``'YYYY-MM-DD HH:MM:SS'`` strings by both backends, so callers never see ``datetime``.

No method blocks the event loop: SQL runs in the backend's own threads. Writes that nobody
waits for (:meth:`Storage.write`) are group-committed with whatever else is pending, in
submission order; :meth:`Storage.execute` and :meth:`Storage.transaction` resolve once their
own commit is durable.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

T = TypeVar("T")
Params = Sequence[Any]
Row = tuple[Any, ...]


_last: list[Any] = [None, ""]  # (second, text) of the last call: formatting is on hot paths


def now(epoch: float | None = None) -> str:
    """Local time as the original engine writes it (``YYYY-MM-DD HH:MM:SS``)."""
    second = int(time.time() if epoch is None else epoch)
    if second != _last[0]:
        _last[0], _last[1] = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return _last[1]


class StorageError(Exception):
    """A database error; answered as ``SQL_ERROR`` with this text, like the original."""


class DuplicateEntry(StorageError):
    """A unique key was violated. The text is MariaDB's on every backend, e.g.
    ``Duplicate entry 'golden' for key 'queue_name'`` (clients and golden transcripts match it).
    """


class StorageUnavailable(StorageError):
    """The database cannot be reached (the daemon retries; ``--wait-db`` waits at start)."""


@dataclass(frozen=True)
class Result:
    """Outcome of one write statement."""

    lastrowid: int
    rowcount: int


class Tx(Protocol):
    """Synchronous handle given to :meth:`Storage.transaction` callbacks (writer thread)."""

    def execute(self, sql: str, params: Params = ()) -> Result: ...

    def query(self, sql: str, params: Params = ()) -> list[Row]: ...


class Storage(ABC):
    """Async access to the evQueue schema."""

    dialect: ClassVar[str]
    #: Whether the per-group instance counts (``schema.COUNT_TABLE``) are maintained, so that
    #: ``instances list`` may sum them instead of counting rows.
    instance_counts: bool = False

    @abstractmethod
    async def open(self) -> None:
        """Connect, create or upgrade the schema, seed admin/admin and queue ``default``."""

    @abstractmethod
    async def close(self) -> None:
        """Commit pending writes and release connections and threads."""

    @abstractmethod
    async def query(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a read and return all rows."""

    async def query_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.query(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> Result:
        """Run one write and wait until it is committed."""

    @abstractmethod
    async def transaction(self, fn: Callable[[Tx], T], *, keep: bool = False) -> T:
        """Run ``fn`` in the writer thread inside one transaction; commit, or roll back and
        re-raise if it raises. While the database is unreachable the transaction is retried,
        for a limited time (then :class:`StorageUnavailable`), or with ``keep`` until it is
        back (what must not be lost, e.g. an instance's final state; given up only at
        shutdown)."""

    @abstractmethod
    def write(self, sql: str, params: Params = ()) -> None:
        """Queue a write without waiting (group commit). Errors are logged, never raised."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""

    @abstractmethod
    def health(self) -> dict[str, str]:
        """The attributes of ``status type="database"``: ``backend``, ``state`` (``ok`` or
        ``unavailable``), ``since`` and ``error`` (while unavailable), ``outages`` and
        ``pending_writes``."""
