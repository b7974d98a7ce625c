"""Daemon <-> forker wire format: one compact JSON object per line.

JSON lines keep both ends trivial and fast (one ``json.loads`` per message, many messages per
``read``). Strings that came from bytes (argv, environment, stdin) travel as ``str`` decoded with
``surrogateescape``: ``json`` escapes lone surrogates as ``\\udcXX`` and restores them, so any byte
string round-trips.

Messages (``op`` field), daemon -> forker::

    hello    {env, acks}          take over the forker; acks = exit seqs acked since the last
                                  confirmation (see ``a`` below)
    spawn    {tid, argv, env?, cwd?, stdin?, merge?}
    kill     {tid, sig, note?}    signal the task's process group; note goes to <tid>.stderr
    ack      {n: [seq, ...], id}  these exits are persisted by the daemon: forget them
    shutdown {}                   exit once no task is running

forker -> daemon::

    hello    {pid, running: [[tid, pid], ...], exits: [exit, ...]}   the replay
    spawned  {tid, pid, a}        pid 0: the program could not be started (its exit follows)
    exit     {n, tid, pid, status, retval, start, end, lost?, a}
    progress {tid, pct}
    killed   {tid, ok}
    error    {req?, tid?, message}  a request (spawn, kill, ...) was refused
    bye      {reason}             this connection is being closed by the forker

``a`` is the id of the last ack batch the forker applied on this connection: acks up to it
need not be carried in the next hello.
"""

from __future__ import annotations

import json
import os
from typing import Any

BYE_REPLACED = "another daemon connected"
"""``bye`` reason telling a daemon that another one took the forker over."""

EXIT_ALREADY_RUNNING = 3
"""Forker exit status when another forker holds the pidfile lock (the caller should adopt it)."""

MAX_LINE = 256 * 1024 * 1024
"""Longest accepted message (a spawn carries its stdin data inline)."""

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


class WireError(Exception):
    """The peer sent something that is not a message."""


def encode(msg: dict[str, Any]) -> bytes:
    """One message as a line of ASCII JSON."""
    return _dumps(msg).encode("ascii") + b"\n"


class LineReader:
    """Accumulates received bytes and yields complete messages, many per chunk."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Messages completed by ``data``; raises WireError on garbage or an oversized line."""
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                raise WireError("message too long")
            self._buf = buf
            return []
        self._buf = buf[end + 1 :]
        try:
            msgs = [_decode(line) for line in buf[:end].decode().split("\n")]
        except ValueError as exc:  # UnicodeDecodeError included
            raise WireError(f"malformed message: {exc}") from None
        for msg in msgs:
            if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
                raise WireError("message is not an object with an 'op'")
        return msgs


def retval_of(status: int) -> int:
    """The original's task retval: exit code as a signed char, -1 when killed by a signal."""
    if not os.WIFEXITED(status):
        return -1
    code = os.WEXITSTATUS(status)
    return code - 256 if code > 127 else code
