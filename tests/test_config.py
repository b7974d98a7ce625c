"""Configuration: file reader, {VAR} substitution, defaults, typed values, validation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evqueue.config import KEYS, Config, ConfigError, Kind

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "config"
OUR_KEYS = {
    "core.storage",
    "sqlite.path",
    "mysql.port",
    "network.query.maxsize",
    "ws.console.enable",
    "processmanager.ssh.key",
    "processmanager.ssh.known_hosts",
    "processmanager.ssh.unknown_hosts",
    "processmanager.ssh.config",
}
NO_ENV: dict[str, str] = {}


def parse(text: str, environ: dict[str, str] = NO_ENV) -> Config:
    return Config.parse(text, environ)


def parse_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.message


def reference_entries() -> list[tuple[str, str]]:
    lines = (DATA / "reference-status-configuration.tsv").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines if not line.startswith("#")]


# ---------------------------------------------------------------------------- reader


def test_syntax_forms():
    cfg = parse(
        "# comment line\n"
        "\n"
        "   \t\n"
        "  \t# indented comment\n"
        "network.bind.port=5100\n"
        "  ws.bind.port \t=\t 5101   # trailing comment\n"
        "mysql.user = evq#comment right after the value\n"
        'mysql.password = "with spaces # and\ttab"  # comment\n'
        "git.signature.name = 'single quoted'\n"
        'network.bind.ip = ""\n'
        "mysql.host = ''\n"
        "core.locale = C.UTF-8\r\n"
        'cluster.nodes = "tcp://a:5000,tcp://b:5000"\r\n'
        "gc.limit = 1\n"
        "gc.limit = 2\n"
        "mysql.database = it's\"ok\n"
        f"core.wd = /{'x' * 5000}\n"
    )
    assert cfg.raw("network.bind.port") == "5100"
    assert cfg.raw("ws.bind.port") == "5101"
    assert cfg.raw("mysql.user") == "evq"
    assert cfg.raw("mysql.password") == "with spaces # and\ttab"
    assert cfg.raw("git.signature.name") == "single quoted"
    assert cfg.raw("network.bind.ip") == ""
    assert cfg.raw("mysql.host") == ""
    assert cfg.raw("core.locale") == "C.UTF-8"
    assert cfg.raw("cluster.nodes") == "tcp://a:5000,tcp://b:5000"
    assert cfg.raw("gc.limit") == "2"  # last occurrence wins
    assert cfg.raw("mysql.database") == "it's\"ok"  # quotes inside an unquoted value
    assert cfg.raw("core.wd") == "/" + "x" * 5000  # no 4095-byte line split
    assert cfg.raw("gc.delay") == "2"  # not in the file: default


def test_empty_text_gives_defaults():
    assert parse("").entries() == Config.from_mapping({}, NO_ENV).entries()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=5000", "Expected configuration entry on line 1"),
        ("# ok\n-gc.limit = 3", "Expected configuration entry on line 2"),
        ("\n\n\"gc.limit\" = 3", "Expected configuration entry on line 3"),
        ("{HOME}.x = 3", "Expected configuration entry on line 1"),
        ("gc.limit 3", "Expecting '=' on line 1"),
        ("gc.limit", "Expecting '=' on line 1"),
        ("\ngc-limit = 3", "Expecting '=' on line 2"),
        ("gc.limit=", "Missing value on line 1"),
        ("gc.delay = 1\ngc.limit = \t ", "Missing value on line 2"),
        ("gc.limit =\r\n", "Missing value on line 1"),
        ("gc.limit = # nothing", "Empty value on line 1"),
        ("gc.limit = #", "Empty value on line 1"),
        ('gc.delay = 1\ngc.limit = "abc', "Missing ending quote on line 2"),
        ("gc.limit = 'abc\"", "Missing ending quote on line 1"),
        ("gc.limit = 1 2", "Garbage data after value on line 1"),
        ('mysql.user = "a b"c', "Garbage data after value on line 1"),
        ("mysql.user = 'a' 'b'", "Garbage data after value on line 1"),
        ("\n\n\nmysql.user = a\tb", "Garbage data after value on line 4"),
        ("gc.limit = 1\nno.such.key = 1", "Unknown configuration entry : no.such.key"),
        ("GC.LIMIT = 1", "Unknown configuration entry : GC.LIMIT"),
    ],
)
def test_reader_errors(text, message):
    assert parse_error(text) == message


def test_reader_checks_syntax_before_the_key_name():
    assert parse_error("no.such.key =") == "Missing value on line 1"


def test_nul_in_value_is_refused():
    assert parse_error('mysql.user = "a\0b"') == (
        "Invalid value 'a\\x00b' for mysql.user: NUL characters are not allowed"
    )


def test_load_file(tmp_path):
    path = tmp_path / "evqueue.conf"
    path.write_bytes(b"\xef\xbb\xbfnetwork.bind.port = 6000\nmysql.user = {EVQ_USER}\n")  # BOM
    cfg = Config.load(path, {"EVQ_USER": "bob"})
    assert cfg["network.bind.port"] == 6000
    assert cfg.raw("mysql.user") == "bob"
    assert Config.load(str(path), NO_ENV).raw("mysql.user") == "{EVQ_USER}"


def test_load_errors(tmp_path):
    missing = tmp_path / "missing.conf"
    opening = "^Unable to open configuration file .*missing.conf: No such file"
    with pytest.raises(ConfigError, match=opening):
        Config.load(missing)
    with pytest.raises(ConfigError, match="Is a directory"):
        Config.load(tmp_path)
    bad = tmp_path / "latin1.conf"
    bad.write_bytes(b"gc.limit = 1\n\nmysql.password = caf\xe9\n")
    with pytest.raises(ConfigError, match="^Invalid UTF-8 on line 3$"):
        Config.load(bad)


def test_from_mapping():
    cfg = Config.from_mapping({"gc.limit": "5", "mysql.user": "{U}"}, {"U": "me"})
    assert cfg["gc.limit"] == 5
    assert cfg.raw("mysql.user") == "me"
    with pytest.raises(ConfigError, match="^Unknown configuration entry : gc.limits$"):
        Config.from_mapping({"gc.limits": "5"}, NO_ENV)


# ---------------------------------------------------------------------------- substitution


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{DB_HOST}", "db.example"),
        ("x{DB_HOST}y", "xdb.exampley"),
        ("{UNDEFINED_VAR}", "{UNDEFINED_VAR}"),
        ("{DB_HOST}:{DB_USER}", "db.example:evq"),
        ("{DB_HOST}/{DB_HOST}", "db.example/db.example"),
        ("{DB_HOST}{UNDEFINED_VAR}{DB_USER}", "db.example{UNDEFINED_VAR}evq"),
        ("{HOST2}", "{HOST2}"),  # digits are not part of a variable name
        ("{}", "{}"),
        ("{DB HOST}", "{DB HOST}"),
        ("{{DB_USER}}", "{evq}"),
        ("{RECURSE}", "{DB_USER}"),  # substituted text is not scanned again
        ("{lower_case}", "ok"),
    ],
)
def test_substitution(value, expected):
    environ = {
        "DB_HOST": "db.example",
        "DB_USER": "evq",
        "HOST2": "nope",
        "HOST": "nope",
        "RECURSE": "{DB_USER}",
        "lower_case": "ok",
    }
    assert parse(f'mysql.host = "{value}"', environ).raw("mysql.host") == expected


def test_substitution_then_typed_value_and_validation():
    cfg = parse("network.bind.port = {EVQ_PORT}\nws.bind.port = {NOT_SET}", {"EVQ_PORT": "7000"})
    assert cfg["network.bind.port"] == 7000
    with pytest.raises(ConfigError, match="^Invalid value '{NOT_SET}' for ws.bind.port"):
        cfg.validate()


def test_default_environ_is_the_process_environment(monkeypatch):
    monkeypatch.setenv("EVQ_TEST_CFG_USER", "from-env")
    assert Config.parse("mysql.user = {EVQ_TEST_CFG_USER}").raw("mysql.user") == "from-env"


# ---------------------------------------------------------------------------- keys and defaults


def test_key_table_is_the_reference_plus_our_keys():
    reference = [name for name, _ in reference_entries()]
    assert len(reference) == 100
    assert set(KEYS) == set(reference) | OUR_KEYS
    assert len(KEYS) == 109


def test_entries_match_the_reference_status_answer():
    """Set the reference engine's effective values: our answer is the same plus our keys."""
    reference = reference_entries()
    cfg = Config.from_mapping({n: v for n, v in reference if v != "****"}, NO_ENV)
    ours = [(n, v) for n, v in cfg.entries() if n not in OUR_KEYS]
    assert ours == reference


@pytest.mark.parametrize(
    ("name", "raw", "typed"),
    [
        ("core.uid", "0", 0),
        ("core.pidfile", "/tmp/evqueue-core.pid", "/tmp/evqueue-core.pid"),
        ("core.ipc.qid", "0xEA023E3C", 0xEA023E3C),
        ("core.locale", "C.UTF-8", "C.UTF-8"),
        ("core.auth.enable", "yes", True),
        ("core.storage", "sqlite", "sqlite"),
        ("forker.pidfile", "/tmp/evqueue-forker.pid", "/tmp/evqueue-forker.pid"),
        ("dpd.interval", "10", 10),
        ("queuepool.scheduler", "fifo", "fifo"),
        ("sqlite.path", "var/evqueue.db", "var/evqueue.db"),
        ("mysql.host", "localhost", "localhost"),
        ("mysql.port", "3306", 3306),
        ("mysql.database", "evqueue", "evqueue"),
        ("network.bind.ip", "127.0.0.1", "127.0.0.1"),
        ("network.bind.port", "5000", 5000),
        ("network.bind.path", "", ""),
        ("network.query.maxsize", "16M", 16 * 1024 * 1024),
        ("ws.bind.port", "5001", 5001),
        ("ws.workers", "8", 8),
        ("ws.console.enable", "yes", True),
        ("processmanager.tasks.directory", ".", "."),
        ("processmanager.logs.directory", "/tmp", "/tmp"),
        ("processmanager.logs.tailsize", "20K", 20 * 1024),
        ("processmanager.monitor.ssh_path", "/usr/bin/ssh", "/usr/bin/ssh"),
        ("processmanager.ssh.known_hosts", "", ""),
        ("processmanager.ssh.config", "", ""),
        ("datastore.dom.maxsize", "500K", 500 * 1024),
        ("datastore.db.maxsize", "50M", 50 * 1024 * 1024),
        ("datastore.gzip.level", "9", 9),
        ("workflowinstance.savepoint.level", "2", 2),
        ("notifications.tasks.timeout", "5", 5),
        ("notifications.logs.maxsize", "16K", 16 * 1024),
        ("cluster.node.name", "localhost", "localhost"),
        ("cluster.notify", "yes", True),
        ("gc.interval", "43200", 43200),
        ("gc.elogs.logs.retention", "90", 90),
        ("logger.syslog.filter", "LOG_NOTICE", 5),
        ("logger.db.filter", "LOG_WARNING", 4),
        ("git.signature.email", "evqueue@local", "evqueue@local"),
        ("elog.enable", "no", False),
        ("elog.bind.ip", "*", "*"),
        ("elog.mysql.database", "evqueue-elogs", "evqueue-elogs"),
        ("elog.log.maxsize", "4K", 4096),
    ],
)
def test_defaults(name, raw, typed):
    cfg = Config.from_mapping({}, NO_ENV)
    assert KEYS[name].default == raw
    assert cfg.raw(name) == raw
    assert cfg[name] == typed
    assert type(cfg[name]) is type(typed)


def test_default_configuration_is_valid():
    Config.from_mapping({}, NO_ENV).validate()


def test_unknown_key_access():
    cfg = Config.from_mapping({}, NO_ENV)
    with pytest.raises(KeyError):
        cfg["no.such.key"]
    with pytest.raises(KeyError):
        cfg.raw("no.such.key")


# ---------------------------------------------------------------------------- typed values


@pytest.mark.parametrize(
    ("raw", "typed"),
    [("yes", True), ("true", True), ("1", True), ("no", False), ("false", False), ("0", False)],
)
def test_booleans(raw, typed):
    assert Config.from_mapping({"gc.enable": raw}, NO_ENV)["gc.enable"] is typed


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("0", 0),
        ("123", 123),
        ("1K", 1024),
        ("20K", 20480),
        ("3M", 3 * 1024**2),
        ("2G", 2 * 1024**3),  # no 32-bit overflow
        ("5G", 5 * 1024**3),
        ("007", 7),
    ],
)
def test_sizes(raw, size):
    cfg = Config.from_mapping({"datastore.db.maxsize": raw}, NO_ENV)
    assert cfg["datastore.db.maxsize"] == size


@pytest.mark.parametrize(
    ("raw", "priority"),
    [
        ("LOG_EMERG", 0),
        ("LOG_ALERT", 1),
        ("LOG_CRIT", 2),
        ("LOG_ERR", 3),
        ("LOG_WARNING", 4),
        ("LOG_NOTICE", 5),
        ("LOG_INFO", 6),
        ("LOG_DEBUG", 7),
    ],
)
def test_log_levels(raw, priority):
    cfg = Config.from_mapping({"logger.syslog.filter": raw}, NO_ENV)
    assert cfg["logger.syslog.filter"] == priority


def test_ipc_keys(tmp_path):
    def key(raw: str) -> object:
        return Config.from_mapping({"core.ipc.qid": raw}, NO_ENV)["core.ipc.qid"]

    assert key("0xEA023E3D") == 0xEA023E3D
    assert key("0Xff") == 255
    assert key("12345") == 12345
    st = os.stat(tmp_path)
    assert key(str(tmp_path)) == (
        (st.st_ino & 0xFFFF) | ((st.st_dev & 0xFF) << 16) | (0xE7 << 24)
    )


def test_uid_and_gid_by_name_or_number():
    cfg = Config.from_mapping({"core.uid": "nobody", "core.gid": "nogroup"}, NO_ENV)
    assert cfg["core.uid"] == 65534
    assert cfg["core.gid"] == 65534
    cfg = Config.from_mapping({"core.uid": "1000", "core.gid": "root"}, NO_ENV)
    assert cfg["core.uid"] == 1000
    assert cfg["core.gid"] == 0


# ---------------------------------------------------------------------------- validation

INT_RANGE = "expected an integer between 0 and 2147483647"
SIZE_FORM = "expected a size (an integer with an optional K, M or G suffix)"
NODE_NAME = "expected 1 to 32 printable ASCII characters without spaces"
IPC_KEY = (
    "expected a hexadecimal (0x...) or decimal key, or the absolute path of an existing file"
)
LEVELS = (
    "expected LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO"
    " or LOG_DEBUG"
)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("network.bind.port", "abc", "expected an integer"),
        ("network.bind.port", "", "expected an integer"),
        ("network.bind.port", "0x10", "expected an integer"),
        ("network.bind.port", "-1", "expected an integer"),
        ("network.bind.port", "+1", "expected an integer"),
        ("network.bind.port", " 1", "expected an integer"),
        ("network.bind.port", "1.5", "expected an integer"),
        ("network.bind.port", "65536", "expected an integer between 0 and 65535"),
        ("mysql.port", "0", "expected an integer between 1 and 65535"),
        ("ws.bind.port", "99999", "expected an integer between 0 and 65535"),
        ("elog.bind.port", "x", "expected an integer"),
        ("dpd.interval", "2147483648", INT_RANGE),
        ("gc.limit", "9" * 40, "expected an integer"),
        ("network.rcv.timeout", "١٢", "expected an integer"),  # non-ASCII digits
        ("ws.workers", "0", "expected an integer between 1 and 2147483647"),
        ("datastore.gzip.level", "10", "expected an integer between 0 and 9"),
        ("workflowinstance.savepoint.level", "4", "expected an integer between 0 and 3"),
        ("gc.elogs.logs.retention", "1", "expected an integer between 2 and 2147483647"),
        ("gc.elogs.triggers.retention", "0", "expected an integer between 2 and 2147483647"),
        ("gc.enable", "YES", "expected a boolean (yes, true, 1, no, false or 0)"),
        ("core.auth.enable", "on", "expected a boolean (yes, true, 1, no, false or 0)"),
        ("ws.console.enable", "", "expected a boolean (yes, true, 1, no, false or 0)"),
        ("datastore.db.maxsize", "1.5M", SIZE_FORM),
        ("datastore.db.maxsize", "16m", SIZE_FORM),
        ("datastore.db.maxsize", "K", SIZE_FORM),
        ("datastore.db.maxsize", "1T", SIZE_FORM),
        ("datastore.db.maxsize", "-1", SIZE_FORM),
        ("datastore.db.maxsize", "1 K", SIZE_FORM),
        (
            "datastore.dom.maxsize",
            "9999999999999999999G",
            "expected a size in bytes between 0 and 9223372036854775807",
        ),
        (
            "network.query.maxsize",
            "0",
            "expected a size in bytes between 1 and 9223372036854775807",
        ),
        ("logger.syslog.filter", "LOG_TRACE", LEVELS),
        ("logger.db.filter", "log_debug", LEVELS),
        ("logger.db.filter", "7", LEVELS),
        ("queuepool.scheduler", "lifo", "expected fifo or prio"),
        ("queuepool.scheduler", "default", "expected fifo or prio"),
        ("core.storage", "postgres", "expected sqlite or mysql"),
        ("core.pidfile", "", "expected a file path"),
        ("forker.pidfile", "", "expected a file path"),
        ("sqlite.path", "", "expected a file path"),
        ("network.bind.path", "/tmp/" + "s" * 103, "expected a path shorter than 108 bytes"),
        ("processmanager.tasks.directory", "", "expected a directory path"),
        ("forker.pipes.directory", "", "expected a directory path"),
        ("processmanager.logs.directory", "", "expected a directory path"),
        ("network.bind.ip", "localhost", "expected an IPv4 address, * or an empty value"),
        ("network.bind.ip", "::1", "expected an IPv4 address, * or an empty value"),
        ("ws.bind.ip", "127.0.0.256", "expected an IPv4 address, * or an empty value"),
        ("elog.bind.ip", "0.0.0.0 ", "expected an IPv4 address, * or an empty value"),
        ("cluster.node.name", "", NODE_NAME),
        ("cluster.node.name", "n" * 33, NODE_NAME),
        ("cluster.node.name", "my node", NODE_NAME),
        ("cluster.node.name", "nœud", NODE_NAME),
        ("core.ipc.qid", "qid", IPC_KEY),
        ("core.ipc.qid", "0x123456789", IPC_KEY),
        ("core.ipc.qid", "4294967296", IPC_KEY),
        ("core.ipc.qid", "relative/path", IPC_KEY),
        ("core.ipc.qid", "/no/such/evqueue/path", IPC_KEY),
        ("core.uid", "no-such-user-evq", "expected a user name or a numeric uid"),
        ("core.uid", "", "expected a user name or a numeric uid"),
        ("core.uid", "4294967295", "expected a number between 0 and 4294967294"),
        ("core.gid", "no-such-group-evq", "expected a group name or gid"),
    ],
)
def test_invalid_values(name, raw, expected):
    cfg = Config.from_mapping({name: raw}, NO_ENV)
    message = f"Invalid value {raw!r} for {name}: {expected}"
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.message == message
    with pytest.raises(ConfigError) as info:
        cfg[name]
    assert info.value.message == message


def test_valid_edge_values():
    cfg = Config.from_mapping(
        {
            "network.bind.port": "0",
            "ws.bind.port": "65535",
            "network.bind.ip": "*",
            "ws.bind.ip": "",
            "network.bind.path": "/tmp/" + "s" * 102,
            "ws.workers": "1",
            "datastore.gzip.level": "0",
            "workflowinstance.savepoint.level": "3",
            "gc.elogs.logs.retention": "2",
            "cluster.node.name": "n" * 32,
            "queuepool.scheduler": "prio",
            "core.storage": "mysql",
        },
        NO_ENV,
    )
    cfg.validate()
    assert cfg["network.bind.port"] == 0
    assert cfg["ws.bind.ip"] == ""


def test_example_message_of_the_brief():
    cfg = Config.from_mapping({"network.bind.port": "abc"}, NO_ENV)
    message = "^Invalid value 'abc' for network.bind.port: expected an integer$"
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize("crt_key", [("a.crt", ""), ("", "a.key")])
def test_ssl_both_or_neither(crt_key):
    crt, key = crt_key
    cfg = Config.from_mapping({"ws.ssl.crt": crt, "ws.ssl.key": key}, NO_ENV)
    message = "^ws.ssl.crt and ws.ssl.key must be both set or both empty$"
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
    Config.from_mapping({"ws.ssl.crt": "a.crt", "ws.ssl.key": "a.key"}, NO_ENV).validate()


def test_elog_database_must_differ():
    cfg = Config.from_mapping({"elog.mysql.database": "evqueue"}, NO_ENV)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.message == (
        "Invalid value 'evqueue' for elog.mysql.database:"
        " expected a database name different from mysql.database"
    )


def test_no_listener():
    off = {"network.bind.ip": "", "network.bind.path": "", "ws.bind.ip": ""}
    with pytest.raises(ConfigError, match="^No network connections configured$"):
        Config.from_mapping(off, NO_ENV).validate()
    # elog.bind.ip defaults to * but only counts when ELogs is enabled
    Config.from_mapping({**off, "elog.enable": "yes"}, NO_ENV).validate()
    Config.from_mapping({**off, "network.bind.path": "/tmp/evq.sock"}, NO_ENV).validate()


@pytest.mark.parametrize(
    "name",
    [
        "processmanager.logs.directory",
        "processmanager.scripts.directory",
        "notifications.tasks.directory",
        "notifications.logs.directory",
    ],
)
def test_directory_must_exist(tmp_path, name):
    missing = str(tmp_path / "missing")
    file = tmp_path / "file"
    file.write_text("")
    for value in (missing, str(file)):
        with pytest.raises(ConfigError) as info:
            Config.from_mapping({name: value}, NO_ENV).validate()
        expected = f"Invalid value {value!r} for {name}: expected an existing directory"
        assert info.value.message == expected


def validate_as_nobody(values: dict[str, str]) -> str:
    """Validate in a forked child running as nobody when the tests run as root (root may
    write anywhere); return the error message, or "valid"."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: always leave through os._exit, never back into pytest
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                Config.from_mapping(values, NO_ENV).validate()
                outcome = "valid"
            except ConfigError as e:
                outcome = e.message
            os.write(write_end, outcome.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return outcome


def test_directory_must_be_writable():
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        readonly = Path(top) / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
        writable = Path(top) / "writable"
        writable.mkdir()
        writable.chmod(0o777)
        name = "notifications.logs.directory"
        assert validate_as_nobody({name: str(readonly)}) == (
            f"Invalid value '{readonly}' for {name}:"
            " expected a directory writable by the daemon's user"
        )
        assert validate_as_nobody({name: str(writable)}) == "valid"


# ---------------------------------------------------------------------------- entries, dirs


def test_entries_mask_passwords():
    cfg = Config.from_mapping(
        {"mysql.password": "s3cret", "git.password": "x", "git.private_key": "/k"}, NO_ENV
    )
    entries = dict(cfg.entries())
    assert [name for name, _ in cfg.entries()] == sorted(KEYS)
    masked = {name for name, value in entries.items() if value == "****"}
    assert masked == {name for name in KEYS if name.endswith(".password")}
    assert len(masked) == 4
    assert entries["git.private_key"] == "/k"  # a path, not masked
    assert entries["gc.limit"] == "1000"
    assert cfg.raw("mysql.password") == "s3cret"


def test_directories():
    cfg = Config.from_mapping(
        {
            "core.pidfile": "run/core.pid",
            "forker.pidfile": "run/forker.pid",
            "forker.pipes.directory": "run/pipes",
            "sqlite.path": "db/evq.db",
            "network.bind.path": "sock/evq.sock",
            "processmanager.tasks.directory": "tasks",
            "processmanager.logs.directory": "logs",
            "processmanager.scripts.directory": "scripts",
            "notifications.tasks.directory": "nt",
            "notifications.logs.directory": "nl",
            "ws.ssl.crt": "certs/a.crt",
            "ws.ssl.key": "certs/a.key",
            "git.repository": "repo",
        },
        NO_ENV,
    )
    assert sorted(cfg.directories()) == sorted(
        ["run", "run/pipes", "db", "sock", "tasks", "logs", "scripts", "nt", "nl"]
    )
    mysql = Config.from_mapping({"core.storage": "mysql", "sqlite.path": "db/evq.db"}, NO_ENV)
    assert "db" not in mysql.directories()
    assert "" not in Config.from_mapping({"sqlite.path": "evq.db"}, NO_ENV).directories()


def test_quick_start_config(tmp_path, monkeypatch):
    """etc/evqueue.conf validates once the server has created its directories."""
    cfg = Config.load(ROOT / "etc" / "evqueue.conf", NO_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="expected an existing directory"):
        cfg.validate()
    for directory in cfg.directories():
        assert not os.path.isabs(directory)
        os.makedirs(directory, exist_ok=True)
    cfg.validate()
    assert cfg["core.storage"] == "sqlite"
    assert cfg["sqlite.path"] == "var/evqueue.db"
    assert (cfg["network.bind.ip"], cfg["network.bind.port"]) == ("127.0.0.1", 5000)
    assert (cfg["ws.bind.ip"], cfg["ws.bind.port"]) == ("127.0.0.1", 5001)
    assert cfg["network.bind.path"] == "var/evqueue.sock"
    assert cfg["core.pidfile"] == "var/evqueue.pid"
    assert cfg["forker.pidfile"] == "var/forker.pid"
    assert cfg["logger.syslog.enable"] is False
    paths = [cfg.raw(k) for k, key in KEYS.items() if key.kind in (Kind.FILE, Kind.SOCKET)]
    paths += [cfg.raw(k) for k, key in KEYS.items() if key.kind in (Kind.DIR, Kind.WRITABLE_DIR)]
    assert all(p.startswith("var") for p in paths)


# ---------------------------------------------------------------------------- fuzzing

_FUZZ_ALPHABET = st.sampled_from(list("ab.=_ \t#\"'\r\n{}0xKMG-/\0é") + ["gc.limit", "mysql.user"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_FUZZ_ALPHABET, max_size=60).map("".join))
def test_random_text_only_raises_config_error(text):
    try:
        cfg = parse(text, {"a": "{b}", "ab": "x\0"})
        cfg.validate()
    except ConfigError as e:
        assert e.message


_key_names = st.sampled_from(sorted(KEYS))
_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "0", "1", "yes", "/", "/tmp", "*", "0x1", "2G", "LOG_DEBUG", "{a}"]),
    st.from_regex(r"[0-9]{1,40}[KMG]?", fullmatch=True),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_key_names, _values, max_size=6))
def test_random_values_only_raise_config_error(values):
    try:
        cfg = Config.from_mapping(values, {"a": "1"})
    except ConfigError as e:
        assert "NUL" in e.message
        return
    for name in KEYS:
        try:
            cfg[name]
        except ConfigError as e:
            assert e.message.startswith(f"Invalid value {cfg.raw(name)!r} for {name}: ")
    try:
        cfg.validate()
    except ConfigError as e:
        assert e.message
