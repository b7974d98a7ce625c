"""RemoteRunner on its own against the real sshd: host key policies, big stdin/stdout through
the pump thread, ``login@host`` targets."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from evqtest import free_ports
from sshtest import Keys, Sshd

from evqueue.process.outputs import output_path
from evqueue.process.remote import RemoteSpec, target_of
from evqueue.process.spawner import ExitRecord
from evqueue.process.ssh import RemoteRunner


class Runners:
    """Makes RemoteRunners writing to one directory and collects their exits."""

    def __init__(self, logs: Path, keys: Keys) -> None:
        self.logs = logs
        self.keys = keys
        self.made: list[RemoteRunner] = []
        self.exits: dict[int, asyncio.Future[ExitRecord]] = {}

    def _exit(self, record: ExitRecord) -> None:
        self._future(record.tid).set_result(record)

    def _future(self, tid: int) -> asyncio.Future[ExitRecord]:
        return self.exits.setdefault(tid, asyncio.get_running_loop().create_future())

    def __call__(self, known_hosts: str = "", accept_unknown: bool = False,
                 key_file: str | None = None, client_config: str = "") -> RemoteRunner:
        """A runner using the test key (``key_file`` None) and known_hosts by default."""
        runner = RemoteRunner(str(self.logs), self._exit,
                              key_file=str(self.keys.client_key) if key_file is None
                              else key_file,
                              known_hosts=known_hosts or str(self.keys.known_hosts),
                              accept_unknown=accept_unknown, client_config=client_config)
        self.made.append(runner)
        return runner

    async def run(self, runner: RemoteRunner, spec: RemoteSpec) -> tuple[ExitRecord, bytes,
                                                                          bytes]:
        """Run ``spec``: its exit record, stdout and stderr."""
        done = self._future(spec.tid)
        await runner.spawn(spec)
        record = await asyncio.wait_for(done, 20)
        out, err = (Path(output_path(str(self.logs), spec.tid, kind)).read_bytes()
                    for kind in ("stdout", "stderr"))
        return record, out, err


@pytest.fixture
async def runners(tmp_path: Path, keys: Keys) -> AsyncIterator[Runners]:
    made = Runners(tmp_path, keys)
    yield made
    for runner in made.made:
        await runner.close()


def test_targets() -> None:
    me = getpass.getuser()
    assert str(target_of("db1", None)) == f"{me}@db1:22"
    assert str(target_of("bob@db1:2222", None)) == "bob@db1:2222"
    assert str(target_of("bob@db1", "alice")) == "alice@db1:22"
    assert str(target_of("[::1]:2200", "u")) == "u@[::1]:2200"
    assert target_of("[::1]:2200", "u").known_hosts_name == "[::1]:2200"
    # what ~/.ssh/config says of an alias; the name's own login and port win
    aliases = {"db": {"hostname": "10.0.0.7", "port": "2222", "user": "svc",
                      "identityfile": ["~/.ssh/db_key"]}}

    def config(name: str) -> dict[str, object]:
        return aliases.get(name, {"hostname": name})

    db = target_of("db", None, config)
    assert (str(db), db.known_hosts_name) == ("svc@10.0.0.7:2222", "[10.0.0.7]:2222")
    assert db.identity_files == (os.path.expanduser("~/.ssh/db_key"),)
    assert str(target_of("bob@db:22", None, config)) == "bob@10.0.0.7:22"
    assert str(target_of("db", "alice", config)) == "alice@10.0.0.7:2222"
    assert str(target_of("other", None, config)) == f"{me}@other:22"


async def test_host_alias_of_the_ssh_client_configuration(runners: Runners, sshd: Sshd,
                                                          keys: Keys, tmp_path: Path) -> None:
    """A task host naming an alias of ``~/.ssh/config`` (here ``processmanager.ssh.config``)
    reaches its HostName and Port as its User, with its IdentityFile: no other key is set."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host build-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                      f"  User {getpass.getuser()}\n  IdentityFile {keys.client_key}\n")
    runner = runners(key_file="", client_config=str(config))
    record, out, err = await runners.run(runner, RemoteSpec(1, "build-box", None,
                                                            ["/bin/echo", "aliased"]))
    assert (record.retval, out, err) == (0, b"aliased\n", b"")
    # an edited file is read again: the alias now points at a closed port
    config.write_text(f"Host build-box\n  HostName 127.0.0.1\n  Port {free_ports(1)[0]}\n")
    record, _, err = await runners.run(runner, RemoteSpec(2, "build-box", None, ["/bin/true"]))
    assert record.retval == -1 and b"cannot connect to" in err


async def test_unknown_host_accepted_on_first_use(runners: Runners, sshd: Sshd,
                                                  tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # its directory does not exist yet
    rejecting = runners(known_hosts=str(known))
    record, _, err = await runners.run(rejecting, RemoteSpec(1, sshd.host, None, ["/bin/true"]))
    assert record.retval == -1 and b"is unknown" in err and not known.exists()
    accepting = runners(known_hosts=str(known), accept_unknown=True)
    record, out, _ = await runners.run(accepting,
                                       RemoteSpec(2, sshd.host, None, ["/bin/echo", "ok"]))
    assert (record.retval, out) == (0, b"ok\n")
    assert known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    # now known: a rejecting runner connects
    record, out, _ = await runners.run(runners(known_hosts=str(known)),
                                       RemoteSpec(3, f"{getpass.getuser()}@{sshd.host}", None,
                                                  ["/bin/echo", "again"]))
    assert (record.retval, out) == (0, b"again\n")


async def test_changed_host_key_is_refused(runners: Runners, sshd: Sshd, tmp_path: Path,
                                           keys: Keys) -> None:
    other = Keys(tmp_path / "other")  # its public key stands in for a changed host key
    kind, blob = other.client_pub.split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    runner = runners(known_hosts=str(known), accept_unknown=True)
    record, _, err = await runners.run(runner, RemoteSpec(1, sshd.host, None, ["/bin/true"]))
    assert record.retval == -1
    assert f"host key of [127.0.0.1]:{sshd.port} does not match known_hosts".encode() in err


async def test_big_stdin_and_stdout(runners: Runners, sshd: Sshd) -> None:
    """Megabytes both ways, more than the SSH window: fed and drained by the pump thread."""
    data = bytes(range(256)) * 12_000  # 3 MB
    spec = RemoteSpec(1, sshd.host, None, ["/bin/sh", "-c", "cat; head -c 5000000 /dev/zero"],
                      stdin=data)
    record, out, err = await runners.run(runners(), spec)
    assert (record.retval, err) == (0, b"")
    assert len(out) == len(data) + 5_000_000
    assert hashlib.sha256(out[:len(data)]).digest() == hashlib.sha256(data).digest()


async def test_script_with_stdin_is_deleted_after(runners: Runners, sshd: Sshd,
                                                  tmp_path: Path) -> None:
    script = b'#!/bin/sh\necho "$0" > ' + str(tmp_path / "path").encode() + b'\ncat; echo "$@"\n'
    spec = RemoteSpec(1, sshd.host, None, ["a b", "c"], script=script, stdin=b"in;")
    record, out, _ = await runners.run(runners(), spec)
    assert (record.retval, out) == (0, b"in;a b c\n")
    assert not Path((tmp_path / "path").read_text().strip()).exists()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def test_connection_lost_while_running(runners: Runners, tmp_path: Path,
                                             keys: Keys) -> None:
    """The connection dies under a running task: it ends with retval -1 and says why."""
    server = Sshd(tmp_path / "sshd", keys)
    pid = 0
    try:
        runner = runners()
        spec = RemoteSpec(1, server.host, None, ["/bin/sleep", "30"])
        done = runners._future(1)
        pid = await runner.spawn(spec)
        assert pid > 0
        for child in _descendants(server.proc.pid):  # the connection's sshd processes
            if Path(f"/proc/{child}/comm").read_text().strip() == "sshd":
                os.kill(child, signal.SIGKILL)
        record = await asyncio.wait_for(done, 20)
        err = Path(output_path(str(tmp_path), 1, "stderr")).read_text()
        assert record.retval == -1
        assert err == f"evqueue: connection to {target_of(server.host, None)} lost before the " \
                      "task ended\n"
    finally:
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the orphaned sleep (this host is the remote)
        server.stop()
