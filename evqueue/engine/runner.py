"""From a dequeued task to a process and back (workflow.md §4.4–§4.5, §4.9, §4.16, §6).

The runner turns a task node into an invocation (argv, environment, stdin, working directory), hands
it to the forker through the spawner (a task with a host: to the SSH runner, process/ssh.py, created
on the first remote task, which ends it the same way), and turns the exit record into the task's
outputs: files are read off the loop, truncated past ``datastore.db.maxsize``, sanitised, and moved
to ``t_datastore`` above ``datastore.dom.maxsize``. The forker forgets an exit, and its capture
files are deleted, only once the instance savepoint holding it is committed
(``Instances.exit_applied``): after a crash the exit is replayed and read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from lxml import etree

from evqueue.engine.evaluation import Stored, task_inputs
from evqueue.engine.instance import Output, TaskRun, WorkflowInstance
from evqueue.engine.queue_pool import Queue, UnknownQueue
from evqueue.engine.wordexp import WordExpError, wordexp
from evqueue.process.outputs import delete_outputs
from evqueue.process.remote import REMOTE_LOST, RemoteSpec
from evqueue.process.spawner import KILLTASK_NOTE, ExitRecord, Spawner, TaskSpec
from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.process.ssh import RemoteRunner
    from evqueue.server import Server

log = logging.getLogger(__name__)

#: low bits of a tid hold the task's evqid, high bits the instance id (see Runner.tid_of)
_EVQID_BITS = 20
#: a path made of these characters only is one word that word expansion leaves as it is
_PLAIN = re.compile(r"[\w./+,:=@%-]+\Z")


class InvocationError(Exception):
    """The task cannot be started; the text follows ``Task execution : ``."""


def _flag(task: etree._Element, name: str) -> bool:
    value = task.get(name, "no")
    if value == "yes":
        return True
    if value == "no":
        return False
    try:
        return int(value) != 0
    except ValueError:
        raise InvocationError(f"Attribute '{name}' has invalid boolean value") from None


def expand_words(path: str) -> list[str]:
    """Word expansion of a task path, as wordexp(3) without command substitution."""
    if _PLAIN.match(path):  # the common case: nothing to expand
        return [path]
    try:
        words = wordexp(path)
    except WordExpError:
        raise InvocationError("Error expanding task command line") from None
    if not words or not words[0]:
        raise InvocationError("Error expanding task command line")
    return words


class Runner:
    """Starts dequeued tasks and collects their exits."""

    def __init__(self, server: Server) -> None:
        self.server = server
        cfg = server.config
        self.tasks_dir: str = cfg["processmanager.tasks.directory"]
        self.scripts_dir: str = cfg["processmanager.scripts.directory"]
        self.delete_scripts: bool = cfg["processmanager.scripts.delete"]
        self.logs_dir: str = cfg["processmanager.logs.directory"]
        self.delete_logs: bool = cfg["processmanager.logs.delete"]
        self.db_max: int = cfg["datastore.db.maxsize"]
        self.dom_max: int = cfg["datastore.dom.maxsize"]
        self.spawner: Spawner | None = None
        #: the SSH runner, created on the first remote task (see process/remote.py)
        self.remote: RemoteRunner | None = None
        self.running: dict[int, TaskRun] = {}
        #: exits replayed by the forker before the instances were resumed
        self._early: dict[int, ExitRecord] | None = {}
        self._spawning: set[asyncio.Task] = set()
        self._collecting: set[asyncio.Task] = set()
        #: set at shutdown: exits are left to the forker's journal for the next start
        self.stopping = False

    # -- start ---------------------------------------------------------------------------
    def start_task(self, queue: Queue, run: TaskRun) -> None:
        """QueuePool callback: ``run`` got a slot in ``queue``."""
        inst = run.instance
        reason = inst.dequeued(run)
        if reason is None and self.knows_task(run):
            self._attach(run, queue)
            inst.started(run)
            return
        if reason is None:
            try:
                spec = self.invocation(run)
            except InvocationError as e:
                reason = str(e)
        if reason is not None:
            inst.start_failed(run, reason)
            self.server.queues.release(queue)
            return
        run.tid = spec.tid
        self.running[spec.tid] = run
        self.server.instances.respawning(inst, spec.tid)
        _background(self._spawning, self._spawn(queue, run, spec))

    async def _spawn(self, queue: Queue, run: TaskRun, spec: TaskSpec | RemoteSpec) -> None:
        assert self.spawner is not None
        try:
            if isinstance(spec, RemoteSpec):
                run.pid = await self._remote().spawn(spec)
            else:
                run.pid = await self.spawner.spawn(spec)
        except Exception as e:
            log.error("Could not start task %s: %s", spec.tid, e)
            self.running.pop(spec.tid, None)
            run.instance.start_failed(run, "Could not fork task monitor, see engine logs")
            self.server.queues.release(queue)
            return
        if run.task.get("status") == "QUEUED":
            run.instance.started(run)

    def _remote(self) -> RemoteRunner:
        """The SSH runner, created (and paramiko imported) on the first remote task."""
        if self.remote is None:
            from evqueue.process.ssh import RemoteRunner

            cfg = self.server.config
            self.remote = RemoteRunner(
                self.logs_dir, self.on_exit,
                key_file=cfg["processmanager.ssh.key"] or cfg["processmanager.monitor.ssh_key"],
                known_hosts=cfg["processmanager.ssh.known_hosts"],
                accept_unknown=cfg["processmanager.ssh.unknown_hosts"] == "accept",
                client_config=cfg["processmanager.ssh.config"],
                delete_scripts=self.delete_scripts, delete_logs=self.delete_logs)
        return self.remote

    def knows_task(self, run: TaskRun) -> bool:
        """A task the previous daemon run spawned before its savepoint could say so (crash):
        the forker knows its tid, so it is attached to instead of being run a second time."""
        try:
            return self.knows(self.tid_of(run.instance.id, run.task))
        except InvocationError:
            return False

    @staticmethod
    def tid_of(instance_id: int, task: etree._Element) -> int:
        """The task id: derived from the instance id and the task's evqid, so a restarted
        daemon recognises its tasks in the forker's records even when the last savepoint
        did not see them start (nothing runs twice after a crash)."""
        evqid = int(task.get("evqid", "0"))
        if not 0 < evqid < 1 << _EVQID_BITS:
            raise InvocationError("Task has no valid evqid")
        return instance_id << _EVQID_BITS | evqid

    def invocation(self, run: TaskRun) -> TaskSpec | RemoteSpec:
        """Build argv/env/stdin/cwd of a task node (workflow.md §4.9), run over SSH when it
        has a host (§4.10)."""
        task = run.task
        mode = task.get("parameters-mode", "CMDLINE")
        if mode not in ("CMDLINE", "ENV"):
            raise InvocationError(f"Unkown parameters mode {mode}")
        method = task.get("output-method", "TEXT")
        if method not in ("TEXT", "XML"):
            raise InvocationError(f"Unkown output method {method}")
        type_ = task.get("type", "BINARY")
        if type_ not in ("BINARY", "SCRIPT"):
            raise InvocationError(f"Unkown type {type_}")
        _flag(task, "use-agent")  # checked as the original does; agentless SSH needs no agent
        merge = _flag(task, "merge-stderr")
        tid = self.tid_of(run.instance.id, task)
        inputs = task_inputs(task)
        # §4.10: the task's host and user, else the launch's
        owner = task if task.get("host") else run.instance.doc
        if owner.get("host"):
            script = (inputs.script or "").encode("utf-8") if type_ == "SCRIPT" else None
            argv = [] if script is not None else self._program(task)
            return RemoteSpec(
                tid=tid, host=owner.get("host", ""), user=owner.get("user") or None,
                argv=argv + inputs.arguments, env=inputs.environment or None,
                cwd=task.get("wd") or None, stdin=inputs.stdin.encode("utf-8"),
                script=script, merge_stderr=merge)
        if type_ == "SCRIPT":
            argv = [self._write_script(tid, inputs.script or "")]
        else:
            argv = self._program(task)
        return TaskSpec(
            tid=tid, argv=argv + inputs.arguments, env=inputs.environment or None,
            cwd=task.get("wd") or None, stdin=inputs.stdin.encode("utf-8"),
            merge_stderr=merge,
        )

    def _program(self, task: etree._Element) -> list[str]:
        """The expanded path words, the program prefixed with the tasks directory (§4.9.5)."""
        argv = expand_words(task.get("path", ""))
        if not argv[0].startswith("/"):
            argv[0] = os.path.join(self.tasks_dir, argv[0])
        return argv

    def _write_script(self, tid: int, text: str) -> str:
        path = os.path.join(self.scripts_dir, f"{tid}.script")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    # -- exit ----------------------------------------------------------------------------
    def on_exit(self, record: ExitRecord) -> None:
        """Spawner callback: a task process ended (or its exit was replayed)."""
        if self.stopping:
            return
        run = self.running.get(record.tid)
        if run is None and self._early is not None:
            self._early[record.tid] = record
            return
        if run is None:
            log.warning("Exit of unknown task %s dropped", record.tid)
            self.ack(record.tid)
            return
        _background(self._collecting, self._collect(run, record))

    async def _collect(self, run: TaskRun, record: ExitRecord) -> None:
        assert self.spawner is not None
        retval = record.retval
        try:
            # the files stay until the exit is saved: a crash before that reads them again
            out = await self.spawner.read_outputs(record.tid, self.db_max, delete=False)
            stdout_b, stderr, logtext = out.stdout, out.stderr, out.log
        except OSError as e:
            stdout_b, stderr, logtext = None, str(e).encode(), b""
        if stdout_b is None:
            stdout = ("[ ProcessManager ] Could not read task log, setting retcode to -1 to "
                      "block subjobs")
            retval = -1
        else:
            stdout = stdout_b.decode("utf-8", "replace")
        if run.task.get("type") == "SCRIPT" and self.delete_scripts:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.scripts_dir, f"{record.tid}.script"))
        inst = run.instance
        xml_stdout = retval == 0 and run.task.get("output-method") == "XML"
        texts: list[Output] = []
        for i, text in enumerate((stdout, stderr.decode("utf-8", "replace"),
                                  logtext.decode("utf-8", "replace"))):
            big = len(text) >= self.dom_max and not (i == 0 and xml_stdout)
            texts.append(await self._store(inst, text) if big else text)
        self.running.pop(record.tid, None)
        if inst.ended:
            self.ack(record.tid)
        else:
            inst.stopped(run, retval, *texts)
            self.server.instances.exit_applied(inst, record.tid)
        if run.queue is not None:
            self.server.queues.release(run.queue)

    def ack(self, tid: int) -> None:
        """The exit of ``tid`` is saved (or needs no saving): the forker may forget it, and
        its capture files can go."""
        assert self.spawner is not None
        pending = self.spawner.knows(tid)
        self.spawner.ack(tid)
        if self.remote is not None:
            pending |= self.remote.ack(tid)
        if self.delete_logs and pending and not self.spawner.knows(tid):  # not running again
            delete_outputs(self.logs_dir, tid)

    async def stop(self) -> None:
        """Shutdown: finish collecting the exits in progress; later ones are left to the
        forker, which replays them to the next start."""
        self.stopping = True
        if self._collecting:
            await asyncio.wait(list(self._collecting))

    def on_progress(self, tid: int, percent: int) -> None:
        """Spawner callback: a ``%N`` line on the task's fd 3."""
        run = self.running.get(tid)
        if run is not None and not run.instance.ended:
            run.instance.progress(run, percent)

    async def _store(self, inst: WorkflowInstance, text: str) -> Stored:
        """Move a large output to ``t_datastore`` (§4.16)."""
        try:
            result = await self.server.storage.execute(
                "INSERT INTO t_datastore (workflow_instance_id, datastore_value) "
                "VALUES (%s, %s)", (inst.id, text))
        except Exception as e:
            return Stored(error=str(e))
        return Stored(result.lastrowid)

    # -- restart -----------------------------------------------------------------------
    def knows(self, tid: int) -> bool:
        """At resume: the forker runs this task, or holds its exit."""
        assert self.spawner is not None
        return self.early_exit(tid) or tid in self.spawner.running()

    def early_exit(self, tid: int) -> bool:
        return self._early is not None and tid in self._early

    def max_instance_id(self) -> int:
        """The highest instance id among the tasks the forker knows (levels 0/1 must not
        hand it out again)."""
        assert self.spawner is not None
        tids = [*self.spawner.running(), *(self._early or ())]
        return max(tids, default=0) >> _EVQID_BITS

    def resumed(self) -> None:
        """Instances are rebuilt: collect the exits replayed meanwhile, ack unknown ones."""
        early, self._early = self._early or {}, None
        for record in early.values():
            self.on_exit(record)

    def adopt(self, inst: WorkflowInstance, task: etree._Element, tid: int) -> None:
        """A task saved EXECUTING (or QUEUED, the savepoint not having seen it start) that the
        forker still knows: wait for its exit."""
        run = TaskRun(inst, task)
        host = task.get("queue_host") or task.get("host")
        try:
            queue: Queue | None = self.server.queues.resolve(task.get("queue", ""), host)
        except UnknownQueue:
            queue = None
        else:
            self.server.queues.adopt_running(queue)
        job = task.getparent().getparent()
        inst._count(job, "running_tasks", 1)
        inst.running += 1
        inst.runs.add(run)
        self._attach(run, queue)
        task.set("status", "EXECUTING")
        if task.get("execution_time") is None:
            task.set("execution_time", now())
        task.set("tid", str(run.tid))
        task.set("pid", str(run.pid))

    def adopt_queued(self, run: TaskRun) -> None:
        """A task waiting in its queue that the forker already runs (see ``knows_task``):
        started now, even past the queue's limit, since its process exists."""
        queue = run.queue
        assert queue is not None
        queue.remove_where(lambda item: item is run)
        run.instance.dequeued(run)
        self.server.queues.adopt_running(queue)
        self._attach(run, queue)
        run.instance.started(run)

    def _attach(self, run: TaskRun, queue: Queue | None) -> None:
        """Register ``run`` as the task the forker runs (or ran) under its tid."""
        assert self.spawner is not None
        run.tid = self.tid_of(run.instance.id, run.task)
        run.pid = self.spawner.running().get(run.tid) or int(run.task.get("pid", "0"))
        run.queue = queue
        self.running[run.tid] = run

    def lost(self, inst: WorkflowInstance, task: etree._Element, message: str) -> None:
        """An EXECUTING task nobody knows any more: it failed with retval -1."""
        if task.get("host") or inst.doc.get("host"):
            message += REMOTE_LOST
        run = TaskRun(inst, task)
        job = task.getparent().getparent()
        inst._count(job, "running_tasks", 1)
        inst.running += 1
        inst.runs.add(run)
        inst.stopped(run, -1, "", message, "")

    async def kill(self, run: TaskRun) -> None:
        """``killtask``: SIGKILL the task's process group, noting it in its stderr."""
        assert self.spawner is not None
        if self.remote is not None and self.remote.handles(run.tid):
            await self.remote.kill(run.tid, note=KILLTASK_NOTE)
        else:
            await self.spawner.kill(run.tid, note=KILLTASK_NOTE)



def _background(tasks: set[asyncio.Task], coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)

