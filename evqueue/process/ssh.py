"""Runs remote tasks (:mod:`evqueue.process.remote`) over SSH with paramiko.

The original ran ``ssh [user@]host <cmd> '<arg>'…`` from its monitor. Here the daemon speaks SSH
itself, and a remote task ends through the same path as a local one: its stdout/stderr are
written to ``<logs>/<tid>.stdout|.stderr`` as they arrive (``processmanager tail`` works), and an
:class:`ExitRecord` is handed to the runner's ``on_exit`` like the forker's.

* Connections are pooled per (host, port, user): one TCP connection carries one SSH channel per
  running task. When the server refuses another session (OpenSSH ``MaxSessions``, default 10),
  a further connection is opened, up to ``MAX_CONNECTIONS`` per target; idle connections are
  closed after ``IDLE_CLOSE`` seconds; keep-alives every ``KEEPALIVE`` seconds.
* paramiko blocks: connecting, opening channels and kills run in a bounded worker thread pool;
  one pump thread polls every channel, writes outputs to the files and feeds stdin.
* A connection failure is retried (``CONNECT_ATTEMPTS``); authentication and host key failures
  are not. Any failure ends the task with retval -1 and a readable reason in its stderr; the
  task's retry policy then applies.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import paramiko

from evqueue.process.outputs import delete_outputs, output_path
from evqueue.process.remote import RemoteError, RemoteSpec, Target, remote_command, target_of
from evqueue.process.spawner import ExitRecord

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3
"""Connection attempts per task start before it fails (with a growing pause in between)."""
CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 4
"""Connections per (host, port, user), used when the server limits sessions per connection."""
KEEPALIVE = 30
CAP_MEMORY = 2.0
IDLE_CLOSE = 60.0
"""An unused connection is closed after this many seconds."""
ROOM_WAIT = 60.0
"""How long a task start waits for a free session when every connection is full."""
KILL_TIMEOUT = 10.0
WORKERS = 16
"""Threads starting tasks (connecting, opening channels); kills have their own few."""
_CHUNK = 1 << 16


def _retval(chan: paramiko.Channel) -> int:
    """The original's retval: the exit code as a signed char; -1 when there was none (killed
    by a signal, or the connection dropped)."""
    if not chan.exit_status_ready() or chan.exit_status < 0:
        return -1
    code = chan.exit_status & 0xFF
    return code - 256 if code > 127 else code


class _HostKeys(paramiko.MissingHostKeyPolicy):
    """known_hosts checking shared by every connection. Known keys are given to each client
    (so paramiko negotiates that key type and rejects a mismatch); an unknown host is rejected
    (``reject``) or trusted on first use and appended to the known_hosts file (``accept``).
    The files are read again when they change, as ssh reads them at each connection."""

    def __init__(self, path: str, accept: bool) -> None:
        self.accept = accept
        self.path = os.path.expanduser(path or "~/.ssh/known_hosts")
        self.files = [self.path] if path else [self.path, "/etc/ssh/ssh_known_hosts"]
        self.keys = paramiko.HostKeys()
        self.lock = threading.Lock()
        self.stamps: list[int | None] = []

    def _load(self) -> None:
        stamps = [_mtime(file) for file in self.files]
        if stamps == self.stamps:
            return
        self.stamps = stamps
        self.keys = paramiko.HostKeys()
        for file, stamp in zip(reversed(self.files), reversed(stamps), strict=True):
            if stamp is None:
                continue
            try:
                self.keys.load(file)
            except (OSError, paramiko.SSHException) as e:
                log.error("Cannot read known hosts file %s: %s", file, e)

    def prime(self, client: paramiko.SSHClient, name: str) -> None:
        with self.lock:
            self._load()
            known = self.keys.lookup(name)
            for keytype, key in (known or {}).items():
                client.get_host_keys().add(name, keytype, key)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if not self.accept:
            raise RemoteError(
                f"host key of {hostname} is unknown (not in {' or '.join(self.files)}); add it "
                "there, or set processmanager.ssh.unknown_hosts = accept")
        with self.lock:
            if self.keys.lookup(hostname) is None:
                self.keys.add(hostname, key.get_name(), key)
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                with open(self.path, "a") as f:
                    f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
                log.warning("Accepted new host key of %s (%s)", hostname, _fingerprint(key))


class _ClientConfig:
    """The OpenSSH client configuration (``~/.ssh/config``): the original ran ``ssh``, so
    host aliases with their ``HostName``, ``Port``, ``User`` and ``IdentityFile`` work for
    remote tasks. Read again when the file changes, as ssh reads it at each connection."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path or "~/.ssh/config")
        self.stamp: int | None = None
        self.config = paramiko.SSHConfig()

    def lookup(self, host: str) -> dict[str, Any]:
        stamp = _mtime(self.path)
        if stamp != self.stamp:
            self.stamp = stamp
            self.config = paramiko.SSHConfig()
            if stamp is not None:
                try:
                    self.config = paramiko.SSHConfig.from_path(self.path)
                except (OSError, UnicodeDecodeError, paramiko.ConfigParseError) as e:
                    log.error("Cannot read SSH client configuration %s: %s", self.path, e)
        return dict(self.config.lookup(host))


class _Conn:
    """One SSH connection and the number of channels it carries. ``cap`` is learnt when the
    server refuses one more; it is only trusted for CAP_MEMORY seconds, since a server frees
    the sessions of closed channels a little after we see them close."""

    def __init__(self, target: Target, client: paramiko.SSHClient) -> None:
        self.target = target
        self.client = client
        self.transport = client.get_transport()
        self.channels = 0
        self.cap: int | None = None
        self.capped_at = 0.0
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return self.transport is not None and self.transport.is_active()

    def has_room(self) -> bool:
        return self.alive() and (self.cap is None or self.channels < self.cap
                                 or time.monotonic() - self.capped_at > CAP_MEMORY)


class _Pool:
    """Connections per target, shared by the worker threads."""

    def __init__(self, key_file: str, host_keys: _HostKeys) -> None:
        self.key_file = key_file
        self.host_keys = host_keys
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.conns: dict[Target, list[_Conn]] = {}
        self.connecting: dict[Target, threading.Lock] = {}
        self.failed: dict[Target, tuple[float, str]] = {}
        self.closed = False

    def open_channel(
        self, target: Target, start: Callable[[paramiko.Channel], None], *,
        urgent: bool = False,
    ) -> tuple[_Conn, paramiko.Channel]:
        """A session channel to ``target`` on which ``start`` (the exec request) succeeded,
        on a pooled connection with room. A server refusing a session (OpenSSH MaxSessions:
        the open fails, or under concurrency the exec) caps that connection and the next one
        is tried. When every allowed connection is full this waits up to ROOM_WAIT seconds
        for a channel to close; ``urgent`` requests (kills) open a connection instead."""
        deadline = time.monotonic() + ROOM_WAIT
        for _ in range(2 * MAX_CONNECTIONS + 2):
            conn = self._reserve(target, urgent, deadline)
            chan = None
            try:
                chan = conn.transport.open_session(timeout=CONNECT_TIMEOUT)
                start(chan)
                return conn, chan
            except RemoteError:
                if chan is not None:
                    chan.close()
                self.release(conn)
                raise
            except (paramiko.SSHException, OSError, EOFError) as e:
                if chan is not None:
                    chan.close()
                with self.lock:
                    conn.channels -= 1
                    if not conn.alive():
                        self._drop(conn)
                        continue
                    if conn.channels == 0:  # refused even alone: not a matter of room
                        raise RemoteError(f"{target} refused a session: {e}") from None
                    conn.cap = conn.channels
                    conn.capped_at = time.monotonic()
        raise RemoteError(f"{target} keeps refusing sessions")

    def release(self, conn: _Conn) -> None:
        with self.lock:
            conn.channels -= 1
            if conn.channels == 0:
                conn.idle_since = time.monotonic()
            self.room.notify_all()

    def _reserve(self, target: Target, urgent: bool, deadline: float) -> _Conn:
        asked = time.monotonic()
        with self.lock:
            gate = self.connecting.setdefault(target, threading.Lock())
            while True:
                if self.closed:
                    raise RemoteError("the engine is stopping")
                conn = self._with_room(target)
                if conn is not None:
                    return conn
                if urgent or len(self.conns.get(target, ())) < MAX_CONNECTIONS:
                    break
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise RemoteError(f"no free session on the {MAX_CONNECTIONS} connections "
                                      f"to {target} after {ROOM_WAIT:g} s")
                self.room.wait(wait)
        with gate:  # one connection attempt per target at a time: the others reuse it
            with self.lock:
                conn = self._with_room(target)
                if conn is not None:
                    return conn
                failed = self.failed.get(target)
                if failed is not None and failed[0] >= asked:  # it failed while we waited
                    raise RemoteError(failed[1])
            try:
                client = self._connect(target)
            except RemoteError as e:
                with self.lock:
                    self.failed[target] = (time.monotonic(), str(e))
                raise
            with self.lock:
                self.failed.pop(target, None)
                conn = _Conn(target, client)
                conn.channels = 1
                self.conns.setdefault(target, []).append(conn)
                return conn

    def _with_room(self, target: Target) -> _Conn | None:
        for conn in list(self.conns.get(target, ())):
            if not conn.alive():
                self._drop(conn)
            elif conn.has_room():
                conn.channels += 1
                return conn
        return None

    def _drop(self, conn: _Conn) -> None:
        conns = self.conns.get(conn.target, [])
        if conn in conns:
            conns.remove(conn)
        conn.client.close()

    def _connect(self, target: Target) -> paramiko.SSHClient:
        """Connect and authenticate, retrying network failures only."""
        pkey = None
        if self.key_file:
            try:
                pkey = _load_key(self.key_file)
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise RemoteError(f"cannot load key {self.key_file}: {e}") from None
        error = ""
        for attempt in range(CONNECT_ATTEMPTS):
            if attempt:
                time.sleep(0.25 * 2 ** attempt)
            if self.closed:
                raise RemoteError("the engine is stopping")
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(self.host_keys)
            self.host_keys.prime(client, target.known_hosts_name)
            try:
                sock = socket.create_connection((target.host, target.port), CONNECT_TIMEOUT)
                # small packets (channel opens, exec requests) must not wait for delayed ACKs
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.connect(
                    target.host, target.port, target.user, sock=sock, pkey=pkey,
                    key_filename=None if pkey else list(target.identity_files) or None,
                    allow_agent=not self.key_file,
                    look_for_keys=not self.key_file, timeout=CONNECT_TIMEOUT,
                    banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT)
            except RemoteError:
                client.close()
                raise
            except paramiko.BadHostKeyException as e:
                client.close()
                raise RemoteError(
                    f"host key of {target.known_hosts_name} does not match known_hosts "
                    f"(got {_fingerprint(e.key)}): refusing to connect"
                ) from None
            except paramiko.AuthenticationException as e:
                client.close()
                how = (f"key {self.key_file}" if self.key_file
                       else f"IdentityFile {', '.join(target.identity_files)} and agent"
                       if target.identity_files else "agent and ~/.ssh keys")
                raise RemoteError(f"authentication failed for {target} ({how}): {e}") from None
            except (OSError, EOFError, paramiko.SSHException) as e:
                client.close()
                if str(e).startswith("No authentication methods"):
                    raise RemoteError(f"authentication failed for {target}: no key in the "
                                      "agent or ~/.ssh (set processmanager.ssh.key)") from None
                error = f"cannot connect to {target}: {_reason(e)}"
                if isinstance(e, socket.gaierror) and e.errno == socket.EAI_NONAME:
                    break  # an unknown name stays unknown
                continue
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(KEEPALIVE)
            log.info("SSH connection to %s opened", target)
            return client
        tries = attempt + 1
        raise RemoteError(f"{error} ({tries} attempt{'s' if tries > 1 else ''})")

    def reap(self) -> None:
        """Close connections idle for IDLE_CLOSE seconds."""
        limit = time.monotonic() - IDLE_CLOSE
        with self.lock:
            for conns in self.conns.values():
                for conn in list(conns):
                    if conn.channels == 0 and conn.idle_since < limit:
                        log.info("SSH connection to %s closed (idle)", conn.target)
                        self._drop(conn)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.room.notify_all()
            for conns in self.conns.values():
                for conn in list(conns):
                    self._drop(conn)


class _Run:
    """A remote task between its start and its exit (shared by the threads under the
    RemoteRunner's lock, except the files and channel, owned by one thread at a time)."""

    def __init__(self, spec: RemoteSpec, target: Target) -> None:
        self.spec = spec
        self.target = target
        self.start = time.time()
        self.pid = 0
        self.script_path = ""
        self.head: bytearray | None = bytearray()  # the first stdout line, until complete
        self.conn: _Conn | None = None
        self.chan: paramiko.Channel | None = None
        self.stdin = b""
        self.sent = 0
        self.out: IO[bytes] | None = None
        self.err: IO[bytes] | None = None
        self.note: str | None = None
        self.kill_wanted = False
        self.kill_sent = False


def _not_refusal(record: logging.LogRecord) -> bool:
    """paramiko logs every refused channel as an error; the pool handles them (MaxSessions)."""
    return "open FAILED" not in record.getMessage()


class RemoteRunner:
    """Runs RemoteSpecs; exits go to ``on_exit`` on the event loop. Thread-safe where it says."""

    def __init__(
        self, logs_dir: str, on_exit: Callable[[ExitRecord], object], *, key_file: str = "",
        known_hosts: str = "", accept_unknown: bool = False, delete_scripts: bool = True,
        delete_logs: bool = True, client_config: str = "",
    ) -> None:
        self.logs_dir = os.path.abspath(logs_dir)
        self.on_exit = on_exit
        self.delete_scripts = delete_scripts
        self.delete_logs = delete_logs
        self.pool = _Pool(os.path.expanduser(key_file), _HostKeys(known_hosts, accept_unknown))
        self.client_config = _ClientConfig(client_config)
        self._loop = asyncio.get_running_loop()
        self._workers = concurrent.futures.ThreadPoolExecutor(WORKERS, "evq-ssh")
        self._killers = concurrent.futures.ThreadPoolExecutor(4, "evq-ssh-kill")
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}  # started, exit not yet delivered
        self._active: dict[int, _Run] = {}  # pumped by the pump thread
        self._pids: dict[int, asyncio.Future[int]] = {}
        self._unacked: set[int] = set()
        self._closed = False
        # objects, not fds: a late write after close() fails instead of hitting a reused fd
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        logging.getLogger("paramiko.transport").addFilter(_not_refusal)
        self._pump = threading.Thread(target=self._pump_loop, name="evq-ssh-pump", daemon=True)
        self._pump.start()

    # -- loop side -----------------------------------------------------------------------
    async def spawn(self, spec: RemoteSpec) -> int:
        """Start a remote task; returns its remote pid (0: it could not be started, its exit
        with retval -1 and the reason in stderr follows)."""
        run = _Run(spec, target_of(spec.host, spec.user, self.client_config.lookup))
        fut: asyncio.Future[int] = self._loop.create_future()
        self._pids[spec.tid] = fut
        with self._lock:
            self._runs[spec.tid] = run
        self._workers.submit(self._start, run)
        return await fut

    def handles(self, tid: int) -> bool:
        """``tid`` is a remote task running now."""
        return tid in self._runs

    def ack(self, tid: int) -> bool:
        """The engine saved the exit of ``tid``; True if it was a remote task's."""
        if tid in self._unacked:
            self._unacked.discard(tid)
            return True
        return False

    async def kill(self, tid: int, note: str | None = None) -> bool:
        """SIGKILL the task's remote process group; ``note`` ends its stderr."""
        with self._lock:
            run = self._runs.get(tid)
            if run is None:
                return False
            if run.note is None:
                run.note = note
            run.kill_wanted = True
            send = run.pid != 0 and not run.kill_sent
            run.kill_sent |= send
        if send:
            await self._loop.run_in_executor(self._killers, self._kill_remote, run)
        return True

    async def close(self) -> None:
        """Shutdown: kill the remote tasks still running (their exit could not be reported
        any more; the next start retries them), then close every connection."""
        with self._lock:
            runs = list(self._runs.values())
            for run in runs:
                run.kill_wanted = run.kill_sent = True
        kills = [self._loop.run_in_executor(self._killers, self._kill_remote, run)
                 for run in runs if run.pid]
        if kills:
            await asyncio.wait(kills, timeout=KILL_TIMEOUT)
        self._closed = True
        self._wake()
        await asyncio.to_thread(self._pump.join, KILL_TIMEOUT)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._killers.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.pool.close)
        if self.delete_logs:
            for run in runs:
                delete_outputs(self.logs_dir, run.spec.tid)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        """Make the pump thread look at the channels again."""
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):  # already pending, or closed
            pass

    def _started(self, tid: int, pid: int) -> None:
        fut = self._pids.pop(tid, None)
        if fut is not None and not fut.done():
            fut.set_result(pid)

    def _ended(self, record: ExitRecord) -> None:
        self._started(record.tid, 0)
        self._unacked.add(record.tid)
        # after the spawn's awaiting coroutine resumed (its wake-up is queued already)
        self._loop.call_soon(self.on_exit, record)

    # -- worker threads ------------------------------------------------------------------
    def _start(self, run: _Run) -> None:
        spec = run.spec
        try:
            run.out = open(output_path(self.logs_dir, spec.tid, "stdout"), "wb")  # noqa: SIM115
            run.err = open(output_path(self.logs_dir, spec.tid, "stderr"), "wb")  # noqa: SIM115
        except OSError as e:
            log.error("Remote task %s: cannot create its output files: %s", spec.tid, e)
            self._finish(run, -1, f"evqueue: cannot create output files: {e}\n")
            return
        command = remote_command(spec, self.delete_scripts)

        def exec_task(chan: paramiko.Channel) -> None:
            with self._lock:
                if run.kill_wanted:
                    raise RemoteError("killed before it started")
            chan.set_combine_stderr(spec.merge_stderr)
            chan.exec_command(command)

        try:
            run.conn, chan = self.pool.open_channel(run.target, exec_task)
        except RemoteError as e:
            with self._lock:
                killed = run.kill_wanted
            if not killed:
                log.warning("Remote task %s: %s", spec.tid, e)
            self._finish(run, -1, "" if killed else f"evqueue: remote task on {run.target}: {e}\n")
            return
        run.chan = chan
        run.stdin = (spec.script or b"") + spec.stdin
        if not run.stdin:
            chan.shutdown_write()
        with self._lock:
            self._active[spec.tid] = run
        self._wake()

    def _kill_remote(self, run: _Run) -> None:
        """SIGKILL the remote process group of ``run`` (and delete its script)."""
        pgid = run.pid
        command = f"kill -KILL -- -{pgid} 2>/dev/null || kill -KILL {pgid}"
        if run.script_path:
            command += f"; rm -f -- {shlex.quote(run.script_path)}"
        try:
            conn, chan = self.pool.open_channel(run.target, lambda chan: chan.exec_command(
                command), urgent=True)
        except RemoteError as e:
            log.error("Cannot kill remote task %s (pid %s on %s): %s", run.spec.tid, pgid,
                      run.target, e)
            return
        try:
            chan.settimeout(KILL_TIMEOUT)
            chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.error("Cannot kill remote task %s (pid %s on %s): %s", run.spec.tid, pgid,
                      run.target, e)
        finally:
            chan.close()
            self.pool.release(conn)

    # -- pump thread ---------------------------------------------------------------------
    def _pump_loop(self) -> None:
        last_reap = time.monotonic()
        while not self._closed:
            with self._lock:
                runs = list(self._active.values())
            feeding = any(run.sent < len(run.stdin) for run in runs)
            poller = select.poll()  # not select(): fds may be above FD_SETSIZE
            poller.register(self._wake_r.fileno(), select.POLLIN)
            for run in runs:
                assert run.chan is not None
                poller.register(run.chan.fileno(), select.POLLIN)
            poller.poll(20 if feeding else 1000)
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
            for run in runs:
                try:
                    self._service(run)
                except Exception:
                    log.exception("Remote task %s: I/O error", run.spec.tid)
                    self._end_channel(run, "evqueue: remote task: I/O error, see engine logs\n")
            if time.monotonic() - last_reap > 1.0:
                last_reap = time.monotonic()
                self.pool.reap()

    def _service(self, run: _Run) -> None:
        chan = run.chan
        assert chan is not None and run.out is not None and run.err is not None
        while chan.recv_ready():
            data = chan.recv(_CHUNK)
            if not data:
                break
            self._stdout(run, data)
        while chan.recv_stderr_ready():
            run.err.write(chan.recv_stderr(_CHUNK))
        if run.sent < len(run.stdin) and not chan.closed and chan.send_ready():
            try:
                run.sent += chan.send(run.stdin[run.sent:run.sent + _CHUNK])
            except (OSError, EOFError, paramiko.SSHException):
                run.sent = len(run.stdin)  # the task ended without reading it all
            if run.sent >= len(run.stdin):
                run.stdin = b""
                run.sent = 0
                chan.shutdown_write()
        run.out.flush()
        run.err.flush()
        if chan.recv_ready() or chan.recv_stderr_ready():
            return
        assert run.conn is not None
        if chan.closed or (chan.eof_received and chan.exit_status_ready()) or (
                not run.conn.alive()):
            self._end_channel(run)

    def _stdout(self, run: _Run, data: bytes) -> None:
        """Task output; the first line is the wrapper's ``pgid [script path]``."""
        assert run.out is not None
        if run.head is None:
            run.out.write(data)
            return
        run.head += data
        line, newline, rest = run.head.partition(b"\n")
        if not newline:
            return
        run.head = None
        words = line.decode("utf-8", "replace").split(" ", 1)
        if not words[0].isdigit():  # not our line (a chatty login shell?): keep it all
            run.out.write(line + newline + rest)
            return
        run.out.write(rest)
        with self._lock:
            run.pid = int(words[0])
            run.script_path = words[1] if len(words) > 1 else ""
            send = run.kill_wanted and not run.kill_sent
            run.kill_sent |= send
        self._loop.call_soon_threadsafe(self._started, run.spec.tid, run.pid)
        if send:
            self._killers.submit(self._kill_remote, run)

    def _end_channel(self, run: _Run, note: str = "") -> None:
        chan, conn = run.chan, run.conn
        assert chan is not None and conn is not None
        retval = _retval(chan)
        if chan.exit_status < 0 and not conn.alive() and not note:  # closed, no exit status
            note = f"evqueue: connection to {run.target} lost before the task ended\n"
        if run.head:  # output without a newline, never parsed as our first line
            assert run.out is not None
            run.out.write(run.head)
        chan.close()
        self.pool.release(conn)
        with self._lock:
            self._active.pop(run.spec.tid, None)
        self._finish(run, retval, note)

    def _finish(self, run: _Run, retval: int, note: str) -> None:
        with self._lock:
            self._runs.pop(run.spec.tid, None)
            note += run.note or ""
        for f in (run.out, run.err):
            if f is None:
                continue
            if f is run.err and note:
                f.write(note.encode())
            f.close()
        record = ExitRecord(run.spec.tid, run.pid, retval, None, run.start, time.time(),
                            None, 0)
        if not self._closed:
            try:
                self._loop.call_soon_threadsafe(self._ended, record)
            except RuntimeError:  # the loop is closed: the daemon has stopped
                pass


def _load_key(path: str) -> paramiko.PKey:
    """A private key file of any type paramiko 2.12 and later read (no ``PKey.from_path``
    before 3.2)."""
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except paramiko.PasswordRequiredException:
            raise
        except paramiko.SSHException:
            continue
    raise paramiko.SSHException("not an unencrypted ed25519, ecdsa or rsa private key")


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` form (``PKey.fingerprint`` only exists from paramiko 3.2)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"{key.get_name()} SHA256:{digest.rstrip('=')}"


def _reason(e: BaseException) -> str:
    """An error's text: the system's message for socket errors."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None

