"""The daemon as operators meet it: start, stop, --daemon, PID file, signals, exit codes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from evqtest import create_workflow, free_ports, one_task, wait_retrying, wait_terminated

from evqueue.client import Client

REPO = Path(__file__).resolve().parent.parent
EVQUEUE = [sys.executable, "-m", "evqueue"]
SLOW_ECHO = ('<workflow><subjobs><job><tasks><task path="/bin/sh" queue="default">'
             "<input>-c</input><input>sleep 1.5; echo survived</input></task></tasks></job>"
             "</subjobs></workflow>")


def run(*args: str, cwd: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*EVQUEUE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def test_version_and_usage():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("evQueue version 3.3")
    r = run()
    assert r.returncode == 255 and "--config" in r.stderr


def test_bad_config_names_the_key(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("network.bind.port = abc\n")
    r = run("--config", str(conf))
    assert r.returncode == 255
    assert "network.bind.port" in r.stderr and "abc" in r.stderr
    conf.write_text("no.such.key = 1\n")
    r = run("--config", str(conf))
    assert r.returncode == 255 and "Unknown configuration entry : no.such.key" in r.stderr


def test_foreground_start_and_sigterm(daemon):
    with daemon.client() as c:
        assert c.query("<ping />").get("version") == "3.3"
    pid = int(Path(daemon.root, "evqueue.pid").read_text())
    assert pid == daemon.proc.pid
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.exists(daemon.socket)
    assert not os.path.exists(os.path.join(daemon.root, "evqueue.pid"))
    assert "Clean exit" in daemon.log()


def test_second_daemon_refuses_and_leaves_the_first_alone(daemon, make_daemon):
    r = run("--config", daemon.config_path, cwd=daemon.root)
    assert r.returncode == 255
    assert f"another evqueue daemon (pid {daemon.proc.pid})" in r.stderr
    # another PID file but the same unix socket: refused too, the socket is not stolen
    other = make_daemon(start=False, **{"network.bind.path": daemon.socket})
    r = run("--config", other.config_path, cwd=other.root)
    assert r.returncode == 255
    assert "is in use by another running daemon" in r.stderr
    other.kill_forker()
    with daemon.client() as c:
        assert c.query("<ping />").get("status") == "OK"
    assert Path(daemon.root, "evqueue.pid").read_text().strip() == str(daemon.proc.pid)
    assert daemon.stop() == 0


def test_daemon_mode_detaches_and_reports_failures(make_daemon):
    d = make_daemon(start=False)
    r = run("--daemon", "--config", d.config_path, cwd=d.root)
    assert r.returncode == 0, r.stderr
    pid = int(Path(d.root, "evqueue.pid").read_text())
    try:
        assert os.getsid(pid) != os.getsid(0)  # detached into a session of its own
        with Client(d.url, "admin", "admin") as c:
            assert c.query("<ping />").get("status") == "OK"
        assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null"] * 3
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        d.kill_forker()
    assert not Path(d.root, "evqueue.pid").exists()
    # a start-up failure after detaching is still reported by the foreground process
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d2 = make_daemon(start=False, **{"network.bind.port": str(port)})
        r = run("--daemon", "--config", d2.config_path, cwd=d2.root)
        assert r.returncode == 255
        assert "Unexpected exception in start-up : " in r.stderr
        assert "address already in use" in r.stderr.lower()
        assert not Path(d2.root, "evqueue.pid").exists()
        d2.kill_forker()


def test_sighup_reloads_definitions(daemon):
    db = sqlite3.connect(os.path.join(daemon.root, "evqueue.db"))
    db.execute("INSERT INTO t_queue (queue_name, queue_concurrency, queue_scheduler, "
               "queue_dynamic) VALUES ('from_db', 3, 'fifo', 0)")
    db.commit()
    db.close()
    with daemon.client() as c:
        names = [q.get("name") for q in c.query('<queuepool action="list" />')]
        assert "from_db" not in names
        daemon.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            names = [q.get("name") for q in c.query('<queuepool action="list" />')]
            if "from_db" in names:
                break
            time.sleep(0.05)
        assert "from_db" in names
    assert "Got SIGHUP, reloading configuration" in daemon.log()


def test_sigusr1_retries_now(daemon):
    with daemon.client() as c:
        create_workflow(c, "retry", one_task("/bin/false", extra='retry_delay="100" '
                                             'retry_times="1"'))
        iid = int(c.query('<instance action="launch" name="retry" />')
                  .get("workflow-instance-id"))
        wait_retrying(c, iid)
        daemon.proc.send_signal(signal.SIGUSR1)
        doc = wait_terminated(c, iid, timeout=10)
    task = doc.find(".//task")
    assert len(task.findall("output")) == 2
    assert doc.get("errors") == "1"


def test_sigint_twice_forces_exit(daemon):
    """A graceful shutdown stuck on a locked database is cut short by a second SIGINT."""
    with daemon.client() as c:
        create_workflow(c, "slow", one_task("/bin/sleep", "3"))
        c.query('<instance action="launch" name="slow" />')
    db = sqlite3.connect(os.path.join(daemon.root, "evqueue.db"), isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")  # the shutdown savepoint cannot be written
        daemon.proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            daemon.proc.wait(1)
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(5) == 1
    finally:
        db.close()
    assert "Second SIGINT, forcing exit" in daemon.log()


def test_unreachable_database(make_daemon):
    """Fatal at once (255, the driver's message); ``--wait-db`` waits but can be stopped."""
    closed_port = free_ports(1)[0]
    d = make_daemon(start=False, **{"core.storage": "mysql", "mysql.host": "127.0.0.1",
                                    "mysql.port": str(closed_port)})
    r = run("--config", d.config_path, cwd=d.root)
    assert r.returncode == 255
    assert "Unexpected exception in start-up : Can't connect to MySQL server" in r.stderr
    assert "Traceback" not in r.stderr
    assert not Path(d.root, "evqueue.pid").exists()
    with open(os.path.join(d.root, "daemon.stderr"), "wb") as err:
        proc = subprocess.Popen([*EVQUEUE, "--wait-db", "--config", d.config_path],
                                cwd=d.root, stdout=subprocess.DEVNULL, stderr=err)
    try:
        for _ in range(200):
            if "Database not yet ready, retrying..." in d.log():
                break
            time.sleep(0.05)
        assert "Database not yet ready" in d.log()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 255
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not Path(d.root, "evqueue.pid").exists()
    assert "Shutting down during start-up" in d.log()


def test_control_shutdown(daemon):
    with daemon.client() as c:
        assert c.query('<control action="shutdown" />').get("status") == "OK"
    assert daemon.proc.wait(10) == 0
    assert "Clean exit" in daemon.log()
    assert not os.path.exists(daemon.socket)


def test_running_tasks_survive_sigterm(make_daemon):
    d = make_daemon()
    with d.client() as c:
        create_workflow(c, "slow", SLOW_ECHO)
        iid = int(c.query('<instance action="launch" name="slow" />')
                  .get("workflow-instance-id"))
        for _ in range(100):
            if c.query(f'<instance action="query" id="{iid}" />').find(".//task").get(
                    "status") == "EXECUTING":
                break
            time.sleep(0.05)
    assert d.stop(signal.SIGTERM) == 0
    d.start()
    with d.client() as c:
        doc = wait_terminated(c, iid, timeout=20)
    task = doc.find(".//task")
    assert task.get("retval") == "0"
    assert task.find("output").text == "survived\n"


def test_make_run_layout_answers_ping():
    """``make run``'s configuration, from a copy of the repository layout."""
    root = tempfile.mkdtemp(prefix="evqr")
    try:
        shutil.copytree(REPO / "etc", Path(root, "etc"))
        conf = Path(root, "etc", "evqueue.conf")
        text = conf.read_text()
        for port, new in zip(("5000", "5001"), free_ports(2), strict=True):
            text = text.replace(port, str(new))
        conf.write_text(text)
        proc = subprocess.Popen([*EVQUEUE, "--config", "etc/evqueue.conf"], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            sock = Path(root, "var", "evqueue.sock")
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.05)
            with Client(f"unix://{sock}", "admin", "admin") as c:
                assert c.query("<ping/>").get("status") == "OK"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            _kill_pidfile(Path(root, "var", "forker.pid"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _kill_pidfile(path: Path) -> None:
    try:
        os.kill(int(path.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
