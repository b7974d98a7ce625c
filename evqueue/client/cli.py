"""``evqueue-api``: the original ``evqueue_api`` command line, plus human-friendly commands.

Original syntax (protocol.md §7.1), kept byte-compatible for scripts and the Zabbix template::

    evqueue-api [--connect URL] [--user U] [--password P] [--noformat] [--xpath EXPR]
                --<group> --<action> [--<param> <value>]...

Each ``--param value`` becomes an attribute (``-`` turned into ``_``); a last ``--param``
without a value takes the whole of stdin. The answer is pretty-printed XML (``--noformat``:
one line; ``--xpath``: the string value of the first result). A KO answer prints ``Error
executing command : <error> (<code>)`` on stderr and exits 255.

Human commands (``evqueue-api launch WORKFLOW key=value --wait``, ``status``, ``instances``,
``queues``, ...) print tables. Settings come from ``/etc/evqueue.api.conf`` then
``~/.evqueue.api.conf`` (``api.connect``, ``api.user``, ``api.password``, ``api.noformat``,
``api.xpath``), then ``$EVQUEUE_SERVERS``, then the options. A comma-separated server list
makes a federation (see :mod:`evqueue.client.federation`).

click cannot parse ``--<group> --<action>`` (they look like unknown options), so the group
spots that form itself before click sees the arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any, NoReturn

import click
from lxml import etree

from evqueue.client.blocking import Client, Federation
from evqueue.client.errors import EvqConnectionError, EvqError
from evqueue.client.federation import server_list
from evqueue.client.model import Instance
from evqueue.client.render import (
    ProgressLine,
    pretty_xml,
    raw_xml,
    table,
    when,
    xpath_value,
)
from evqueue.client.settings import ApiSettings, load
from evqueue.config import ConfigError

FATAL = 255
INSTANCE_FAILED = 1

_VALUE_OPTIONS = ("--connect", "--user", "--password", "--xpath", "--timeout")
_FLAG_OPTIONS = ("--noformat",)
_LEGACY = "evqueue.legacy"
_LEGACY_COMMAND = "__legacy__"


def fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(FATAL)


def split_legacy(args: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``(leading options, query words)`` when ``args`` use the original ``--group --action``
    form; None for a human command (or no command: click shows the help)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return list(args[:i]), list(args[i + 1 :])
        if arg.split("=", 1)[0] in _VALUE_OPTIONS:
            i += 1 if "=" in arg else 2
        elif arg in _FLAG_OPTIONS:
            i += 1
        elif arg.startswith("--") and arg != "--help":
            return list(args[:i]), list(args[i:])
        else:
            return None
    return None


def legacy_query(words: Sequence[str]) -> etree._Element:
    """The query of ``--group --action [--name value]...``; a last name without a value reads
    stdin. (The serialiser writes attributes sorted, as the original did.)"""

    def name(word: str) -> str:
        if not word.startswith("--") or len(word) == 2:
            raise click.UsageError(f"Invalid argument {word!r}: expected --<name>")
        return word[2:]

    if len(words) < 2:
        raise click.UsageError("Expected --<group> --<action> [--<parameter> <value>]...")
    attrs = {"action": name(words[1])}
    params = words[2:]
    for i in range(0, len(params), 2):
        value = params[i + 1] if i + 1 < len(params) else sys.stdin.read()
        attrs[name(params[i]).replace("-", "_")] = value
    try:
        query = etree.Element(name(words[0]))
        for key, value in attrs.items():
            query.set(key, value)
    except ValueError as e:
        raise click.UsageError(f"Cannot build the query: {e}") from None
    return query


class Session:
    """Command-line options merged with the settings files; builds the client lazily so that
    ``--help`` works even with a broken configuration."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options

    @cached_property
    def settings(self) -> ApiSettings:
        try:
            settings = load()
        except ConfigError as e:
            fail(f"Error in configuration : {e.message}")
        given = {k: v for k, v in self._options.items() if v is not None and k != "timeout"}
        return replace(settings, **given)

    @cached_property
    def client(self) -> Client | Federation:
        urls = server_list(self.settings.connect)
        user, password = self.settings.user or None, self.settings.password or None
        timeout = self._options["timeout"]
        try:
            if len(urls) == 1:
                return Client(urls[0], user, password, timeout)
            return Federation(urls, user, password, timeout)
        except ValueError as e:
            fail(f"Error : {e}")

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()

    def warn_unreachable(self) -> None:
        if isinstance(self.client, Federation):
            for url, error in self.client.unreachable.items():
                click.echo(f"warning: {url} unreachable: {error}", err=True)


class _ApiGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        split = split_legacy(args)
        if split is not None:
            options, words = split
            ctx.meta[_LEGACY] = words
            args = [*options, _LEGACY_COMMAND]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvqError as e:
            fail(f"Error executing command : {e.message}" + (f" ({e.code})" if e.code else ""))
        except EvqConnectionError as e:
            fail(f"Connection error : {e}")
        except ValueError as e:
            fail(f"Error : {e}")


@click.group(
    cls=_ApiGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Original syntax: evqueue-api [OPTIONS] --<group> --<action> [--<param> <value>]...",
)
@click.option("--connect", metavar="URL[,URL...]",
              help="tcp://host[:port], unix:///path or ws://host[:port]; a list federates.")
@click.option("--user", help="Login.")
@click.option("--password", help="Clear-text password.")
@click.option("--noformat", is_flag=True, default=None, help="Print the XML answer on one line.")
@click.option("--xpath", metavar="EXPR", help="Print the string value of EXPR on the answer.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for connections and answers.")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """evQueue API command line."""
    session = Session(options)
    ctx.obj = session
    ctx.call_on_close(session.close)


@main.command(_LEGACY_COMMAND, hidden=True)
@click.pass_context
def _legacy(ctx: click.Context) -> None:
    words = ctx.meta.get(_LEGACY)
    if words is None:
        raise click.UsageError("Use the --<group> --<action> syntax")
    session: Session = ctx.obj
    try:
        query = legacy_query(words)
    except click.UsageError as e:
        e.ctx = ctx.parent  # the usage line of evqueue-api, not of this hidden command
        raise
    response = session.client.query_raw(query)
    if response.get("status") != "OK":
        raise EvqError.from_response(response)
    settings = session.settings
    if settings.xpath:
        value = xpath_value(response, settings.xpath)
        if value is not None:
            click.echo(value)
    elif settings.noformat:
        click.echo(raw_xml(response))
    else:
        click.echo(pretty_xml(response))


def _parameters(pairs: Sequence[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="PARAMETERS")
        parameters[name] = value
    return parameters


def _wait(session: Session, instance_id: int, max_wait: float, quiet: bool) -> None:
    """Wait with a progress display; exit 1 if the instance ended with errors."""
    progress = None if quiet else ProgressLine(sys.stderr)
    try:
        final = session.client.wait(instance_id, max_wait, progress=progress)
    finally:
        if progress is not None:
            progress.finish()
    errors = final.errors or 0
    click.echo(f"Instance {final.id} {final.status} with {errors} error{'s' * (errors != 1)}")
    if errors:
        sys.exit(INSTANCE_FAILED)


def _wait_options(f: Any) -> Any:
    f = click.option("--quiet", "-q", is_flag=True, help="No progress display.")(f)
    return click.option("--max-wait", type=float, default=0, metavar="SECONDS",
                        help="Give up waiting after this long (0: no limit).")(f)


@main.command()
@click.argument("workflow")
@click.argument("parameters", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--wait", "wait_end", is_flag=True, help="Wait for the instance to end.")
@click.option("--comment", help="Instance comment.")
@click.option("--host", help="Run the tasks on this host (SSH).")
@click.option("--remote-user", help="SSH user for --host.")
@_wait_options
@click.pass_obj
def launch(
    session: Session, workflow: str, parameters: tuple[str, ...], wait_end: bool,
    comment: str | None, host: str | None, remote_user: str | None, max_wait: float,
    quiet: bool,
) -> None:
    """Launch WORKFLOW; exits 1 if --wait sees it end with errors."""
    instance_id = session.client.launch(
        workflow, _parameters(parameters), comment=comment, host=host, user=remote_user
    )
    click.echo(f"Launched instance {instance_id}")
    if wait_end:
        _wait(session, instance_id, max_wait, quiet)


@main.command()
@click.argument("instance_id", type=int)
@_wait_options
@click.pass_obj
def wait(session: Session, instance_id: int, max_wait: float, quiet: bool) -> None:
    """Wait for an instance to end; exits 1 if it ended with errors."""
    _wait(session, instance_id, max_wait, quiet)


@main.command()
@click.argument("instance_id", type=int)
@click.pass_obj
def cancel(session: Session, instance_id: int) -> None:
    """Cancel a running instance (running tasks go on)."""
    session.client.cancel(instance_id)
    click.echo(f"Cancelled instance {instance_id}")


def _instance_rows(instances: list[Instance]) -> list[list[object]]:
    return [
        [i.id, i.name, i.node, i.status, when(i.start_time), i.running_tasks, i.queued_tasks,
         i.error_tasks, i.comment]
        for i in instances
    ]


@main.command()
@click.pass_obj
def status(session: Session) -> None:
    """Nodes and the instances executing on them."""
    client = session.client
    pings = client.ping()
    nodes = pings if isinstance(pings, list) else [pings]
    running = client.status()
    session.warn_unreachable()
    click.echo(table(["NODE", "VERSION", "UPTIME"], [[p.node, p.version, _duration(p.uptime)]
                                                     for p in nodes]))
    click.echo()
    if running:
        click.echo(table(["ID", "WORKFLOW", "NODE", "STATUS", "STARTED", "RUNNING", "QUEUED",
                          "ERRORS", "COMMENT"], _instance_rows(running)))
    else:
        click.echo("No instance executing")


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return (f"{days}d" if days else "") + f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


@main.command()
@click.option("--failed", is_flag=True, help="Only instances that ended with errors.")
@click.option("--workflow", help="Only this workflow.")
@click.option("--status", "state", type=click.Choice(["EXECUTING", "TERMINATED"]),
              help="Only instances in this state.")
@click.option("--node", help="Only instances of this node.")
@click.option("--limit", type=click.IntRange(1), default=30, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.pass_obj
def instances(
    session: Session, failed: bool, workflow: str | None, state: str | None, node: str | None,
    limit: int, offset: int,
) -> None:
    """Instance history, newest first."""
    total, rows = session.client.instances(
        limit=limit, offset=offset, workflow=workflow, status=state, node=node,
        error=True if failed else None,
    )
    session.warn_unreachable()
    click.echo(table(
        ["ID", "WORKFLOW", "NODE", "STATUS", "STARTED", "ENDED", "ERRORS", "COMMENT"],
        [[r.id, r.name, r.node, r.status, when(r.start_time), when(r.end_time), r.errors,
          r.comment] for r in rows],
    ))
    click.echo(f"({len(rows)} of {total} instances)")


@main.command()
@click.pass_obj
def queues(session: Session) -> None:
    """Queues of every node with their load."""
    stats = session.client.queue_statistics()
    session.warn_unreachable()
    click.echo(table(
        ["NODE", "QUEUE", "CONCURRENCY", "SCHEDULER", "QUEUED", "RUNNING"],
        [[q.node, q.name, q.concurrency, q.scheduler, q.size, q.running_tasks] for q in stats],
    ))


@main.command()
@click.pass_obj
def schedules(session: Session) -> None:
    """Workflow schedules (needs ADMIN)."""
    click.echo(table(
        ["ID", "WORKFLOW", "NODE", "SCHEDULE", "ACTIVE", "COMMENT"],
        [[s.id, s.workflow_name, s.node, s.schedule, "yes" if s.active else "no", s.comment]
         for s in session.client.schedules()],
    ))
