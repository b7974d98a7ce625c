"""A real OpenSSH server on 127.0.0.1 for the remote task tests, with keys made per run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from evqtest import Daemon, free_ports

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def missing() -> str | None:
    """Why the tests cannot run here, or None."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} not found: install Debian's openssh-server (make system-test-deps)"
    if not os.access(SSH_KEYGEN, os.X_OK):
        return "ssh-keygen not found: install openssh-client"
    return None


def keygen(path: Path) -> str:
    """Make an ed25519 key pair at ``path``; returns the public key line."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "evqueue-test",
                    "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


class Keys:
    """The client's key pair and known_hosts file, shared by every test server of a run."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.client_key = root / "client_key"
        self.client_pub = keygen(self.client_key)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.touch()


class Sshd:
    """``sshd -D -e`` on 127.0.0.1 and a free port, accepting ``keys.client_key`` for the
    current user (root: PermitRootLogin prohibit-password); its host key is appended to
    ``keys.known_hosts`` unless ``known`` is false. ``log()`` is what it wrote: one
    "Accepted publickey" line per connection."""

    def __init__(self, root: Path, keys: Keys, max_sessions: int = 30,
                 known: bool = True) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.host = f"127.0.0.1:{self.port}"
        kind, blob = keygen(root / "host_key").split()[:2]
        if known:
            with open(keys.known_hosts, "a") as f:
                f.write(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        (root / "authorized_keys").write_text(keys.client_pub + "\n")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"MaxSessions {max_sessions}\nLogLevel INFO\nPrintMotd no\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
        self.log_path = root / "sshd.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while "Server listening" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connections(self) -> int:
        """Connections accepted so far."""
        return self.log().count("Accepted publickey")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def ssh_daemon(root: Path, keys: Keys, **overrides: str) -> Daemon:
    """A daemon (not started) whose remote tasks use the test key and known_hosts."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {"processmanager.ssh.key": str(keys.client_key),
                "processmanager.ssh.known_hosts": str(keys.known_hosts)}
    return Daemon(str(root), **{**settings, **overrides})


@contextlib.contextmanager
def running_ssh_daemon(root: Path, keys: Keys, wide: int = 50,
                       **overrides: str) -> Iterator[Daemon]:
    """A started :func:`ssh_daemon` with a queue ``wide`` of ``wide`` slots; stopped, with its
    forker, afterwards."""
    d = ssh_daemon(root, keys, **overrides)
    d.start()
    try:
        with d.client() as c:
            c.query(f'<queue action="create" name="wide" concurrency="{wide}" '
                    'scheduler="fifo" dynamic="no" />')
        yield d
    finally:
        d.stop()
        d.kill_forker()
