"""``evqueue migrate-db --from sqlite:PATH --to mysql --config FILE``: copy a SQLite state into
MariaDB/MySQL (the ``mysql.*`` keys of FILE name the target).

Every table of the schema is copied with its ids, so instance ids, workflow ids and rights stay
valid; auto-increments continue after the copied ids. The target must hold nothing but the
seed rows a fresh database gets (queue ``default``, user ``admin``), which are replaced. Run it
with the daemon stopped.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import click

from evqueue.config import Config, ConfigError
from evqueue.storage import schema
from evqueue.storage.base import Storage, StorageError, Tx
from evqueue.storage.mysql import MySQLStorage
from evqueue.storage.sqlite import SQLiteStorage

_SEEDED = {"t_queue": 1, "t_user": 1}
#: Rows read from SQLite at a time, and bytes of values per multi-row INSERT (MariaDB's
#: default ``max_allowed_packet`` is 16 MiB): memory stays bounded whatever the state's size.
_FETCH = 200
_PACKET = 4 << 20


def _size(row: Sequence[object]) -> int:
    return sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)


async def migrate(source: SQLiteStorage, target: Storage) -> dict[str, int]:
    """Copy every table from ``source`` to ``target`` (both open); returns rows per table."""
    for table in schema.TABLES:
        count = (await target.query_one(f"SELECT COUNT(*) FROM {table.name}"))[0]
        if count > _SEEDED.get(table.name, 0):
            raise click.ClickException(
                f"the target table {table.name} already holds data: migrate into a new "
                "database")
    return {table.name: await _copy(source, target, table) for table in schema.TABLES}


async def _copy(source: SQLiteStorage, target: Storage, table: schema.Table) -> int:
    """Copy one table in chunks of :data:`_FETCH` rows (SQLite rowid order), one transaction
    per chunk; the seed rows of a fresh target give way to the copied ones."""
    columns = ", ".join(c.name for c in table.columns)
    marks = "(" + ", ".join(["%s"] * len(table.columns)) + ")"
    copied = 0
    last = -(1 << 63)
    while rows := await source.query(
            f"SELECT rowid, {columns} FROM {table.name} WHERE rowid > %s ORDER BY rowid "
            f"LIMIT {_FETCH}", (last,)):
        last = rows[-1][0]
        statements: list[list[tuple]] = [[]]
        size = 0
        for _, *values in rows:
            if statements[-1] and size + _size(values) > _PACKET:
                statements.append([])
                size = 0
            statements[-1].append(tuple(values))
            size += _size(values)

        def insert(tx: Tx, statements: list[list[tuple]] = statements,
                   clear: bool = copied == 0 and table.name in _SEEDED) -> None:
            if clear:
                tx.execute(f"DELETE FROM {table.name}")
            for chunk in statements:
                tx.execute(f"INSERT INTO {table.name} ({columns}) VALUES "
                           + ", ".join([marks] * len(chunk)), [v for r in chunk for v in r])

        try:
            await target.transaction(insert)
        except StorageError as e:
            raise click.ClickException(
                f"copying {table.name}: {e} (drop the target database before trying again)"
            ) from None
        copied += len(rows)
    return copied


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--from", "source", required=True, metavar="sqlite:PATH",
              help="The SQLite database to copy.")
@click.option("--to", "target", required=True, type=click.Choice(["mysql"]),
              help="The target backend (configured by the mysql.* keys).")
@click.option("--config", "config_path", required=True, metavar="FILE",
              help="Configuration whose mysql.* keys name the target database.")
def command(source: str, target: str, config_path: str) -> None:
    """Copy a SQLite evqueue state into MariaDB/MySQL."""
    if not source.startswith("sqlite:"):
        raise click.BadParameter("expected sqlite:PATH", param_hint="--from")
    try:
        cfg = Config.load(config_path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None

    path = source[len("sqlite:"):]
    if not os.path.isfile(path):
        raise click.BadParameter(f"no SQLite database at {path}", param_hint="--from")

    async def run() -> dict[str, int]:
        src = SQLiteStorage(path)
        dst = MySQLStorage(cfg["mysql.host"], cfg["mysql.user"], cfg["mysql.password"],
                           cfg["mysql.database"], cfg["mysql.port"])
        await src.open()
        await dst.open()
        try:
            return await migrate(src, dst)
        finally:
            await src.close()
            await dst.close()

    copied = asyncio.run(run())
    total = sum(copied.values())
    click.echo(f"copied {total} rows into {cfg['mysql.database']} on {cfg['mysql.host']}: "
               + ", ".join(f"{t} {n}" for t, n in copied.items() if n))


def main(argv: list[str]) -> None:
    command.main(args=argv, prog_name="evqueue migrate-db")


if __name__ == "__main__":
    main(sys.argv[1:])
