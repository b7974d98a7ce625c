"""The forker: parent of every local task, so that tasks outlive the daemon.

``python -m evqueue.process.forker --socket S --pidfile P --journal J --logs-dir D [--detach]``

One small process per node, in its own session, started by the daemon's Spawner (spawner.py)
or adopted by it. It spawns each task with ``posix_spawn`` in a new session (killing the task's
process group reaches its children; nothing aimed at the daemon reaches tasks), stdout/stderr
going straight to ``<logs>/<tid>.stdout|.stderr`` (never a pipe into the daemon, which would
SIGPIPE tasks when it dies) and fd 3 a pipe the forker parses as the "evqueue log" (``%N``
progress, ``%%`` escape, ``\\close``) into ``<tid>.log``. Exits come from SIGCHLD (one wake-up,
then ``waitpid(-1, WNOHANG)`` until empty: a burst costs one pass), are journaled (journal.py)
and sent to the connected daemon, which acks them once persisted. A daemon's hello gets the
running tasks and a replay of every unacknowledged exit.

The pidfile is flocked for the forker's lifetime: one forker per journal. Tasks that were
running when a previous forker died are orphans whose exit status can never be known: at start
they are killed (process group) and reported as exits with ``lost`` set, so that a retry never
runs alongside them.

The forker exits when asked (``shutdown`` request, SIGTERM or SIGINT: once no task runs), or after
``--idle-timeout`` seconds without tasks and without a daemon; it removes its socket and pidfile.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import logging
import os
import re
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

from evqueue.process.journal import Journal
from evqueue.process.wire import (
    BYE_REPLACED,
    EXIT_ALREADY_RUNNING,
    LineReader,
    WireError,
    encode,
    retval_of,
)

EXEC_ERROR = (
    "Could not execute process: '{path}', execv() got error '{error}'"
    "evq_monitor: Unable to execute command '{path}', execv() returned error\n"
)
CHDIR_ERROR = "evq_monitor: Unable to change working directory to '{path}'\n"
LOST_NOTE = (
    "evqueue forker: the forker supervising this task died; its exit status is unknown "
    "and it was killed\n"
)
LOST_MESSAGE = "task lost: its forker died while it ran (exit status unknown)"

# Dispositions a task must not inherit from the Python forker (ignored signals survive exec).
_SIGDEF = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DUP2 = os.POSIX_SPAWN_DUP2
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
_ATOI = re.compile(rb"\s*([+-]?\d+)")
_FINAL_DRAIN_READS = 64
_RECV_SIZE = 1 << 18
_MAX_BACKLOG = 64 << 20
"""Bytes queued for a daemon that does not read before it is disconnected (exits are safe in
the journal and replayed on its next hello)."""
_OUT = select.EPOLLOUT

log = logging.getLogger("evqueue.forker")


class _Task:
    __slots__ = ("tid", "pid", "start", "log_r", "log_buf", "log_fd", "stdin_w", "stdin_data")

    def __init__(self, tid: int, start: float) -> None:
        self.tid = tid
        self.pid = 0
        self.start = start
        self.log_r = -1
        self.log_buf = b""
        self.log_fd = -1
        self.stdin_w = -1
        self.stdin_data = memoryview(b"")


class _Conn:
    """One client connection; the current daemon is the one that said hello last."""

    __slots__ = ("sock", "fd", "reader", "wbuf", "closed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = LineReader()
        self.wbuf = b""
        self.closed = False


class Forker:
    """The forker's state and its event loop (``run``).

    A plain epoll loop rather than asyncio: per task the forker handles a request, a spawn, a
    log pipe, a SIGCHLD and an exit record, and asyncio's bookkeeping for those (two loop passes
    and an extra self-pipe write per signal, a Handle per callback) cost as much as the spawn.
    Output is written once per loop pass: journal first, then the daemon.
    """

    def __init__(
        self,
        socket_path: str,
        pidfile: str,
        journal_path: str,
        logs_dir: str,
        idle_timeout: float,
    ) -> None:
        self.socket_path = socket_path
        self.pidfile = pidfile
        self.journal_path = journal_path
        self.logs_dir = logs_dir
        self.idle_timeout = idle_timeout
        self.tasks: dict[int, _Task] = {}
        self.by_pid: dict[int, _Task] = {}
        self.conn: _Conn | None = None
        self.base_env: dict[bytes, bytes] = {}
        self.cwd = os.getcwd()
        self.devnull = -1
        self.ready_fd = -1
        self.journal: Journal | None = None
        self._lock_fd = -1
        self._acked_id = 0
        self._out: list[bytes] = []
        self._idle_deadline: float | None = None
        self._shutting_down = False
        self._done = False
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._listener: socket.socket | None = None
        self._signal_r = -1

    # ---- life cycle -------------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the pidfile lock and write our pid; False if another forker holds it."""
        fd = os.open(self.pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def run(self) -> None:
        """Serve until shut down; ``ready_fd`` (a pipe, if set) gets b"0" once listening."""
        self.journal = Journal(self.journal_path)
        try:
            if self.journal.skipped:
                log.warning("journal: %d unreadable line(s) skipped", self.journal.skipped)
            self._recover_orphans()
            self.journal.flush()
            self._listen()
            self._catch_signals()
            self.report_ready(b"0")
            log.info("forker %d listening on %s", os.getpid(), self.socket_path)
            self._check_idle()
            self._loop()
        finally:
            if self._listener is not None:
                _unlink(self.socket_path)
            _unlink(self.pidfile)
            if self.conn is not None:
                self._flush()
                self._close(self.conn, "forker exiting")
            self.journal.close()
            log.info("forker %d exiting", os.getpid())

    def report_ready(self, report: bytes) -> None:
        """Tell the launching process how start-up went (once: the pipe is closed after)."""
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, report)
            except OSError:
                pass
            os.close(self.ready_fd)
            self.ready_fd = -1

    def _listen(self) -> None:
        try:
            if stat.S_ISSOCK(os.stat(self.socket_path).st_mode):
                os.unlink(self.socket_path)  # stale: we hold the lock, nobody else listens
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self._listener = sock
        self._watch(sock.fileno(), self._accept)

    def _catch_signals(self) -> None:
        """SIGCHLD, SIGTERM and SIGINT wake the loop through a pipe (the C handler writes the
        number); SIGHUP is ignored (tasks get it back to default: see _SIGDEF)."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in _STOP_SIGNALS + (signal.SIGCHLD,):
            signal.signal(sig, _ignore_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._signal_r = r
        self._watch(r, self._on_signals)

    def _watch(self, fd: int, handler: Callable[[int], None], mask: int = select.EPOLLIN) -> None:
        self._handlers[fd] = handler
        self._epoll.register(fd, mask)

    def _unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _loop(self) -> None:
        poll, handlers = self._epoll.poll, self._handlers
        while not self._done:
            timeout = -1.0
            if self._idle_deadline is not None:
                timeout = max(0.0, self._idle_deadline - time.monotonic())
            for fd, events in poll(timeout):
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler(events)
                    except Exception:  # a bug must not orphan every task: log, go on
                        log.exception("unexpected error")
            self._flush()
            if self._idle_deadline is not None and time.monotonic() >= self._idle_deadline:
                log.info("idle for %ss with no daemon connected", self.idle_timeout)
                self._done = True

    def request_shutdown(self) -> None:
        """Refuse new tasks and exit as soon as none is running."""
        self._shutting_down = True
        self._check_idle()

    def _check_idle(self) -> None:
        self._idle_deadline = None
        if self.tasks:
            return
        if self._shutting_down:
            self._done = True
        elif self.conn is None:
            self._idle_deadline = time.monotonic() + self.idle_timeout

    def _recover_orphans(self) -> None:
        """Kill the tasks a dead predecessor left behind and report them as lost."""
        assert self.journal is not None
        now = time.time()
        for tid, (pid, start) in list(self.journal.running.items()):
            try:
                # Tasks lead their own session: a pid that does not is not our task any more.
                if os.getsid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                    log.warning("killed orphaned task tid=%d pid=%d", tid, pid)
            except OSError:
                pass
            self._append_stderr(tid, LOST_NOTE)
            self.journal.exited(tid, pid, None, -1, start, now, LOST_MESSAGE)

    # ---- connections ------------------------------------------------------------------------

    def _accept(self, events: int) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        conn = _Conn(sock)
        self._watch(conn.fd, lambda ev: self._on_conn(conn, ev))

    def _on_conn(self, conn: _Conn, events: int) -> None:
        if events & select.EPOLLOUT:
            self._write(conn, b"")
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) or conn.closed:
            return
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, None)
            return
        try:
            msgs = conn.reader.feed(data)
        except WireError as exc:
            self._close(conn, str(exc))
            return
        for msg in msgs:
            if conn.closed:
                break
            try:
                self.handle(conn, msg)
            except Exception:
                log.exception("request %r failed", msg["op"])
                error = {"op": "error", "req": msg["op"], "tid": msg.get("tid")}
                error["message"] = "forker error, see its log"
                self._write(conn, encode(error))

    def _write(self, conn: _Conn, data: bytes) -> None:
        """Send without blocking; what the socket does not take waits for EPOLLOUT."""
        data = conn.wbuf + data if conn.wbuf else data
        try:
            sent = conn.sock.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn, None)
            return
        had_backlog = bool(conn.wbuf)
        conn.wbuf = data[sent:]
        if len(conn.wbuf) > _MAX_BACKLOG:
            log.error("daemon does not read its messages: dropping the connection")
            self._close(conn, None)
        elif bool(conn.wbuf) != had_backlog:
            mask = select.EPOLLIN | (select.EPOLLOUT if conn.wbuf else 0)
            self._epoll.modify(conn.fd, mask)

    def _close(self, conn: _Conn, reason: str | None) -> None:
        """Hang up, saying why when there is a reason (take-over, bad input, exit)."""
        if conn.closed:
            return
        if reason is not None:
            try:
                conn.sock.send(conn.wbuf + encode({"op": "bye", "reason": reason}))
            except OSError:
                pass
        conn.closed = True
        self._unwatch(conn.fd)
        conn.sock.close()
        if conn is self.conn:
            self.conn = None
            self._out.clear()
            self._check_idle()

    def handle(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "hello":
            self._hello(conn, msg)
        elif op == "shutdown":
            self.request_shutdown()
        elif conn is not self.conn:
            self._write(conn, encode({"op": "error", "message": "send hello first"}))
        elif op == "spawn":
            self._spawn(msg)
        elif op == "ack":
            self._ack(msg)
        elif op == "kill":
            self._kill(msg)
        else:
            self._send(encode({"op": "error", "message": f"unknown request {op!r}"}))

    def _hello(self, conn: _Conn, msg: dict[str, Any]) -> None:
        assert self.journal is not None
        env = msg.get("env")
        acks = msg.get("acks", [])
        if not (_is_str_map(env) and isinstance(acks, list)):
            self._write(conn, encode({"op": "error", "message": "bad hello"}))
            return
        if self.conn is not None and self.conn is not conn:
            self._close(self.conn, BYE_REPLACED)
        self._out.clear()
        self.conn = conn
        self._acked_id = 0
        self.base_env = {_fs(k): _fs(v) for k, v in env.items()}
        self.journal.acked([n for n in acks if type(n) is int])
        running = encode([[t.tid, t.pid] for t in self.tasks.values()])[:-1]
        exits = b",".join(line[:-1] for _, line in self.journal.exits.values())
        self._send(
            b'{"op":"hello","pid":%d,"running":%s,"exits":[%s]}\n' % (os.getpid(), running, exits)
        )
        self._check_idle()

    def _ack(self, msg: dict[str, Any]) -> None:
        assert self.journal is not None
        ns, ack_id = msg.get("n"), msg.get("id")
        if isinstance(ns, list):
            self.journal.acked([n for n in ns if type(n) is int])
        if type(ack_id) is int:
            self._acked_id = ack_id

    def _send(self, line: bytes) -> None:
        """Queue for the current daemon (sent at the end of the loop pass)."""
        if self.conn is not None:
            self._out.append(line)

    def _flush(self) -> None:
        """Journal first, then the daemon: an exit it can ack is always on disk."""
        assert self.journal is not None
        try:
            self.journal.flush()
        except OSError as exc:
            log.error("cannot write the journal: %s", exc)
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if self.conn is not None:
                self._write(self.conn, data)

    # ---- spawning ---------------------------------------------------------------------------

    def _spawn(self, msg: dict[str, Any]) -> None:
        assert self.journal is not None
        tid = msg.get("tid")
        if type(tid) is not int or tid < 0:
            self._send(encode({"op": "error", "message": f"bad tid {tid!r}"}))
            return
        error = _check_spawn(msg)
        if error is None and self._shutting_down:
            error = "the forker is shutting down"
        if error is None and (tid in self.tasks or self.journal.busy(tid)):
            error = f"task {tid} is running or has an unacknowledged exit"
        if error is not None:
            self._send(encode({"op": "error", "req": "spawn", "tid": tid, "message": error}))
            return
        argv: list[str] = msg["argv"]
        add_env = msg.get("env")
        env = self.base_env
        if add_env:
            env = {**env, **{_fs(k): _fs(v) for k, v in add_env.items()}}
        stdin: str | None = msg.get("stdin")
        task = _Task(tid, time.time())
        prefix = os.path.join(self.logs_dir, str(tid))
        child_fds: list[int] = []  # the child's ends: closed once it is spawned
        try:
            out = os.open(prefix + ".stdout", _FILE_FLAGS, 0o600)
            child_fds.append(out)
            err = os.open(prefix + ".stderr", _FILE_FLAGS, 0o600)
            child_fds.append(err)
            task.log_r, log_w = os.pipe()
            child_fds.append(log_w)
            stdin_r = self.devnull
            if stdin:
                stdin_r, task.stdin_w = os.pipe()
                child_fds.append(stdin_r)
        except OSError as exc:
            _close_all(child_fds)
            _close_all([fd for fd in (task.log_r, task.stdin_w) if fd >= 0])
            error = f"cannot spawn: {exc}"
            self._send(encode({"op": "error", "req": "spawn", "tid": tid, "message": error}))
            return
        actions = [
            (_DUP2, stdin_r, 0),
            (_DUP2, out, 1),
            (_DUP2, out if msg.get("merge") else err, 2),
            (_DUP2, log_w, 3),
        ]
        task.pid = self._exec(argv, env, msg.get("cwd"), actions, err)
        _close_all(child_fds)
        self._send(b'{"op":"spawned","tid":%d,"pid":%d,"a":%d}\n' % (tid, task.pid, self._acked_id))
        if task.pid == 0:
            _close_all([fd for fd in (task.log_r, task.stdin_w) if fd >= 0])
            self._record_exit(task, None)
            return
        self.tasks[tid] = task
        self.by_pid[task.pid] = task
        self.journal.spawned(tid, task.pid, task.start)
        os.set_blocking(task.log_r, False)
        self._watch(task.log_r, functools.partial(self._on_log, task))
        if stdin:
            os.set_blocking(task.stdin_w, False)
            task.stdin_data = memoryview(_fs(stdin))
            self._feed_stdin(task)

    def _exec(
        self,
        argv: list[str],
        env: dict[bytes, bytes],
        cwd: str | None,
        actions: list[Any],
        err: int,
    ) -> int:
        """posix_spawn in a new session; 0 after writing the reason to the task's stderr.

        posix_spawn cannot chdir (not exposed before Python 3.13), so the forker changes its own
        directory around the call when the task needs another (its sync thread only uses an fd).
        """
        moved = bool(cwd) and cwd != self.cwd
        if moved:
            try:
                os.chdir(cwd)  # type: ignore[arg-type]
            except OSError:
                os.write(err, _fs(CHDIR_ERROR.format(path=cwd)))
                return 0
        try:
            return os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigmask=(),
                setsigdef=_SIGDEF,
            )
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            os.write(err, _fs(EXEC_ERROR.format(path=argv[0], error=reason)))
            return 0
        finally:
            if moved:
                os.chdir(self.cwd)

    def _feed_stdin(self, task: _Task, events: int = 0) -> None:
        """Write stdin data as the task reads it; a task that never reads blocks nothing."""
        try:
            while task.stdin_data:
                task.stdin_data = task.stdin_data[os.write(task.stdin_w, task.stdin_data) :]
        except BlockingIOError:
            if task.stdin_w not in self._handlers:
                self._watch(task.stdin_w, functools.partial(self._feed_stdin, task), _OUT)
            return
        except OSError:
            pass  # the task closed its stdin: it does not want the rest
        self._close_stdin(task)

    def _close_stdin(self, task: _Task) -> None:
        if task.stdin_w >= 0:
            self._unwatch(task.stdin_w)
            os.close(task.stdin_w)
            task.stdin_w = -1

    # ---- the "evqueue log" on fd 3 ----------------------------------------------------------

    def _on_log(self, task: _Task, events: int) -> None:
        try:
            data = os.read(task.log_r, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._log_data(task, data)
        else:
            self._log_eof(task)

    def _log_eof(self, task: _Task) -> None:
        """No more writers (or the task exited): a last line without newline still counts."""
        if task.log_r >= 0 and task.log_buf:
            self._log_data(task, b"", final=True)
        self._close_log(task)

    def _log_data(self, task: _Task, data: bytes, final: bool = False) -> None:
        lines = (task.log_buf + data).split(b"\n")
        task.log_buf = b"" if final else lines.pop()
        if final and not lines[-1]:
            lines.pop()
        keep: list[bytes] = []
        for line in lines:
            if line[:1] == b"%" and line[1:2] != b"%":
                self._progress(task.tid, line[1:])
            elif line == b"\\close":
                self._close_log(task)
                break
            else:
                keep.append(line[1:] if line[:1] == b"%" else line)
        if keep:
            try:
                if task.log_fd < 0:
                    task.log_fd = os.open(
                        os.path.join(self.logs_dir, f"{task.tid}.log"), _FILE_FLAGS, 0o600
                    )
                os.write(task.log_fd, b"\n".join(keep) + b"\n")
            except OSError as exc:
                log.error("tid %d: cannot write its log: %s", task.tid, exc)

    def _progress(self, tid: int, text: bytes) -> None:
        m = _ATOI.match(text)
        pct = min(100, max(0, int(m.group(1)))) if m else 0
        self._send(b'{"op":"progress","tid":%d,"pct":%d}\n' % (tid, pct))

    def _close_log(self, task: _Task) -> None:
        if task.log_r >= 0:
            self._unwatch(task.log_r)
            os.close(task.log_r)
            task.log_r = -1

    def _drain_log(self, task: _Task) -> None:
        """At exit: take what the task left in the pipe, without waiting for its descendants."""
        for _ in range(_FINAL_DRAIN_READS):
            if task.log_r < 0:
                break
            try:
                data = os.read(task.log_r, 65536)
            except OSError:
                data = b""
            if not data:
                break
            self._log_data(task, data)
        self._log_eof(task)
        if task.log_fd >= 0:
            os.close(task.log_fd)
            task.log_fd = -1

    # ---- exits and kills --------------------------------------------------------------------

    def _on_signals(self, events: int) -> None:
        try:
            signums = os.read(self._signal_r, 512)
        except BlockingIOError:
            return
        if any(sig in signums for sig in _STOP_SIGNALS):
            log.info("stop signal: exiting once no task runs")
            self.request_shutdown()
        self._reap()
        self._flush()  # exits first: the daemon's next spawns depend on them

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            task = self.by_pid.pop(pid, None)
            if task is None:
                continue
            del self.tasks[task.tid]
            self._drain_log(task)
            self._close_stdin(task)
            self._record_exit(task, status)
        self._check_idle()

    def _record_exit(self, task: _Task, status: int | None) -> None:
        assert self.journal is not None
        retval = -1 if status is None else retval_of(status)
        line = self.journal.exited(task.tid, task.pid, status, retval, task.start, time.time())
        self._send(line[:-2] + b',"a":%d}\n' % self._acked_id)

    def _kill(self, msg: dict[str, Any]) -> None:
        tid, sig, note = msg.get("tid"), msg.get("sig"), msg.get("note")
        task = self.tasks.get(tid) if type(tid) is int else None
        if type(sig) is not int or sig not in signal.valid_signals() or sig == 0:
            error = f"bad signal {sig!r}"
            self._send(encode({"op": "error", "req": "kill", "tid": tid, "message": error}))
            return
        ok = False
        if task is not None:
            if isinstance(note, str) and note:
                self._append_stderr(task.tid, note)
            try:
                os.killpg(task.pid, sig)
                ok = True
            except OSError:
                pass
        self._send(encode({"op": "killed", "tid": tid, "ok": ok}))

    def _append_stderr(self, tid: int, text: str) -> None:
        try:
            fd = os.open(
                os.path.join(self.logs_dir, f"{tid}.stderr"),
                os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC,
            )
        except OSError:
            return
        try:
            os.write(fd, _fs(text))
        finally:
            os.close(fd)


def _check_spawn(msg: dict[str, Any]) -> str | None:
    """What is wrong with a spawn request, if anything (the forker must never crash on it)."""
    argv = msg.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        return "argv must be a non-empty list of strings"
    if not argv[0]:
        return "empty program path"
    env = msg.get("env")
    if env is not None and not _is_str_map(env):
        return "env must map strings to strings"
    for key in ("cwd", "stdin"):
        if msg.get(key) is not None and not isinstance(msg[key], str):
            return f"{key} must be a string"
    return None


def _fs(text: str) -> bytes:
    """str from the wire (bytes decoded with surrogateescape) back to the original bytes."""
    return text.encode("utf-8", "surrogateescape")


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _reserve_low_fds() -> int:
    """Open /dev/null and keep fds 0-3 occupied for good.

    Every fd a task gets is then >= 4, so a spawn's dup2 onto 0..3 never has equal source and
    target (a case where older libcs keep FD_CLOEXEC set and the task would lose that fd).
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in range(4):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(devnull, fd, inheritable=False)
    return devnull


def _ignore_signal(signum: int, frame: object) -> None:
    """Python-level no-op: the wake-up fd written by the C handler is what the loop sees."""


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evqueue.process.forker", description=__doc__)
    p.add_argument("--socket", required=True, help="unix socket to listen on")
    p.add_argument("--pidfile", required=True, help="pid file (flocked while running)")
    p.add_argument("--journal", required=True, help="exit journal file")
    p.add_argument("--logs-dir", required=True, help="directory of <tid>.stdout|stderr|log")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--log-file", default=None, help="forker diagnostics (default stderr)")
    p.add_argument("--detach", action="store_true", help="fork, return once listening")
    return p.parse_args(argv)


def _serve(args: argparse.Namespace, ready: int) -> int:
    devnull = _reserve_low_fds()
    forker = Forker(args.socket, args.pidfile, args.journal, args.logs_dir, args.idle_timeout)
    forker.devnull = devnull
    forker.ready_fd = ready
    try:
        if not forker.lock():
            msg = f"another forker holds {args.pidfile}"
            forker.report_ready(f"{EXIT_ALREADY_RUNNING}{msg}".encode())
            log.error("%s", msg)
            return EXIT_ALREADY_RUNNING
        forker.run()
    except Exception as exc:
        log.exception("forker failed")
        forker.report_ready(f"1{exc}".encode())
        return 1
    return 0


def _setup_logging(log_file: str | None) -> None:
    """Diagnostics go to ``log_file`` (appended) or stay on stderr."""
    if log_file is not None:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s forker[%(process)d] %(levelname)s %(message)s"
    )


def _detach(args: argparse.Namespace) -> int:
    """Fork the forker into its own session; exit once it listens (status 0) or failed."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        _setup_logging(args.log_file)
        os._exit(_serve(args, w))
    os.close(w)
    report = b""
    while chunk := os.read(r, 4096):
        report += chunk
    if report[:1] == b"0":
        return 0
    if not report:
        print("forker: exited during start-up", file=sys.stderr)
        return 1
    print(f"forker: {report[1:].decode(errors='replace')}", file=sys.stderr)
    return int(report[:1])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.detach:
        return _detach(args)
    _setup_logging(args.log_file)
    return _serve(args, -1)


if __name__ == "__main__":
    sys.exit(main())
