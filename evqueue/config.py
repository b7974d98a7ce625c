"""The daemon's configuration: every key, its default and type, the file reader and validation.

The configuration is read once at start-up and never reloaded (ops.md §2.4), so a
:class:`Config` is immutable. Start-up order (ops.md §1.3) maps onto this module as:

1. :meth:`Config.load` reads the file and substitutes ``{VAR}`` (the IPC utility flags may run
   right after this: only reader errors are fatal at that point);
2. the server ``chdir(core.wd)``, creates :meth:`Config.directories` (``mkdir -p``);
3. :meth:`Config.validate` checks every value (directories must then exist and be writable);
4. code reads typed values with ``cfg["network.bind.port"]``.

Every error is a :class:`ConfigError`; the CLI prints its message and exits 255.

File syntax is the original reader's (``src/Configuration/ConfigurationReader.cpp``):
``key = value`` lines, ``#`` comments, values unquoted (ending at a blank or ``#``) or single- or
double-quoted (``""`` is the only way to set an empty value), unknown keys fatal, last occurrence
wins, errors "... on line N". Then every value, defaults included, has each ``{NAME}``
(``NAME`` made of letters and underscores only) replaced by the environment variable ``NAME``
when it is defined; undefined names stay verbatim. Substituted text is not scanned again.

Deliberate deviations from the original:

* inside quotes, ``#`` and tabs are part of the value (the original cut the value there and
  then failed, so passwords could not contain ``#``);
* lines may be of any length (the original silently split lines longer than 4095 bytes);
* the file must be UTF-8 (an optional BOM is skipped); values must not contain NUL;
* sizes are not limited to 32 bits (``2G`` works); integers are at most 2147483647;
* extra validation, to fail at start-up with a clear message rather than later:
  ``network.bind.ip``/``ws.bind.ip``/``elog.bind.ip`` must be IPv4, ``*`` or empty; ports are
  0-65535; ``cluster.node.name`` is 1-32 printable ASCII characters (its DB column);
  ``network.bind.path`` is shorter than 108 bytes (the UNIX socket limit);
  ``processmanager.scripts.directory`` must be writable like the logs directory; pid files and
  ``sqlite.path`` must not be empty; log levels are checked here instead of when the logger
  starts; "No network connections configured" is detected here instead of in the main loop.

Keys added by this implementation (absent from evQueue 3.3):

* ``core.storage`` = ``sqlite`` (default, embedded) | ``mysql`` (MySQL/MariaDB with the
  original's schema);
* ``sqlite.path`` (default ``var/evqueue.db``, relative to the working directory);
* ``mysql.port`` (default 3306; the original only had the library's default port);
* ``network.query.maxsize`` (default ``16M``): largest query document accepted;
* ``ws.console.enable`` (default ``yes``): the built-in web console on the websocket port;
* ``processmanager.ssh.key`` and ``processmanager.ssh.known_hosts`` (default empty): identity
  and known-hosts files for remote tasks run through paramiko; an empty known-hosts value
  means the daemon user's usual known-hosts files. ``processmanager.ssh.unknown_hosts``:
  ``reject`` (default) refuses hosts whose key is not known, ``accept`` trusts them on first
  use and records their key; a changed key is always refused. ``processmanager.ssh.config``
  (default empty: ``~/.ssh/config``): the OpenSSH client configuration whose host aliases
  (``HostName``, ``Port``, ``User``, ``IdentityFile``) remote task hosts may name.
"""

from __future__ import annotations

import enum
import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

Value = bool | int | str

INT_MAX = 2**31 - 1
SIZE_MAX = 2**63 - 1
PORT_MAX = 65535
UNIX_PATH_MAX = 108


class ConfigError(Exception):
    """A configuration that cannot be used; ``message`` is what the user is shown."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Kind(enum.Enum):
    """Value types. The typed value is ``bool`` for BOOL, ``int`` for INT, SIZE (bytes),
    LOGLEVEL (syslog priority 0..7), IPC_KEY, USER and GROUP (resolved ids), else ``str``."""

    BOOL = "bool"
    INT = "int"
    SIZE = "size"
    LOGLEVEL = "loglevel"
    ENUM = "enum"
    STR = "str"
    PATH = "path"  # a file read by the daemon or another program; never checked here
    FILE = "file"  # a file the daemon creates: must be set; its directory is created
    SOCKET = "socket"  # a UNIX socket the daemon creates, or "" for none
    DIR = "dir"  # a directory the daemon uses; created at start-up
    WRITABLE_DIR = "writable_dir"  # created at start-up, then must be writable
    BIND_IP = "bind_ip"  # IPv4 address, "*" (any) or "" (listener disabled)
    NODE_NAME = "node_name"
    IPC_KEY = "ipc_key"
    USER = "user"
    GROUP = "group"


@dataclass(frozen=True)
class Key:
    """One configuration key: its compiled-in default, type and allowed range or choices."""

    name: str
    default: str
    kind: Kind
    lo: int = 0
    hi: int | None = None
    choices: tuple[str, ...] = ()


def _port(name: str, default: str, lo: int = 0) -> Key:
    return Key(name, default, Kind.INT, lo=lo, hi=PORT_MAX)


_TABLE: tuple[Key, ...] = (
    # core.* / forker.* / dpd / queuepool
    Key("core.uid", "0", Kind.USER),
    Key("core.gid", "0", Kind.GROUP),
    Key("core.wd", "", Kind.PATH),
    Key("core.pidfile", "/tmp/evqueue-core.pid", Kind.FILE),
    Key("core.ipc.qid", "0xEA023E3C", Kind.IPC_KEY),
    Key("core.locale", "C.UTF-8", Kind.STR),
    Key("core.auth.enable", "yes", Kind.BOOL),
    Key("core.fastshutdown", "yes", Kind.BOOL),
    Key("core.storage", "sqlite", Kind.ENUM, choices=("sqlite", "mysql")),
    Key("forker.pidfile", "/tmp/evqueue-forker.pid", Kind.FILE),
    Key("forker.pipes.directory", "/tmp", Kind.DIR),
    Key("dpd.interval", "10", Kind.INT),
    Key("queuepool.scheduler", "fifo", Kind.ENUM, choices=("fifo", "prio")),
    # storage
    Key("sqlite.path", "var/evqueue.db", Kind.FILE),
    Key("mysql.host", "localhost", Kind.STR),
    _port("mysql.port", "3306", lo=1),
    Key("mysql.user", "", Kind.STR),
    Key("mysql.password", "", Kind.STR),
    Key("mysql.database", "evqueue", Kind.STR),
    # network.* (API over TCP and UNIX socket)
    Key("network.bind.ip", "127.0.0.1", Kind.BIND_IP),
    _port("network.bind.port", "5000"),
    Key("network.bind.path", "", Kind.SOCKET),
    Key("network.listen.backlog", "64", Kind.INT),
    Key("network.connections.max", "128", Kind.INT),
    Key("network.rcv.timeout", "30", Kind.INT),
    Key("network.snd.timeout", "30", Kind.INT),
    Key("network.query.maxsize", "16M", Kind.SIZE, lo=1),
    # ws.* (websockets)
    Key("ws.bind.ip", "127.0.0.1", Kind.BIND_IP),
    _port("ws.bind.port", "5001"),
    Key("ws.connections.max", "128", Kind.INT),
    Key("ws.listen.backlog", "64", Kind.INT),
    Key("ws.rcv.timeout", "30", Kind.INT),
    Key("ws.snd.timeout", "30", Kind.INT),
    Key("ws.keepalive", "30", Kind.INT),
    Key("ws.workers", "8", Kind.INT, lo=1),
    Key("ws.events.throttling", "yes", Kind.BOOL),
    Key("ws.ssl.crt", "", Kind.PATH),
    Key("ws.ssl.key", "", Kind.PATH),
    Key("ws.console.enable", "yes", Kind.BOOL),
    # processmanager.* (task execution)
    Key("processmanager.tasks.directory", ".", Kind.DIR),
    Key("processmanager.logs.directory", "/tmp", Kind.WRITABLE_DIR),
    Key("processmanager.logs.delete", "yes", Kind.BOOL),
    Key("processmanager.logs.tailsize", "20K", Kind.SIZE),
    Key("processmanager.scripts.directory", "/tmp", Kind.WRITABLE_DIR),
    Key("processmanager.scripts.delete", "yes", Kind.BOOL),
    Key("processmanager.monitor.ssh_path", "/usr/bin/ssh", Kind.PATH),
    Key("processmanager.monitor.ssh_key", "", Kind.PATH),
    Key("processmanager.agent.path", "/usr/bin/evqueue_agent", Kind.STR),
    Key("processmanager.ssh.key", "", Kind.PATH),
    Key("processmanager.ssh.known_hosts", "", Kind.PATH),
    Key("processmanager.ssh.config", "", Kind.PATH),
    Key("processmanager.ssh.unknown_hosts", "reject", Kind.ENUM, choices=("reject", "accept")),
    # datastore.* (task output storage)
    Key("datastore.dom.maxsize", "500K", Kind.SIZE),
    Key("datastore.db.maxsize", "50M", Kind.SIZE),
    Key("datastore.gzip.enable", "yes", Kind.BOOL),
    Key("datastore.gzip.level", "9", Kind.INT, hi=9),
    # workflowinstance.* (persistence policy)
    Key("workflowinstance.savepoint.level", "2", Kind.INT, hi=3),
    Key("workflowinstance.saveparameters", "yes", Kind.BOOL),
    Key("workflowinstance.savepoint.retry.enable", "yes", Kind.BOOL),
    Key("workflowinstance.savepoint.retry.times", "2", Kind.INT),
    Key("workflowinstance.savepoint.retry.wait", "2", Kind.INT),
    # notifications.*
    Key("notifications.tasks.directory", "/tmp", Kind.WRITABLE_DIR),
    Key("notifications.tasks.timeout", "5", Kind.INT),
    Key("notifications.tasks.concurrency", "16", Kind.INT),
    Key("notifications.logs.directory", "/tmp", Kind.WRITABLE_DIR),
    Key("notifications.logs.maxsize", "16K", Kind.SIZE),
    Key("notifications.logs.delete", "yes", Kind.BOOL),
    # cluster.*
    Key("cluster.node.name", "localhost", Kind.NODE_NAME),
    Key("cluster.nodes", "", Kind.STR),
    Key("cluster.notify", "yes", Kind.BOOL),
    Key("cluster.notify.user", "", Kind.STR),
    Key("cluster.notify.password", "", Kind.STR),
    Key("cluster.cnx.timeout", "10", Kind.INT),
    Key("cluster.snd.timeout", "5", Kind.INT),
    Key("cluster.rcv.timeout", "5", Kind.INT),
    # gc.*
    Key("gc.enable", "yes", Kind.BOOL),
    Key("gc.interval", "43200", Kind.INT),
    Key("gc.limit", "1000", Kind.INT),
    Key("gc.delay", "2", Kind.INT),
    Key("gc.workflowinstance.retention", "30", Kind.INT),
    Key("gc.logs.retention", "7", Kind.INT),
    Key("gc.logsapi.retention", "30", Kind.INT),
    Key("gc.logsnotifications.retention", "30", Kind.INT),
    Key("gc.uniqueaction.retention", "30", Kind.INT),
    Key("gc.elogs.logs.retention", "90", Kind.INT, lo=2),
    Key("gc.elogs.triggers.retention", "30", Kind.INT, lo=2),
    # logger.* / loggerapi
    Key("logger.syslog.enable", "yes", Kind.BOOL),
    Key("logger.syslog.filter", "LOG_NOTICE", Kind.LOGLEVEL),
    Key("logger.db.enable", "yes", Kind.BOOL),
    Key("logger.db.filter", "LOG_WARNING", Kind.LOGLEVEL),
    Key("loggerapi.enable", "yes", Kind.BOOL),
    # git.*
    Key("git.repository", "", Kind.PATH),
    Key("git.user", "", Kind.STR),
    Key("git.password", "", Kind.STR),
    Key("git.public_key", "", Kind.PATH),
    Key("git.private_key", "", Kind.PATH),
    Key("git.signature.name", "evQueue", Kind.STR),
    Key("git.signature.email", "evqueue@local", Kind.STR),
    Key("git.workflows.subdirectory", "workflows", Kind.STR),
    # elog.* (ELogs module)
    Key("elog.enable", "no", Kind.BOOL),
    Key("elog.mysql.host", "localhost", Kind.STR),
    Key("elog.mysql.user", "", Kind.STR),
    Key("elog.mysql.password", "", Kind.STR),
    Key("elog.mysql.database", "evqueue-elogs", Kind.STR),
    Key("elog.bind.ip", "*", Kind.BIND_IP),
    _port("elog.bind.port", "5002"),
    Key("elog.queue.size", "1000", Kind.INT),
    Key("elog.bulk.size", "500", Kind.INT),
    Key("elog.log.maxsize", "4K", Kind.SIZE),
)

KEYS: Mapping[str, Key] = MappingProxyType({key.name: key for key in _TABLE})

BOOLEANS = MappingProxyType(
    {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
)
LOG_LEVELS = MappingProxyType(
    {
        name: priority
        for priority, name in enumerate(
            ("LOG_EMERG", "LOG_ALERT", "LOG_CRIT", "LOG_ERR")
            + ("LOG_WARNING", "LOG_NOTICE", "LOG_INFO", "LOG_DEBUG")
        )
    }
)
_SIZE_UNITS = MappingProxyType({"": 1, "K": 1024, "M": 1024**2, "G": 1024**3})

_BLANKS = " \t"
_KEY_RE = re.compile(r"[A-Za-z0-9._]+")
VAR_RE = re.compile(r"\{([A-Za-z_]+)\}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")  # bounded so int() never sees a huge string
_SIZE_RE = re.compile(r"([0-9]{1,19})([KMG]?)")
_HEX_KEY_RE = re.compile(r"0[xX]([0-9A-Fa-f]{1,8})")
_NODE_NAME_RE = re.compile(r"[!-~]{1,32}")
_FTOK_PROJ_ID = 0xE7


def _or_list(words: Sequence[str]) -> str:
    return ", ".join(words[:-1]) + " or " + words[-1]


class Config:
    """The effective configuration: every key of :data:`KEYS` with its string value."""

    def __init__(self, values: Mapping[str, str]) -> None:
        """``values`` must hold every key (use :meth:`load`, :meth:`parse` or
        :meth:`from_mapping`, which add defaults and substitute the environment)."""
        if values.keys() != KEYS.keys():
            raise ValueError("Config() needs a value for every key, and only those")
        for name, value in values.items():
            if "\0" in value:
                raise ConfigError(
                    f"Invalid value {value!r} for {name}: NUL characters are not allowed"
                )
        self._values = MappingProxyType(dict(values))
        self._typed: dict[str, Value] = {}

    # ---------------------------------------------------------------- construction

    @classmethod
    def load(cls, path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
        """Read a configuration file (ops.md §2.1), then substitute ``{VAR}`` (§2.2)."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"Unable to open configuration file {path}: {e.strerror}") from e
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise ConfigError(f"Invalid UTF-8 on line {line}") from e
        return cls.parse(text, environ)

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str] = os.environ) -> Config:
        """Like :meth:`load`, from the file's text."""
        values: dict[str, str] = {}
        for number, line in enumerate(text.split("\n"), start=1):
            entry = parse_line(line.removesuffix("\r"), number)
            if entry is not None:
                name, value = entry
                if name not in KEYS:
                    raise ConfigError(f"Unknown configuration entry : {name}")
                values[name] = value
        return cls.from_mapping(values, environ)

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, str], environ: Mapping[str, str] = os.environ
    ) -> Config:
        """Defaults overridden by ``values``, then ``{VAR}`` substitution from ``environ``."""
        for name in values:
            if name not in KEYS:
                raise ConfigError(f"Unknown configuration entry : {name}")

        def substitute(match: re.Match[str]) -> str:
            return environ.get(match.group(1), match.group(0))

        return cls(
            {
                name: VAR_RE.sub(substitute, values.get(name, key.default))
                for name, key in KEYS.items()
            }
        )

    # ---------------------------------------------------------------- access

    def raw(self, name: str) -> str:
        """The string value of a key (after substitution). Unknown key: KeyError."""
        return self._values[name]

    def __getitem__(self, name: str) -> Value:
        """The typed value of a key (see :class:`Kind`). Unknown key: KeyError; a value that
        does not convert: ConfigError (never after a successful :meth:`validate`)."""
        try:
            return self._typed[name]
        except KeyError:
            value = _convert(KEYS[name], self._values[name])
            self._typed[name] = value
            return value

    def entries(self) -> list[tuple[str, str]]:
        """Every key sorted by name with its string value, passwords masked (``status``)."""
        return [
            (name, "****" if name.endswith(".password") else self._values[name])
            for name in sorted(self._values)
        ]

    def directories(self) -> list[str]:
        """Directories the server must create (``mkdir -p``) before :meth:`validate`: the
        directory-valued keys, and the parent directories of files the daemon creates
        (pid files, UNIX socket, SQLite database). Relative to the working directory."""
        dirs: list[str] = []
        for name, key in KEYS.items():
            value = self._values[name]
            if key.kind in (Kind.DIR, Kind.WRITABLE_DIR):
                dirs.append(value)
            elif key.kind in (Kind.FILE, Kind.SOCKET) and self._creates(name):
                dirs.append(os.path.dirname(value))
        return list(dict.fromkeys(d for d in dirs if d))

    def _creates(self, name: str) -> bool:
        if name == "sqlite.path":
            return self._values["core.storage"] == "sqlite"
        return self._values[name] != ""

    # ---------------------------------------------------------------- validation

    def validate(self) -> None:
        """Check every value (ops.md §2.3); raise ConfigError for the first bad one."""
        for name, key in KEYS.items():
            self[name]  # converts the value, raising ConfigError if it is invalid
            if key.kind is Kind.WRITABLE_DIR:
                _check_writable(key, self._values[name])
        if bool(self["ws.ssl.crt"]) != bool(self["ws.ssl.key"]):
            raise ConfigError("ws.ssl.crt and ws.ssl.key must be both set or both empty")
        if self["elog.mysql.database"] == self["mysql.database"]:
            raise ConfigError(
                f"Invalid value {self.raw('elog.mysql.database')!r} for elog.mysql.database:"
                " expected a database name different from mysql.database"
            )
        elog_listens = self["elog.enable"] and self["elog.bind.ip"]
        if not (
            self["network.bind.ip"]
            or self["network.bind.path"]
            or self["ws.bind.ip"]
            or elog_listens
        ):
            raise ConfigError("No network connections configured")


def _skip_blanks(line: str, i: int) -> int:
    while i < len(line) and line[i] in _BLANKS:
        i += 1
    return i


def parse_line(line: str, number: int) -> tuple[str, str] | None:
    """One line of the file: ``(key, value)``, or None for a blank or comment line."""
    i = _skip_blanks(line, 0)
    if i == len(line) or line[i] == "#":
        return None
    match = _KEY_RE.match(line, i)
    if match is None:
        raise ConfigError(f"Expected configuration entry on line {number}")
    i = _skip_blanks(line, match.end())
    if i == len(line) or line[i] != "=":
        raise ConfigError(f"Expecting '=' on line {number}")
    i = _skip_blanks(line, i + 1)
    if i == len(line):
        raise ConfigError(f"Missing value on line {number}")
    if line[i] in "\"'":
        end = line.find(line[i], i + 1)
        if end < 0:
            raise ConfigError(f"Missing ending quote on line {number}")
        value = line[i + 1 : end]
        i = end + 1
    else:
        start = i
        while i < len(line) and line[i] not in " \t#":
            i += 1
        value = line[start:i]
        if not value:
            raise ConfigError(f"Empty value on line {number}")
    i = _skip_blanks(line, i)
    if i < len(line) and line[i] != "#":
        raise ConfigError(f"Garbage data after value on line {number}")
    return match.group(), value


def _invalid(key: Key, value: str, expected: str) -> ConfigError:
    return ConfigError(f"Invalid value {value!r} for {key.name}: expected {expected}")


def _check_range(key: Key, value: str, number: int, what: str, kind_max: int) -> int:
    """``number`` within ``key.lo`` and ``key.hi`` (or the kind's maximum)."""
    hi = kind_max if key.hi is None else key.hi
    if not key.lo <= number <= hi:
        raise _invalid(key, value, f"{what} between {key.lo} and {hi}")
    return number


def _convert(key: Key, value: str) -> Value:
    """The typed value of ``value`` for ``key``, or ConfigError naming what is expected."""
    match key.kind:
        case Kind.BOOL:
            if value not in BOOLEANS:
                raise _invalid(key, value, "a boolean (yes, true, 1, no, false or 0)")
            return BOOLEANS[value]
        case Kind.INT:
            if not _DIGITS_RE.fullmatch(value):
                raise _invalid(key, value, "an integer")
            return _check_range(key, value, int(value), "an integer", INT_MAX)
        case Kind.SIZE:
            size = _SIZE_RE.fullmatch(value)
            if size is None:
                raise _invalid(key, value, "a size (an integer with an optional K, M or G suffix)")
            number = int(size.group(1)) * _SIZE_UNITS[size.group(2)]
            return _check_range(key, value, number, "a size in bytes", SIZE_MAX)
        case Kind.LOGLEVEL:
            if value not in LOG_LEVELS:
                raise _invalid(key, value, _or_list(list(LOG_LEVELS)))
            return LOG_LEVELS[value]
        case Kind.ENUM:
            if value not in key.choices:
                raise _invalid(key, value, _or_list(key.choices))
            return value
        case Kind.FILE:
            if not value:
                raise _invalid(key, value, "a file path")
            return value
        case Kind.SOCKET:
            if len(os.fsencode(value)) >= UNIX_PATH_MAX:
                raise _invalid(key, value, f"a path shorter than {UNIX_PATH_MAX} bytes")
            return value
        case Kind.DIR | Kind.WRITABLE_DIR:
            if not value:
                raise _invalid(key, value, "a directory path")
            return value
        case Kind.BIND_IP:
            if value not in ("", "*"):
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise _invalid(key, value, "an IPv4 address, * or an empty value") from None
            return value
        case Kind.NODE_NAME:
            if not _NODE_NAME_RE.fullmatch(value):
                raise _invalid(key, value, "1 to 32 printable ASCII characters without spaces")
            return value
        case Kind.IPC_KEY:
            return _ipc_key(key, value)
        case Kind.USER | Kind.GROUP:
            return _account_id(key, value)
        case _:
            return value


def _ipc_key(key: Key, value: str) -> int:
    """SysV IPC key: ``0x`` hex, decimal, or ``ftok(path, 0xE7)`` of an existing file."""
    expected = "a hexadecimal (0x...) or decimal key, or the absolute path of an existing file"
    if value.startswith("/"):
        try:
            st = os.stat(value)
        except OSError:
            raise _invalid(key, value, expected) from None
        return (st.st_ino & 0xFFFF) | ((st.st_dev & 0xFF) << 16) | (_FTOK_PROJ_ID << 24)
    hexa = _HEX_KEY_RE.fullmatch(value)
    if hexa is not None:
        return int(hexa.group(1), 16)
    if _DIGITS_RE.fullmatch(value) and int(value) <= 0xFFFFFFFF:
        return int(value)
    raise _invalid(key, value, expected)


def _account_id(key: Key, value: str) -> int:
    """``core.uid``/``core.gid``: a number, or a name resolved on this host."""
    if _DIGITS_RE.fullmatch(value):
        return _check_range(key, value, int(value), "a number", 2**32 - 2)
    try:
        if key.kind is Kind.USER:
            return pwd.getpwnam(value).pw_uid
        return grp.getgrnam(value).gr_gid
    except KeyError:
        what = "a user name or a numeric uid" if key.kind is Kind.USER else "a group name or gid"
        raise _invalid(key, value, what) from None


def _check_writable(key: Key, path: str) -> None:
    """The directory must exist and be writable by the effective user (ops.md §2.3)."""
    if not os.path.isdir(path):
        raise _invalid(key, path, "an existing directory")
    if not os.access(path, os.W_OK | os.X_OK, effective_ids=True):
        raise _invalid(key, path, "a directory writable by the daemon's user")
