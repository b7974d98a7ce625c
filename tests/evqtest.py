"""Real evqueue daemons in temporary directories, for integration tests."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lxml import etree

from evqueue.client import Client, EvqError

TASKS = Path(__file__).parent / "data" / "tasks"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start_chromium(profile: str, url: str = "about:blank") -> subprocess.Popen[bytes]:
    """Debian's Chromium, headless, on its own profile directory and process group, with a
    DevTools port chosen by the browser (written to ``profile``/DevToolsActivePort)."""
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1366,768", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (held open together while choosing them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Daemon:
    """An ``evqueue`` process on its own state directory (short path: unix sockets are
    limited to 108 bytes)."""

    def __init__(self, root: str, **overrides: str) -> None:
        self.root = root
        self.tcp_port, self.ws_port = free_ports(2)
        self.socket = os.path.join(root, "evq.sock")
        self.config_path = os.path.join(root, "evqueue.conf")
        tasks = os.path.join(root, "tasks")
        if not os.path.isdir(tasks):
            shutil.copytree(TASKS, tasks)
        values = {
            "core.storage": "sqlite",
            "sqlite.path": os.path.join(root, "evqueue.db"),
            "network.bind.ip": "127.0.0.1",
            "network.bind.port": str(self.tcp_port),
            "network.bind.path": self.socket,
            "ws.bind.ip": "127.0.0.1",
            "ws.bind.port": str(self.ws_port),
            "core.pidfile": os.path.join(root, "evqueue.pid"),
            "forker.pidfile": os.path.join(root, "forker.pid"),
            "forker.pipes.directory": root,
            "processmanager.tasks.directory": tasks,
            "processmanager.logs.directory": os.path.join(root, "logs"),
            "processmanager.scripts.directory": os.path.join(root, "scripts"),
            "notifications.tasks.directory": os.path.join(root, "plugins"),
            "notifications.logs.directory": os.path.join(root, "logs"),
            "logger.syslog.enable": "no",
            "cluster.node.name": "localhost",
            "gc.enable": "no",
        }
        values.update(overrides)
        with open(self.config_path, "w") as f:
            for k, v in values.items():
                f.write(f'{k} = "{v}"\n')
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 20.0, extra_args: tuple[str, ...] = ()) -> None:
        self.stderr = open(os.path.join(self.root, "daemon.stderr"), "ab")  # noqa: SIM115
        offset = self.stderr.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evqueue", "--config", self.config_path, *extra_args],
            stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=self.root,
        )
        # wait for the start-up line rather than connecting: a probe connection would show
        # up in the statistics that some tests compare
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log(offset)}")
            if "evqueue core started" in self.log(offset):
                return
            time.sleep(0.02)
        raise RuntimeError(f"daemon did not answer within {timeout} s:\n{self.log()}")

    def log(self, offset: int = 0) -> str:
        """What the daemon wrote on stderr (since ``offset``)."""
        with open(os.path.join(self.root, "daemon.stderr"), errors="replace") as f:
            f.seek(offset)
            return f.read()

    def client(self, user: str = "admin", password: str = "admin") -> Client:
        return Client(self.url, user, password, timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode

    def kill_forker(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(self.root, "forker.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)


def create_workflow(client: Client, name: str, xml: str, queue: str = "default") -> int:
    """Create a workflow from its definition text (``{queue}`` is substituted)."""
    content = base64.b64encode(xml.replace("{queue}", queue).encode()).decode()
    r = client.query(f'<workflow action="create" name="{name}" content="{content}" />')
    return int(r.get("workflow-id"))


def one_task(path: str, *inputs: str, queue: str = "default", extra: str = "") -> str:
    """A workflow with one BINARY task given these command-line inputs."""
    body = "".join(f"<input>{i}</input>" for i in inputs)
    return (f'<workflow><subjobs><job><tasks><task path="{path}" queue="{queue}" {extra}>'
            f"{body}</task></tasks></job></subjobs></workflow>")


def wait_terminated(client: Client, instance_id: int, timeout: float = 30) -> etree._Element:
    """Poll ``instance query`` until the instance is TERMINATED; returns its document."""
    deadline = time.monotonic() + timeout
    while True:
        doc = client.query(f'<instance action="query" id="{instance_id}" />')[0]
        if doc.get("status") == "TERMINATED":
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"instance {instance_id} still {doc.get('status')}")
        time.sleep(0.05)


def wait_task(client: Client, instance_id: int, ready: Callable[[etree._Element], object],
              what: str, timeout: float = 5) -> etree._Element:
    """Poll until the instance's first task is ``ready``; returns it (``what`` names the wait
    in the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.query(f'<instance action="query" id="{instance_id}" />').find(".//task")
        if ready(task):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"instance {instance_id}: task not {what}")
        time.sleep(0.02)


def wait_retrying(client: Client, instance_id: int, timeout: float = 5) -> etree._Element:
    """Poll until the instance's first task waits for a retry (has ``retry_at``); returns it."""
    return wait_task(client, instance_id, lambda t: t.get("retry_at"),
                     "waiting for a retry", timeout)


def wait_executing(client: Client, instance_id: int, timeout: float = 5) -> etree._Element:
    """Poll until the instance's first task runs (EXECUTING, with its tid and pid)."""
    return wait_task(client, instance_id,
                     lambda t: t.get("status") == "EXECUTING" and t.get("pid"),
                     "executing", timeout)


def launch(client: Client, name: str, **parameters: object) -> int:
    """Launch workflow ``name`` with these parameters; returns the instance id."""
    body = "".join(f'<parameter name="{k}" value="{v}"/>' for k, v in parameters.items())
    return int(client.query(f'<instance action="launch" name="{name}">{body}</instance>')
               .get("workflow-instance-id"))


def launch_through_kills(d: Daemon, launch_n: Callable[[Client, int], int],
                         rng: random.Random, *, rounds: int, connections: int,
                         up: tuple[float, float], down: float = 0.0,
                         pace: float = 0.0) -> dict[int, int]:
    """Launch instances numbered 0, 1, ... (``launch_n(client, n)`` returns the id) over
    ``connections`` connections while, ``rounds`` times, the daemon is killed -9 after a
    random time within ``up`` and started again (after up to ``down`` seconds without a
    daemon, so that tasks end meanwhile). Returns id → number of every answered launch."""
    answered: dict[int, int] = {}
    counter = itertools.count()
    lock = threading.Lock()

    def launcher(stop: threading.Event) -> None:
        try:
            with d.client() as c:
                while not stop.is_set():
                    with lock:
                        n = next(counter)
                    answered[launch_n(c, n)] = n
                    if pace:
                        time.sleep(rng.uniform(0, pace))
        except (OSError, EvqError):
            pass  # the daemon was killed under us

    for _ in range(rounds):
        stop = threading.Event()
        threads = [threading.Thread(target=launcher, args=(stop,)) for _ in range(connections)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(*up))
        d.stop(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join()
        if down:
            time.sleep(rng.uniform(0, down))
        d.start()
    return answered


@contextlib.contextmanager
def temporary_daemon(prefix: str = "evq", *, start: bool = True,
                     **overrides: str) -> Iterator[Daemon]:
    """A daemon on a temporary directory (started unless ``start`` is False), stopped with
    its forker and removed afterwards: for benchmarks and scripts outside pytest."""
    root = tempfile.mkdtemp(prefix=prefix)
    d = Daemon(root, **overrides)
    try:
        if start:
            d.start()
        yield d
    finally:
        if d.proc is not None:
            d.stop()
        d.kill_forker()
        shutil.rmtree(root, ignore_errors=True)
