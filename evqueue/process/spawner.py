"""Daemon side of local task execution: the asyncio client of the forker (forker.py).

``Spawner.start`` adopts the node's forker (its socket answers) or launches one, then says hello:
the forker answers with the tasks still running and replays every exit not yet acknowledged
(ops.md §1.5: tasks survive daemon restarts). From then on:

* ``await spawn(TaskSpec) -> pid``; the exit arrives later through ``on_exit(ExitRecord)``, which
  is never called before the ``spawn`` awaiting that tid has resumed. pid 0 means the program
  could not be started: its exit (retval -1, reason in stderr) follows.
* the engine persists the exit, then calls ``ack(tid)``; until then the exit is replayed to any
  later connection, and the tid cannot be spawned again (the forker refuses: "busy"). Exits for
  tids the engine does not know must be acked too. An exit is delivered once per Spawner, even
  across reconnections; a new daemon may receive an exit its predecessor had not acked yet, so
  the engine should check ``pid`` against the task's pid.
* if the forker dies, the connection drops: the Spawner launches a new forker, which kills the
  orphaned tasks and reports them as exits with ``lost`` set; pending spawns and kills are sent
  again (a spawn the dead forker had performed is resolved from the replay, never run twice).

Messages are batched: everything queued during one loop iteration leaves in one write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from evqueue.process import outputs
from evqueue.process.outputs import TaskOutputs
from evqueue.process.wire import (
    BYE_REPLACED,
    EXIT_ALREADY_RUNNING,
    LineReader,
    WireError,
    encode,
)

TASK_ENV = {"EVQUEUE_ENV": "true", "EVQUEUE_IPC_QID": "0"}
"""Added to every task's environment, as the original does (workflow.md §4.9.4)."""

KILLTASK_NOTE = "evq_monitor : received SIGTERM, killing task...\n"
"""What the original's monitor writes to the task's stderr on ``killtask`` (workflow.md §4.14)."""

INLINE_READ_MAX = 256 * 1024
"""Outputs up to this size are read on the loop; bigger ones in a worker thread."""

_CONNECT_ATTEMPTS = 6
_HELLO_TIMEOUT = 10.0
_LAUNCH_TIMEOUT = 30.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

log = logging.getLogger(__name__)


class SpawnError(Exception):
    """A spawn was refused (bad request, busy tid) or the forker cannot be reached/started."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One local task execution.

    ``argv[0]`` is the program, executed without PATH search (execv semantics, relative to
    ``cwd``). ``env`` is added to the daemon's start-up environment and TASK_ENV. ``cwd``
    defaults to the Spawner's ``cwd``; a relative one is taken relative to it. ``stdin`` is fed
    through a pipe (none: the task reads /dev/null). ``merge_stderr`` sends the task's stderr
    into its stdout file (the intended ``2>&1`` of merge-stderr, workflow.md §6.3).
    """

    tid: int
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stdin: bytes | str | None = None
    merge_stderr: bool = False


class ExitRecord(NamedTuple):
    """A task's end as seen by the forker. ``retval`` follows the original (signed char exit
    code, -1 when killed by a signal or not started); ``status`` is the raw wait status (None
    when unknown); times are epoch seconds; ``lost`` explains a task whose real exit cannot be
    known (its forker died); ``seq`` is the forker's number for this exit. (A NamedTuple: one
    is built per task, and that is cheaper than a frozen dataclass.)"""

    tid: int
    pid: int
    retval: int
    status: int | None
    start: float
    end: float
    lost: str | None
    seq: int


ExitCallback = Callable[[ExitRecord], object]
ProgressCallback = Callable[[int, int], object]


class _Client(asyncio.Protocol):
    def __init__(self, spawner: Spawner) -> None:
        self.spawner = spawner
        self.reader = LineReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a unix stream transport (uvloop's is not an asyncio.Transport subclass)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self.reader.feed(data)
        except WireError as exc:
            log.error("forker sent garbage (%s): reconnecting", exc)
            assert self.transport is not None
            self.transport.abort()
            return
        for msg in msgs:
            self.spawner._handle(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.spawner._lost(self)


class Spawner:
    """Client of the node's forker. Create with ``await Spawner.start(...)``."""

    def __init__(
        self,
        run_dir: str,
        logs_dir: str,
        on_exit: ExitCallback,
        on_progress: ProgressCallback | None,
        pidfile: str | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
        idle_timeout: float,
        delete_logs: bool,
    ) -> None:
        self.logs_dir = os.path.abspath(logs_dir)
        self.socket_path = os.path.join(run_dir, "forker.sock")
        self.pidfile = pidfile or os.path.join(run_dir, "forker.pid")
        self.journal_path = os.path.join(run_dir, "forker.journal")
        self.forker_log = os.path.join(run_dir, "forker.log")
        if len(os.fsencode(self.socket_path)) > 107:
            raise SpawnError(f"socket path too long for a unix socket: {self.socket_path}")
        self.on_exit = on_exit
        self.on_progress = on_progress
        self.idle_timeout = idle_timeout
        self.delete_logs = delete_logs
        self.forker_pid = 0
        self._cwd = os.path.abspath(cwd or os.getcwd())
        self._env = {**(os.environ if env is None else env), **TASK_ENV}
        self._loop = asyncio.get_running_loop()
        self._client: _Client | None = None
        self._ready = False
        self._closed = False
        self._connecting = False
        self._launch_note = "none could be started"
        self._backoff = 0.05
        self._reconnecting: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._running: dict[int, int] = {}
        self._unacked: dict[int, int] = {}
        self._spawns: dict[int, tuple[bytes, asyncio.Future[int]]] = {}
        self._kills: dict[int, list[tuple[bytes, asyncio.Future[bool]]]] = {}
        self._ack_batch: list[int] = []
        self._acks_unconfirmed: dict[int, list[int]] = {}
        self._ack_id = 0

    @classmethod
    async def start(
        cls,
        run_dir: str,
        logs_dir: str,
        *,
        on_exit: ExitCallback,
        on_progress: ProgressCallback | None = None,
        pidfile: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        idle_timeout: float = 60.0,
        delete_logs: bool = True,
    ) -> Spawner:
        """Adopt or launch the forker of ``run_dir`` and connect to it.

        ``env`` (default: ``os.environ`` now) is the environment tasks inherit; ``cwd``
        (default: the current directory) is their default working directory. Replayed exits
        are delivered to ``on_exit`` right after this returns. Raises SpawnError if no forker
        can be reached.
        """
        self = cls(
            run_dir,
            logs_dir,
            on_exit,
            on_progress,
            pidfile,
            env,
            cwd,
            idle_timeout,
            delete_logs,
        )
        await self._connect()
        return self

    # ---- public interface -------------------------------------------------------------------

    async def spawn(self, spec: TaskSpec) -> int:
        """Start a task; returns its pid (0: could not be started, see ExitRecord)."""
        if self._closed:
            raise SpawnError("spawner closed")
        if spec.tid in self._spawns:
            raise SpawnError(f"task {spec.tid} is already being spawned")
        msg: dict[str, Any] = {
            "op": "spawn",
            "tid": spec.tid,
            "argv": list(spec.argv),
            "cwd": os.path.join(self._cwd, spec.cwd) if spec.cwd else self._cwd,
        }
        if spec.env:
            msg["env"] = dict(spec.env)
        if spec.stdin:
            stdin = spec.stdin
            msg["stdin"] = (
                stdin.decode("utf-8", "surrogateescape") if isinstance(stdin, bytes) else stdin
            )
        if spec.merge_stderr:
            msg["merge"] = 1
        line = encode(msg)
        fut: asyncio.Future[int] = self._loop.create_future()
        self._spawns[spec.tid] = (line, fut)
        if self._ready:
            self._queue(line)
        return await fut

    async def kill(self, tid: int, sig: int = signal.SIGKILL, note: str | None = None) -> bool:
        """Signal the task's whole process group; ``note`` is appended to its stderr first
        (KILLTASK_NOTE reproduces ``killtask``). False if the task is not running."""
        if self._closed:
            raise SpawnError("spawner closed")
        sig = signal.Signals(sig)
        msg: dict[str, Any] = {"op": "kill", "tid": tid, "sig": int(sig)}
        if note:
            msg["note"] = note
        line = encode(msg)
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._kills.setdefault(tid, []).append((line, fut))
        if self._ready:
            self._queue(line)
        return await fut

    def ack(self, tid: int) -> None:
        """The engine has persisted this task's exit: the forker may forget it."""
        n = self._unacked.pop(tid, None)
        if n is None:
            return
        self._ack_batch.append(n)
        if self._ready:
            self._schedule_flush()

    @property
    def closed(self) -> bool:
        """True once closed, or once another daemon took the forker over."""
        return self._closed

    def running(self) -> dict[int, int]:
        """tid -> pid of the tasks the forker runs for us (as of the last message)."""
        return dict(self._running)

    def knows(self, tid: int) -> bool:
        """True if tid is running or its exit was delivered and not acked. After start, an
        EXECUTING task the engine restored that the Spawner does not know is lost."""
        return tid in self._running or tid in self._unacked

    async def read_outputs(
        self, tid: int, max_size: int, delete: bool | None = None
    ) -> TaskOutputs:
        """The task's stdout/stderr/log, each cut at ``max_size`` (datastore.db.maxsize) with
        ``...TRUNCATED...``; the files are deleted afterwards unless ``delete`` is False
        (default: processmanager.logs.delete given at start). Big files are read in a thread."""
        delete = self.delete_logs if delete is None else delete
        max_size = max(0, max_size)
        opened = outputs.open_outputs(self.logs_dir, tid)
        if opened.size <= INLINE_READ_MAX:
            return outputs.read_outputs(opened, max_size, delete)
        return await asyncio.to_thread(outputs.read_outputs, opened, max_size, delete)

    def tail(self, tid: int, kind: str, size: int) -> bytes:
        """Last ``size`` bytes of a running task's ``stdout``/``stderr``/``log`` (see outputs)."""
        return outputs.tail(self.logs_dir, tid, kind, size)

    async def close(self) -> None:
        """Disconnect; the forker keeps the tasks running and journals their exits."""
        self._shut(SpawnError("spawner closed"))
        if self._client is not None and self._client.transport is not None:
            self._flush()
            self._client.transport.close()
        await asyncio.sleep(0)

    async def shutdown_forker(self, timeout: float | None = None) -> None:
        """Ask the forker to exit once no task runs, and wait for it (exits still arrive)."""
        if self._ready and self._client is not None and self._client.transport is not None:
            self._queue(encode({"op": "shutdown"}))
            self._closed = True
            if self._reconnecting is not None:
                self._reconnecting.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._gone), timeout)
            finally:
                await self.close()
        else:
            await self.close()

    # ---- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        self._connecting = True
        self._backoff = 0.05
        try:
            for _ in range(_CONNECT_ATTEMPTS):
                if self._closed:
                    raise SpawnError("spawner closed")
                if await self._try_hello():
                    return
            raise SpawnError(f"no forker answers on {self.socket_path} ({self._launch_note})")
        finally:
            self._connecting = False

    async def _try_hello(self) -> bool:
        """One connection attempt (launching a forker if none listens); True once welcomed."""
        try:
            _, client = await self._loop.create_unix_connection(
                lambda: _Client(self), self.socket_path
            )
        except (FileNotFoundError, ConnectionRefusedError):
            await self._launch()
            return False
        except OSError as exc:
            raise SpawnError(f"cannot connect to the forker: {exc}") from exc
        self._client = client
        self._hello = self._loop.create_future()
        if self._ack_batch:
            self._ack_id += 1
            self._acks_unconfirmed[self._ack_id] = self._ack_batch
            self._ack_batch = []
        carried = list(self._acks_unconfirmed)
        acks = [n for batch in self._acks_unconfirmed.values() for n in batch]
        assert client.transport is not None
        client.transport.write(encode({"op": "hello", "env": self._env, "acks": acks}))
        try:
            reply = await asyncio.wait_for(self._hello, _HELLO_TIMEOUT)
        except ConnectionError:  # it was exiting (idle): the next attempt launches another
            return False
        except TimeoutError:
            client.transport.abort()
            raise SpawnError(f"the forker on {self.socket_path} does not answer") from None
        for ack_id in carried:
            del self._acks_unconfirmed[ack_id]
        self._welcome(reply)
        return True

    async def _launch(self) -> None:
        """Start a detached forker; returns once it listens (or another one holds the lock)."""
        cmd = [
            sys.executable,
            "-m",
            "evqueue.process.forker",
            "--detach",
            "--socket",
            self.socket_path,
            "--pidfile",
            self.pidfile,
            "--journal",
            self.journal_path,
            "--logs-dir",
            self.logs_dir,
            "--idle-timeout",
            str(self.idle_timeout),
            "--log-file",
            self.forker_log,
        ]
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PACKAGE_ROOT + (os.pathsep + path if path else "")}
        try:
            done = await asyncio.to_thread(
                subprocess.run,
                cmd,
                env=env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=_LAUNCH_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SpawnError(f"cannot start the forker: {exc}") from exc
        if done.returncode == EXIT_ALREADY_RUNNING:  # typically one exiting as we came
            self._launch_note = done.stderr.decode(errors="replace").strip()
            await asyncio.sleep(self._backoff)
            self._backoff *= 2
        elif done.returncode != 0:
            text = done.stderr.decode(errors="replace").strip()
            raise SpawnError(f"cannot start the forker: {text or done.returncode}")

    def _welcome(self, reply: dict[str, Any]) -> None:
        """Hello answered: rebuild state from the forker's view, then re-send what is pending."""
        pid = reply["pid"]
        if self.forker_pid and pid != self.forker_pid:
            log.warning("forker restarted: pid %d -> %d", self.forker_pid, pid)
        self.forker_pid = pid
        self._running = {tid: task_pid for tid, task_pid in reply["running"]}
        exit_pids = {rec["tid"]: rec["pid"] for rec in reply["exits"]}
        self._ready = True
        # Resolve spawns before dispatching exits: on_exit must follow its spawn's return.
        for tid, (line, fut) in list(self._spawns.items()):
            known = self._running.get(tid, exit_pids.get(tid))
            if known is None:
                self._queue(line)
            else:
                del self._spawns[tid]
                fut.set_result(known)
        for rec in reply["exits"]:
            self._exit(rec)
        for pending in self._kills.values():
            for line, _ in pending:
                self._queue(line)
        self._schedule_flush()

    def _lost(self, client: _Client) -> None:
        if client is not self._client:
            return
        self._client = None
        self._ready = False
        self._out.clear()
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(ConnectionError("forker hung up"))
        if self._closed:
            if not self._gone.done():
                self._gone.set_result(None)
            return
        if self._connecting:
            return
        log.warning("connection to the forker lost: reconnecting")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self._connect()
                return
            except SpawnError as exc:
                log.error("%s", exc)
                for _, fut in self._spawns.values():
                    if not fut.done():
                        fut.set_exception(SpawnError(str(exc)))
                self._spawns.clear()
                self._fail_kills()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _shut(self, exc: SpawnError) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for _, fut in self._spawns.values():
            if not fut.done():
                fut.set_exception(exc)
        self._spawns.clear()
        self._fail_kills()

    def _fail_kills(self) -> None:
        for pending in self._kills.values():
            for _, fut in pending:
                if not fut.done():
                    fut.set_result(False)
        self._kills.clear()

    # ---- messages ---------------------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "exit":
            self._confirm(msg["a"])
            self._exit(msg)
        elif op == "spawned":
            self._confirm(msg["a"])
            entry = self._spawns.pop(msg["tid"], None)
            if entry is not None:
                self._running[msg["tid"]] = msg["pid"]
                if not entry[1].done():
                    entry[1].set_result(msg["pid"])
        elif op == "progress":
            if self.on_progress is not None:
                self._loop.call_soon(self.on_progress, msg["tid"], msg["pct"])
        elif op == "killed":
            pending = self._kills.get(msg["tid"])
            if pending:
                _, fut = pending.pop(0)
                if not pending:
                    del self._kills[msg["tid"]]
                if not fut.done():
                    fut.set_result(bool(msg["ok"]))
        elif op == "hello":
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(msg)
        elif op == "error":
            self._error(msg)
        elif op == "bye":
            self._bye(msg.get("reason", ""))

    def _confirm(self, ack_id: int) -> None:
        """The forker applied ack batches up to ``ack_id``: no need to carry them any more."""
        unconfirmed = self._acks_unconfirmed
        while unconfirmed:
            first = next(iter(unconfirmed))
            if first > ack_id:
                break
            del unconfirmed[first]

    def _exit(self, msg: dict[str, Any]) -> None:
        tid, n = msg["tid"], msg["n"]
        if self._unacked.get(tid) == n:
            return
        self._unacked[tid] = n
        self._running.pop(tid, None)
        rec = ExitRecord(
            tid,
            msg["pid"],
            msg["retval"],
            msg["status"],
            msg["start"],
            msg["end"],
            msg.get("lost"),
            n,
        )
        self._loop.call_soon(self.on_exit, rec)

    def _error(self, msg: dict[str, Any]) -> None:
        """A refused request fails the future waiting for it (its spawn, or its first kill)."""
        req, tid, message = msg.get("req"), msg.get("tid"), msg.get("message", "refused")
        fut: asyncio.Future[Any] | None = None
        if req == "spawn" and tid in self._spawns:
            fut = self._spawns.pop(tid)[1]
        elif req == "kill" and self._kills.get(tid):
            fut = self._kills[tid].pop(0)[1]
            if not self._kills[tid]:
                del self._kills[tid]
        if fut is None:
            log.error("forker: %s", message)
        elif not fut.done():
            fut.set_exception(SpawnError(message))

    def _bye(self, reason: str) -> None:
        if reason == BYE_REPLACED:
            log.error("another daemon took over the forker: this spawner stops")
            self._shut(SpawnError("another daemon took over the forker"))

    # ---- output -----------------------------------------------------------------------------

    def _queue(self, line: bytes) -> None:
        """Queue a request after any pending acks (an ack must precede a re-spawn of its tid)."""
        if self._ack_batch:
            self._emit_acks()
        self._out.append(line)
        self._schedule_flush()

    def _emit_acks(self) -> None:
        self._ack_id += 1
        self._acks_unconfirmed[self._ack_id] = self._ack_batch
        self._out.append(encode({"op": "ack", "n": self._ack_batch, "id": self._ack_id}))
        self._ack_batch = []

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._ready or self._client is None or self._client.transport is None:
            return
        if self._ack_batch:
            self._emit_acks()
        if self._out:
            self._client.transport.write(b"".join(self._out))
            self._out.clear()
