"""Logging through the stdlib: stderr in the foreground, syslog when daemonised, and the
engine log table ``t_log`` (ops.md §5.1).

Unlike the original, syslog messages carry their real priority (the original sent everything
as NOTICE), so the packaged rsyslog split into error.log/debug.log works as intended.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import TYPE_CHECKING

from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.engine.events import EventBus
    from evqueue.storage.base import Storage

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

LEVEL_NAMES = ("LOG_EMERG", "LOG_ALERT", "LOG_CRIT", "LOG_ERR", "LOG_WARNING", "LOG_NOTICE",
               "LOG_INFO", "LOG_DEBUG")
_PY_LEVEL = (logging.CRITICAL, logging.CRITICAL, logging.CRITICAL, logging.ERROR,
             logging.WARNING, NOTICE, logging.INFO, logging.DEBUG)


def python_level(priority: int) -> int:
    """Python logging level of a syslog priority (0 = EMERG … 7 = DEBUG)."""
    return _PY_LEVEL[priority]


def syslog_priority(level: int) -> int:
    """Syslog priority of a Python logging level."""
    if level >= logging.CRITICAL:
        return 2
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= NOTICE:
        return 5
    if level >= logging.INFO:
        return 6
    return 7


class _SyslogHandler(logging.handlers.SysLogHandler):
    """Syslog with ident ``evqueue``, facility daemon and the record's real priority."""

    def mapPriority(self, levelName: str) -> str:  # noqa: N802,N803 (stdlib API)
        return {"NOTICE": "notice"}.get(levelName, super().mapPriority(levelName))


class DatabaseHandler(logging.Handler):
    """Queue engine log lines into ``t_log`` (group-committed, never blocking) and publish
    ``LOG_ENGINE``. Storage's own messages are skipped so a failing database cannot recurse."""

    def __init__(self, storage: Storage, events: EventBus, node: str, level: int) -> None:
        super().__init__(level)
        self._storage = storage
        self._events = events
        self._node = node

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("evqueue.storage"):
            return
        try:
            self._storage.write(
                "INSERT INTO t_log (node_name, log_level, log_message, log_timestamp) "
                "VALUES (%s, %s, %s, %s)",
                (self._node, syslog_priority(record.levelno), record.getMessage()[:1023], now()),
            )
            self._events.publish("LOG_ENGINE")
        except Exception:
            self.handleError(record)


def setup(*, syslog: bool, syslog_priority_max: int, foreground: bool) -> None:
    """Configure the ``evqueue`` logger tree for this process."""
    root = logging.getLogger("evqueue")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    if foreground:
        h: logging.Handler = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        # same filter as syslog (logger.syslog.filter); EVQUEUE_DEBUG=1 shows everything
        h.setLevel(logging.DEBUG if os.environ.get("EVQUEUE_DEBUG")
                   else python_level(syslog_priority_max))
        root.addHandler(h)
    if syslog and os.path.exists("/dev/log"):
        s = _SyslogHandler(address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        s.ident = "evqueue: "
        s.setLevel(python_level(syslog_priority_max))
        root.addHandler(s)
    _fit_level(root)


def _fit_level(root: logging.Logger) -> None:
    """No record is built for a level no handler wants (logging is on the per-task path)."""
    root.setLevel(min((h.level for h in root.handlers), default=logging.WARNING))


def attach_database(storage: Storage, events: EventBus, node: str, priority_max: int) -> None:
    """Start copying log lines at or above ``priority_max`` into ``t_log``."""
    root = logging.getLogger("evqueue")
    root.addHandler(DatabaseHandler(storage, events, node, python_level(priority_max)))
    _fit_level(root)
