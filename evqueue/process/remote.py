"""Remote tasks (workflow.md §4.10): what runs where, and the shell command line sshd gets.

Nothing but sshd is needed on the remote host. A task (its ``host``/``user``, else the launch's)
becomes a :class:`RemoteSpec`; :mod:`evqueue.process.ssh` runs it over a pooled paramiko
connection and ends it through the same path as a local task. That module is imported on the
first remote task only: paramiko and its crypto cost a daemon that never uses SSH about 30 MB.

The remote command is plain POSIX shell, every word quoted (``shlex.quote``)::

    cd '<wd>' || {error; exit 255}; echo $$; exec env 'EVQUEUE_ENV=true' 'K=V'… '<path>' '<arg>'…

sshd runs it in a new session, so ``$$`` is the process group of the task and everything it
starts: a kill is ``kill -KILL -- -<pgid>`` sent on another channel. ENV-mode inputs go through
``env`` since sshd usually refuses ``AcceptEnv``. A SCRIPT task's content is sent over stdin
ahead of the task's stdin data; the remote shell copies exactly that many bytes to a ``mktemp``
file (``dd bs=1``, which never reads past them), runs it and deletes it.

Remote tasks do not outlive the daemon: at shutdown they are killed, and at the next start the
engine marks them failed (``REMOTE_LOST``) and retries them per their retry policy.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evqueue.process.spawner import TASK_ENV

REMOTE_LOST = " (a remote task is stopped with the engine: its exit cannot be followed over SSH)"
"""Added to the error of a remote task saved as running, when the engine starts again."""
_CHDIR_ERROR = "evq_monitor: Unable to change working directory to '{}'"
_TARGET = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)\Z|(?P<host>[^:]+):(?P<port>\d+)\Z")


class RemoteError(Exception):
    """A remote task could not be started; the text goes to its stderr."""


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """One remote task execution. ``host`` is ``name``, ``name:port`` or ``[v6]:port``
    (optionally preceded by ``login@``);
    ``user`` defaults to the daemon's user. ``argv`` is word-expanded locally (the program
    path as the local engine resolves it); with ``script`` set, the script is the program and
    ``argv`` its arguments. ``cwd`` is taken on the remote host (relative: to the home)."""

    tid: int
    host: str
    user: str | None
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stdin: bytes = b""
    script: bytes | None = None
    merge_stderr: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    user: str
    #: ``IdentityFile`` of the OpenSSH client configuration.
    identity_files: tuple[str, ...] = ()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts (an alias: by its real name)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


#: The OpenSSH client configuration of a host name: lower-case keywords (``hostname``,
#: ``port``, ``user``, ``identityfile`` as a list), as paramiko reads them.
HostConfig = Callable[[str], Mapping[str, Any]]


def target_of(host: str, user: str | None, config: HostConfig | None = None) -> Target:
    """Where to connect: ``host`` may also be ``user@host`` (the task's ``user`` wins) and
    ``host:port``. ``config`` gives what ``~/.ssh/config`` says of the name, as the original's
    ``ssh`` command honoured it: an alias's real host name, port, user and identity files,
    which the name's own ``user@`` and ``:port`` override."""
    if "@" in host:
        login, host = host.rsplit("@", 1)
        user = user or login
    m = _TARGET.match(host)
    port: int | None = None
    if m is not None:
        host, port = (m["v6"], int(m["p6"])) if m["v6"] else (m["host"], int(m["port"]))
    found = config(host) if config is not None else {}
    return Target(
        found.get("hostname") or host,
        port or int(found.get("port") or 22),
        user or found.get("user") or getpass.getuser(),
        tuple(os.path.expanduser(f) for f in found.get("identityfile") or ()),
    )


def remote_command(spec: RemoteSpec, delete_script: bool) -> str:
    """The POSIX shell command line sshd runs for ``spec`` (its first output line is the
    pgid, followed by the script's temporary path for SCRIPT tasks)."""
    q = shlex.quote
    parts = []
    if spec.cwd:
        error = q(_CHDIR_ERROR.format(spec.cwd))
        parts.append(f"cd {q(spec.cwd)} 2>/dev/null || {{ echo {error} >&2; exit 255; }}")
    env = " ".join(q(f"{k}={v}") for k, v in {**TASK_ENV, **(spec.env or {})}.items())
    args = " ".join(q(a) for a in spec.argv)
    if spec.script is None:
        parts += ["echo $$", f"exec env {env} {args}"]
    else:
        cleanup = '; rm -f "$f"' if delete_script else ""
        parts += [
            'f=$(mktemp) || exit 255',
            'echo "$$ $f"',
            f'dd bs=1 count={len(spec.script)} of="$f" 2>/dev/null && chmod 700 "$f" || exit 255',
            f'env {env} "$f" {args}; rc=$?{cleanup}',
            "exit $rc",
        ]
    return "; ".join(parts)


