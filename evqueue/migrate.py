"""``evqueue migrate-db --from sqlite:PATH --to mysql --config FILE``: copy a SQLite state into
MariaDB/MySQL (the ``mysql.*`` keys of FILE name the target).

Every table of the schema is copied with its ids, so instance ids, workflow ids and rights stay
valid; auto-increments continue after the copied ids. The target must hold nothing but the
seed rows a fresh database gets (queue ``default``, user ``admin``), which are replaced. Run it
with the daemon stopped.
"""

from __future__ import annotations

import asyncio
import sys

import click

from evqueue.config import Config, ConfigError
from evqueue.storage import schema
from evqueue.storage.base import Storage, Tx
from evqueue.storage.mysql import MySQLStorage
from evqueue.storage.sqlite import SQLiteStorage

_SEEDED = {"t_queue": 1, "t_user": 1}
_BATCH = 1000


async def migrate(source: Storage, target: Storage) -> dict[str, int]:
    """Copy every table from ``source`` to ``target`` (both open); returns rows per table."""
    copied = {}
    for table in schema.TABLES:
        count = (await target.query_one(f"SELECT COUNT(*) FROM {table.name}"))[0]
        if count > _SEEDED.get(table.name, 0):
            raise click.ClickException(
                f"the target table {table.name} already holds data: migrate into a new "
                "database")
    for table in schema.TABLES:
        names = [c.name for c in table.columns]
        rows = await source.query(f"SELECT {', '.join(names)} FROM {table.name}")
        insert = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                  f"VALUES ({', '.join(['%s'] * len(names))})")

        def copy(tx: Tx, name: str = table.name, rows: list = rows, insert: str = insert,
                 ) -> None:
            if name in _SEEDED and rows:
                tx.execute(f"DELETE FROM {name}")
            for start in range(0, len(rows), _BATCH):
                for row in rows[start:start + _BATCH]:
                    tx.execute(insert, row)

        await target.transaction(copy)
        copied[table.name] = len(rows)
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

    async def run() -> dict[str, int]:
        src = SQLiteStorage(source[len("sqlite:"):])
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
