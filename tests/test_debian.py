"""Debian packaging (debian/, packaging.mk).

Fast checks read debian/ directly: the systemd unit's settings (and ``systemd-analyze verify``),
the packaged configuration through the daemon's own reader, and the maintainer scripts'
configuration editing. The slow tests build the package with ``make deb``, install it on this
machine with dpkg, start the daemon as systemd would, ping it over the packaged UNIX socket with
a raw socket exchange, stop it, purge the package and check that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from evqueue.config import KEYS, Config

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "debian"
UNIT = DEBIAN / "evqueue-core.evqueue.service"
PACKAGED_CONF = DEBIAN / "evqueue.conf"
PACKAGE = "evqueue-core"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALLED_UNIT = Path("/lib/systemd/system/evqueue.service")
# Everything the package creates outside dpkg's own database.
LEFTOVERS = (
    "/etc/evqueue.conf",
    "/etc/rsyslog.d/90-evqueue.conf",
    "/usr/bin/evqueue",
    "/usr/lib/evqueue",
    "/usr/share/evqueue-core",
    "/var/lib/evqueue",
    "/var/log/evqueue",
    "/run/evqueue",
    str(INSTALLED_UNIT),
    "/etc/systemd/system/multi-user.target.wants/evqueue.service",
)


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → values, in order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, got {values}"
    return values[0]


# ------------------------------------------------------------------------------ static checks


def test_unit_keeps_tasks_running_and_matches_packaged_config() -> None:
    s = unit_settings(UNIT.read_text())
    conf = Config.load(PACKAGED_CONF)
    assert one(s, "Service.KillMode") == "process"
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", one(s, "Service.ExecReload"))
    assert one(s, "Service.Type") == "forking"
    assert one(s, "Service.ExecStart") == "/usr/bin/evqueue --daemon --config /etc/evqueue.conf"
    assert one(s, "Service.PIDFile") == conf.raw("core.pidfile") == "/run/evqueue/core.pid"
    assert one(s, "Service.User") == one(s, "Service.Group") == "evqueue"
    assert one(s, "Service.RuntimeDirectory") == "evqueue"
    # The forker and its tasks keep using /run/evqueue across a stop.
    assert one(s, "Service.RuntimeDirectoryPreserve") == "yes"
    assert one(s, "Service.PrivateTmp") == "no"
    assert one(s, "Service.OOMPolicy") == "continue"
    for breaks_sudo in ("NoNewPrivileges", "ProtectSystem", "RestrictSUIDSGID", "SystemCallFilter"):
        assert f"Service.{breaks_sudo}" not in s, breaks_sudo
    assert one(s, "Install.WantedBy") == "multi-user.target"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "evqueue.service"
    shutil.copy(UNIT, unit)
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        # Only the installed package provides the daemon.
        if not (
            "Command /usr/bin/evqueue is not executable" in line
            and not os.path.exists("/usr/bin/evqueue")
        )
    ]
    assert problems == []


def test_packaged_config_is_accepted_by_the_daemon_reader() -> None:
    conf = Config.load(PACKAGED_CONF, environ={})
    for name in KEYS:
        conf[name]  # raises ConfigError for a value the daemon would refuse
    assert conf["core.storage"] == "sqlite"
    assert conf.raw("sqlite.path").startswith("/var/lib/evqueue/")
    assert conf.raw("network.bind.path") == "/run/evqueue/evqueue.socket"
    assert (conf["network.bind.ip"], conf["network.bind.port"]) == ("127.0.0.1", 5000)
    assert (conf["ws.bind.ip"], conf["ws.bind.port"]) == ("127.0.0.1", 5001)
    assert conf["logger.syslog.enable"] is True
    # Task outputs and scripts must survive a restart of the daemon (and of the host for the
    # database): nothing under /tmp or the run directory.
    for key in (
        "processmanager.logs.directory",
        "processmanager.scripts.directory",
        "notifications.logs.directory",
    ):
        assert conf.raw(key).startswith("/var/lib/evqueue/"), key
    # Run-time files live in the directory systemd and tmpfiles.d create.
    tmpfiles = (DEBIAN / "evqueue-core.evqueue.tmpfiles").read_text()
    assert re.search(r"^d /run/evqueue 0755 evqueue evqueue", tmpfiles, re.M)
    for key in ("core.pidfile", "forker.pidfile", "network.bind.path"):
        assert os.path.dirname(conf.raw(key)) == "/run/evqueue", key


def test_changelog_version_is_the_project_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"evqueue \(([^)]+)\) ", first)
    assert match is not None, first
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert match.group(1) == project


@pytest.mark.parametrize("script", ["config", "postinst", "prerm", "postrm"])
def test_maintainer_script_is_valid_sh(script: str) -> None:
    path = DEBIAN / f"{PACKAGE}.{script}"
    assert os.access(path, os.R_OK)
    subprocess.run(["sh", "-n", str(path)], check=True, timeout=10)


def _shell_function(script: str, name: str) -> str:
    text = (DEBIAN / f"{PACKAGE}.{script}").read_text()
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.M | re.S)
    assert match is not None, f"{name}() not found in {script}"
    return match.group()


def test_config_and_postinst_read_the_file_alike() -> None:
    assert _shell_function("config", "conf_get") == _shell_function("postinst", "conf_get")


CONF_SAMPLE = """\
# comment mentioning mysql.host = nowhere
core.storage = sqlite
mysql.host = localhost   # trailing comment
mysql.host = "db.old"
#mysql.user = evqueue
mysql.database = evqueue
"""


def _conf_update(path: Path, key: str, value: str, default: str) -> subprocess.CompletedProcess:
    functions = _shell_function("postinst", "conf_get") + _shell_function("postinst", "conf_update")
    script = f'{functions}CONF="$1"; shift; conf_update "$@"'
    return subprocess.run(
        ["sh", "-ec", script, "sh", str(path), key, value, default],
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_postinst_writes_debconf_answers_the_daemon_reads_back(tmp_path: Path) -> None:
    conf = tmp_path / "evqueue.conf"
    conf.write_text(CONF_SAMPLE)
    password = 'p@ss word #1 \\ with "quote'
    for key, value, default in (
        ("core.storage", "mysql", "sqlite"),
        ("mysql.host", "db.example", "localhost"),
        ("mysql.user", "evq", ""),
        ("mysql.password", password, ""),
    ):
        done = _conf_update(conf, key, value, default)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = conf.read_text().splitlines()
    # In place: the active mysql.host line (duplicates dropped), the commented mysql.user line.
    assert lines == [
        "# comment mentioning mysql.host = nowhere",
        'core.storage = "mysql"',
        'mysql.host = "db.example"',
        'mysql.user = "evq"',
        "mysql.database = evqueue",
        f"mysql.password = '{password}'",
    ]
    read = Config.load(conf, environ={})
    assert read["core.storage"] == "mysql"
    assert read["mysql.host"] == "db.example"
    assert read["mysql.user"] == "evq"
    assert read["mysql.password"] == password


def test_postinst_leaves_unchanged_answers_and_impossible_values_alone(tmp_path: Path) -> None:
    conf = tmp_path / "evqueue.conf"
    conf.write_text(CONF_SAMPLE)
    conf.chmod(0o640)
    before = conf.stat()
    # Effective values (last occurrence; default when absent) are not rewritten.
    assert _conf_update(conf, "mysql.host", "db.old", "localhost").returncode == 0
    assert _conf_update(conf, "mysql.port", "3306", "3306").returncode == 0
    both_quotes = _conf_update(conf, "mysql.password", 'it\'s "x"', "")
    assert both_quotes.returncode == 0 and "edit" in both_quotes.stderr
    assert conf.read_text() == CONF_SAMPLE
    # An edit keeps the inode and mode (dpkg-statoverride root:evqueue 0640).
    assert _conf_update(conf, "mysql.database", "other", "evqueue").returncode == 0
    after = conf.stat()
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o640)
    assert conf.read_text().endswith('mysql.database = "other"\n')


def test_rsyslog_rule_splits_errors_from_the_rest(tmp_path: Path) -> None:
    """Run rsyslogd on a private socket with the packaged rule (log paths moved to tmp_path)."""
    rsyslogd = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin")
    if rsyslogd is None:
        pytest.skip("rsyslog is not installed")
    rule = (DEBIAN / "rsyslog" / "90-evqueue.conf").read_text()
    assert rule.count("/var/log/evqueue/") == 2
    sock = tmp_path / "log.sock"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        'global(workDirectory="{0}")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        'input(type="imuxsock" Socket="{0}/log.sock" CreatePath="on")\n'
        "{1}".format(tmp_path, rule.replace("/var/log/evqueue/", f"{tmp_path}/"))
    )
    proc = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.05)
        daemon = 3 << 3
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(str(sock))
            for priority, text in ((3, "an error"), (5, "a notice"), (7, "a debug line")):
                s.send(f"<{daemon | priority}>evqueue: {text}".encode())
            s.send(f"<{daemon | 3}>other: not ours".encode())
        error_log, debug_log = tmp_path / "error.log", tmp_path / "debug.log"
        while "a debug line" not in (debug_log.read_text() if debug_log.exists() else ""):
            assert time.monotonic() < deadline, "rsyslogd wrote nothing to debug.log"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    errors, rest = error_log.read_text(), debug_log.read_text()
    assert "an error" in errors and "notice" not in errors and "not ours" not in errors
    assert "a notice" in rest and "an error" not in rest and "not ours" not in rest


# ---------------------------------------------------------------------- build, install, run


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "installing a .deb needs root"
    for tool, package in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper")):
        if shutil.which(tool) is None:
            return f"{tool} not found: install {package} (make deb-deps)"
    if subprocess.run(["dpkg-query", "-W", PACKAGE], capture_output=True).returncode == 0:
        return f"{PACKAGE} is already installed on this machine: not touching it"
    with contextlib.suppress(KeyError):
        pwd.getpwnam("evqueue")
        return "a user evqueue already exists on this machine: not touching it"
    for port in (5000, 5001):  # the packaged configuration's TCP and websocket ports
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port} is taken: the packaged daemon could not listen"
    return None


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built by ``make deb`` from a clean copy of this tree."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("deb")
    build = subprocess.run(
        ["make", "--no-print-directory", "-f", "packaging.mk", "deb", f"DEB_OUT={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    debs = list(out.glob(f"{PACKAGE}_*.deb"))
    assert len(debs) == 1, debs
    assert not (out / "deb-build").exists()
    return debs[0]


def _run(*cmd: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
    env = {"PATH": SYSTEM_PATH, "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def _evqueue_pids() -> list[int]:
    try:
        uid = pwd.getpwnam("evqueue").pw_uid
    except KeyError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


@contextlib.contextmanager
def installed(deb: Path, preseed: str = "") -> Iterator[None]:
    """Install ``deb`` (debconf answers from ``preseed``); always purge it afterwards and check
    that the package left nothing behind."""
    if preseed:
        done = _run("debconf-set-selections", input=preseed)
        assert done.returncode == 0, done.stderr
    passed = False
    try:
        done = _run("dpkg", "-i", str(deb), timeout=300)
        if done.returncode != 0:
            fixed = _run("apt-get", "install", "-f", "-y", "--no-install-recommends", timeout=300)
            assert fixed.returncode == 0, done.stderr + fixed.stderr
        yield
        passed = True
    finally:
        if not passed:
            # The user did not exist before: its processes are the ones this test started.
            for pid in _evqueue_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        purge = _run("dpkg", "--purge", PACKAGE, timeout=300)
    # On success the forker is still running: prerm must stop it, or the user cannot go.
    assert purge.returncode == 0, purge.stderr
    assert _run("dpkg-query", "-W", PACKAGE).returncode != 0
    assert [p for p in LEFTOVERS if os.path.lexists(p)] == []
    for database in (pwd.getpwnam, grp.getgrnam):
        with contextlib.suppress(KeyError):
            database("evqueue")
            pytest.fail(f"evqueue still in {database.__name__}: {purge.stderr}")
    assert "evqueue" not in _run("dpkg-statoverride", "--list").stdout
    assert "evqueue-core/" not in _run("debconf-show", PACKAGE).stdout


def _read_document(sock: socket.socket, buf: bytearray) -> ET.Element:
    """Receive until ``buf`` holds one complete XML document; consume and return it."""
    deadline = time.monotonic() + 15
    while True:
        text = bytes(buf).strip()
        if text:
            with contextlib.suppress(ET.ParseError):
                element = ET.fromstring(text)
                buf.clear()
                return element
        assert time.monotonic() < deadline, f"incomplete document: {bytes(buf)!r}"
        chunk = sock.recv(65536)
        assert chunk, f"connection closed; received {bytes(buf)!r}"
        buf.extend(chunk)


def ping(path: str, user: str = "admin", password: str = "admin") -> ET.Element:
    """Authenticate on the API socket like any client and send ``<ping />``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(path)
        buf = bytearray()
        challenge = _read_document(sock, buf)
        assert challenge.tag == "auth", ET.tostring(challenge)
        key = hashlib.sha1(password.encode()).digest()
        response = hmac.new(key, bytes.fromhex(challenge.get("challenge", "")), hashlib.sha1)
        sock.sendall(f'<auth response="{response.hexdigest()}" user="{user}" />\n'.encode())
        ready = _read_document(sock, buf)
        assert (ready.tag, ready.get("status"), ready.get("profile")) == ("ready", "OK", "ADMIN")
        sock.sendall(b"<ping />\n")
        return _read_document(sock, buf)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or " Z " in _proc_stat(pid):
            return True
        time.sleep(0.1)
    return False


def _proc_stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""


def run_service_like_systemd() -> None:
    """Start the installed unit's ExecStart as its User, check it serves, reload, stop it."""
    unit = unit_settings(INSTALLED_UNIT.read_text())
    conf = Config.load("/etc/evqueue.conf", environ={})
    as_user = ["runuser", "-u", one(unit, "Service.User"), "--", "env", "-i"]
    start = _run(
        *as_user,
        f"PATH={SYSTEM_PATH}",
        "LANG=C.UTF-8",
        *shlex.split(one(unit, "Service.ExecStart")),
        timeout=90,
        cwd="/",
    )
    # Type=forking: the foreground process exits 0 once the daemon serves.
    assert start.returncode == 0, start.stdout + start.stderr
    pid = int(Path(one(unit, "Service.PIDFile")).read_text())
    assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("evqueue").pw_uid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"evqueue --daemon" in cmdline  # what monitoring templates count
    sock = conf.raw("network.bind.path")
    answer = ping(sock)
    assert (answer.tag, answer.get("status")) == ("response", "OK"), ET.tostring(answer)
    # ExecReload: SIGHUP reloads, the daemon keeps serving.
    reload_cmd = one(unit, "Service.ExecReload").replace("$MAINPID", str(pid))
    assert _run(*shlex.split(reload_cmd)).returncode == 0
    assert ping(sock).get("status") == "OK"
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid, 30), "daemon still running 30 s after SIGTERM"
    assert not os.path.exists(one(unit, "Service.PIDFile"))


def check_installed_layout() -> None:
    user = pwd.getpwnam("evqueue")
    assert (user.pw_dir, user.pw_shell) == ("/var/lib/evqueue", "/usr/sbin/nologin")
    evqueue_gid = grp.getgrnam("evqueue").gr_gid
    for path in (
        "/var/lib/evqueue",
        "/run/evqueue",
        "/usr/share/evqueue-core/plugins/notifications",
    ):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (user.pw_uid, evqueue_gid), path
    conf = os.stat("/etc/evqueue.conf")
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (0, evqueue_gid, 0o640)
    conffiles = _run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert "/etc/evqueue.conf" in conffiles
    assert "/etc/rsyslog.d/90-evqueue.conf" in conffiles
    version = _run("/usr/bin/evqueue", "--version")
    assert version.returncode == 0 and "evQueue version" in version.stdout, version.stderr


@pytest.mark.slow
def test_deb_installs_runs_as_a_service_and_purges(deb: Path) -> None:
    with installed(deb):
        check_installed_layout()
        run_service_like_systemd()
        assert os.path.isfile(Config.load("/etc/evqueue.conf", environ={}).raw("sqlite.path"))


def _mysql_admin() -> pymysql.connections.Connection:
    try:
        return pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            autocommit=True,
            connect_timeout=3,
        )
    except pymysql.Error as e:
        pytest.skip(f"MariaDB on 127.0.0.1:3306 unreachable: {e}")


@pytest.mark.slow
@pytest.mark.mysql
def test_deb_debconf_mysql_answers_configure_the_daemon(deb: Path) -> None:
    admin = _mysql_admin()
    database = f"evq_test_{secrets.token_hex(6)}"
    preseed = "".join(
        f"{PACKAGE} {PACKAGE}/{question} {kind} {value}\n"
        for question, kind, value in (
            ("storage", "select", "mysql"),
            ("mysql-host", "string", "127.0.0.1"),
            ("mysql-user", "string", "root"),
            ("mysql-database", "string", database),
        )
    )
    try:
        with installed(deb, preseed):
            conf = Config.load("/etc/evqueue.conf", environ={})
            assert conf["core.storage"] == "mysql"
            assert (conf["mysql.host"], conf["mysql.user"]) == ("127.0.0.1", "root")
            assert conf["mysql.database"] == database
            run_service_like_systemd()
            with admin.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM `{database}`.t_user")
                assert cur.fetchone()[0] >= 1
        # Purging never touches a MySQL database.
        with admin.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (database,))
            assert cur.fetchone() is not None
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
