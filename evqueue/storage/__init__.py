"""Storage layer: the async :class:`~evqueue.storage.base.Storage` interface and its SQLite
(default) and MySQL/MariaDB backends, sharing the original engine's schema."""

from __future__ import annotations

from typing import Any, Protocol

from evqueue.storage.base import Storage
from evqueue.storage.sqlite import SQLiteStorage


class _Config(Protocol):
    def __getitem__(self, key: str) -> Any: ...


def open_storage(cfg: _Config, wait_db: bool = False) -> Storage:
    """The backend selected by ``core.storage``, not opened yet (call ``await open()``).
    ``wait_db`` (the ``--wait-db`` flag) makes a MySQL backend wait for its server."""
    kind = cfg["core.storage"]
    if kind == "sqlite":
        return SQLiteStorage(cfg["sqlite.path"])
    if kind == "mysql":
        # imported on demand: PyMySQL adds ~10 MB to the resident size of SQLite daemons
        from evqueue.storage.mysql import MySQLStorage

        return MySQLStorage(
            host=cfg["mysql.host"],
            user=cfg["mysql.user"],
            password=cfg["mysql.password"],
            database=cfg["mysql.database"],
            port=cfg["mysql.port"],
            wait_db=wait_db,
        )
    raise ValueError(f"Unknown storage backend '{kind}' (core.storage must be sqlite or mysql)")
