"""``evqueue`` command line: ``evqueue --config FILE [--daemon] [--wait-db]``.

Exit statuses follow the original (ops.md §1.2): 0 on clean shutdown and ``--version``, 255 on
any start-up failure (message on stderr, or through the daemon's start-up pipe).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from evqueue import VERSION
from evqueue import log as evqlog
from evqueue.config import Config, ConfigError
from evqueue.daemon import Readiness, daemonize
from evqueue.loop import new_event_loop
from evqueue.pidfile import AlreadyRunning, PidFile
from evqueue.server import Server

log = logging.getLogger("evqueue")

FATAL = 255


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(FATAL)


def main() -> None:
    """Entry point: ``evqueue migrate-db ...`` or the daemon's own flags."""
    if sys.argv[1:2] == ["migrate-db"]:
        from evqueue import migrate  # on demand: it loads PyMySQL, which the daemon may not need

        migrate.main(sys.argv[2:])
    else:
        daemon_command()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", help="Configuration file to read.")
@click.option("--daemon", is_flag=True, help="Detach and run in the background.")
@click.option("--wait-db", is_flag=True, help="Wait for the database server at start-up.")
@click.option("--version", is_flag=True, help="Print the version and exit.")
def daemon_command(config_path: str | None, daemon: bool, wait_db: bool, version: bool) -> None:
    """evQueue job scheduler daemon (and ``evqueue migrate-db --help``)."""
    if version:
        click.echo(f"evQueue version {VERSION} (python)")
        return
    if not config_path:
        _fail("Usage: evqueue (--daemon) --config <file>  |  evqueue --version")
    try:
        config = Config.load(config_path)
        _prepare_directories(config)
        config.validate()
    except ConfigError as e:
        _fail(f"Unexpected exception in configuration : {e}")
    except OSError as e:
        _fail(f"Unexpected exception in configuration : {e}")
    sys.exit(run(config, daemon=daemon, wait_db=wait_db))


def _prepare_directories(config: Config) -> None:
    """Create our own state directories (``var/`` in the quick start) before validation."""
    wd = config["core.wd"]
    if wd:
        os.chdir(wd)
    for path in config.directories():
        os.makedirs(path, exist_ok=True)
    for key in ("core.pidfile", "network.bind.path", "sqlite.path"):
        parent = os.path.dirname(config.raw(key))
        if parent:
            os.makedirs(parent, exist_ok=True)


def run(config: Config, *, daemon: bool, wait_db: bool) -> int:
    """Start the server and serve until shutdown; returns the process exit status."""
    pidfile = PidFile(config["core.pidfile"])
    try:
        pidfile.acquire()
    except AlreadyRunning as e:
        click.echo(f"Unexpected exception in pidfile : {e}", err=True)
        return FATAL
    readiness = daemonize() if daemon else Readiness(None)
    evqlog.setup(
        syslog=config["logger.syslog.enable"] or daemon,
        syslog_priority_max=config["logger.syslog.filter"],
        foreground=not daemon,
    )
    pidfile.write()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_serve(config, wait_db, readiness))
    finally:
        pidfile.release()
        readiness.close()


async def _serve(config: Config, wait_db: bool, readiness: Readiness) -> int:
    server = Server(config, wait_db=wait_db)
    # SIGTERM/SIGINT during start-up (e.g. ``--wait-db`` on a database that never comes)
    # abandon it and exit 255 like the original; serve() installs the real handlers.
    starting = asyncio.ensure_future(server.start())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, starting.cancel)
    try:
        await starting
    except asyncio.CancelledError:
        log.log(evqlog.NOTICE, "Shutting down during start-up")
        readiness.failed("Interrupted during start-up")
        await _abandon(server)
        return FATAL
    except Exception as e:
        log.critical("Unexpected exception in start-up : %s", e)
        readiness.failed(f"Unexpected exception in start-up : {e}")
        if not isinstance(e, OSError):
            log.debug("start-up failure", exc_info=True)
        await _abandon(server)
        return FATAL
    readiness.ready()
    await server.serve()
    return 0


async def _abandon(server: Server) -> None:
    """Tear down a half-started server: its parts that never opened (e.g. the database)
    may fail to stop, and that must not hide the start-up error nor change the exit status."""
    try:
        await server.stop()
    except Exception:
        log.debug("stopping a half-started server", exc_info=True)
