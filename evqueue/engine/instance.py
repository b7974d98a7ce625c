"""One running workflow instance: the instance document and the execution algorithm.

The document *is* the state (workflow.md §0): statuses, counters, loop clones and outputs are
written into it, later expressions read it, and it is what ``instance query`` returns and what
savepoints store. Every transition runs on the event loop, one at a time, so no locking.
The algorithm follows workflow.md §4.2–§4.12.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.engine.evaluation import EvalError, Evaluator, Stored, WaitCondition, append_attempt
from evqueue.engine.queue_pool import Queue, UnknownQueue
from evqueue.engine.xpath import Node
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.engine.instances import Instances

class Abort(Exception):
    """An evaluation error already recorded on its node; unwinds to the enclosing job."""

    def __init__(self, job: etree._Element | None = None) -> None:
        super().__init__()
        self.job = job


@dataclass(eq=False, slots=True)
class TaskRun:
    """A task between enqueue and exit: the queue item and the running-process handle."""

    instance: WorkflowInstance
    task: etree._Element
    queue: Queue | None = None
    tid: int = 0
    pid: int = 0

    @property
    def instance_id(self) -> int:
        return self.instance.id


Output = str | Stored


def _int(value: str | None) -> int:
    """A numeric attribute the way the original reads it: anything unparsable is 0."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def job_of(task: etree._Element) -> etree._Element:
    """``task/../..``: the job owning a task."""
    return task.getparent().getparent()


def parent_job(job: etree._Element) -> etree._Element:
    """The job (or root ``workflow``) containing ``job``."""
    return job.getparent().getparent()


class WorkflowInstance:
    """State and transitions of one instance."""

    def __init__(
        self, engine: Instances, instance_id: int, workflow_id: int, doc: etree._Element,
        *, schedule_id: int | None = None,
    ) -> None:
        self.engine = engine
        self.id = instance_id
        self.workflow_id = workflow_id
        self.doc = doc
        self.name = doc.get("name", "")
        self.schedule_id = schedule_id
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cancelling = False
        self.running = 0  # tasks queued or executing
        self.retrying: dict[TaskRun, asyncio.TimerHandle] = {}
        self.errors = 0
        self.waiting: list[tuple[etree._Element, Node]] = []
        self.runs: set[TaskRun] = set()
        self.ended = False
        #: > 0 while handing a task to the queue pool, which may start it at once; a start
        #: failure then must not end the instance in the middle of the transition queuing it
        self._queuing = 0
        self.eval = Evaluator(doc)

    # -- counters and errors -------------------------------------------------------------
    def _count(self, node: etree._Element, name: str, delta: int) -> None:
        """Apply a counter change to ``node`` (a job or the root) and every ancestor job."""
        while node is not None:
            node.set(name, str(int(node.get(name, "0")) + delta))
            if node is self.doc:
                return
            node = parent_job(node)

    def _task_error(self, task: etree._Element) -> None:
        self._count(job_of(task), "error_tasks", 1)
        self.errors += 1

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """workflow.md §4.1: mark EXECUTING, start every top-level job, maybe end at once."""
        self.doc.set("status", "EXECUTING")
        self.doc.set("start_time", now())
        self.eval.evqid(self.doc)
        self._run_subjobs_safe(self.doc)
        self.engine.events.publish("INSTANCE_STARTED", self.id)
        self.check_end()

    def _run_subjobs_safe(self, job: etree._Element) -> None:
        try:
            self.run_subjobs(job)
        except Abort:
            pass

    # -- scheduling algorithm (§4.2) -------------------------------------------------------
    def run_subjobs(self, parent: etree._Element) -> None:
        subjobs = parent.find("subjobs")
        if subjobs is None:
            return
        for job in list(subjobs.iterchildren("job")):
            try:
                self.run_subjob(job, parent)
            except Abort as e:
                self._job_aborted(e.job if e.job is not None else job)
                raise Abort() from None

    def _job_aborted(self, job: etree._Element) -> None:
        """An evaluation error escaped ``job``: it is ABORTED and counts one error (§4.7)."""
        job.set("status", "ABORTED")
        self._count(job, "error_tasks", 1)
        self.errors += 1

    def run_subjob(self, job: etree._Element, ctx: Node) -> None:
        job.set("context-id", self.eval.context_id(ctx))
        self.eval.evqid(job)
        if not self.handle_condition(job, ctx, job):
            return
        for clone, item in self.handle_loop(job, ctx, job):
            if not self.handle_condition(clone, item, clone):
                continue
            try:
                self.run_tasks(clone, item)
            except Abort as e:
                raise Abort(clone) from e

    def run_tasks(self, job: etree._Element, ctx: Node) -> None:
        for task in list(job.find("tasks").iterchildren("task")):
            self.run_task(task, ctx)
        if self.tasks_successful(job):
            self.run_subjobs(job)

    def run_task(self, task: etree._Element, ctx: Node) -> None:
        if task.get("status") == "TERMINATED":
            return
        job = job_of(task)
        task.set("context-id", self.eval.context_id(ctx))
        self.eval.evqid(task)
        if not self.handle_condition(task, ctx, job):
            return
        for clone, item in self.handle_loop(task, ctx, job):
            if not self.handle_condition(clone, item, job):
                continue
            try:
                self.eval.replace_values(clone, item, job)
            except EvalError:
                raise Abort() from None
            self.enqueue(TaskRun(self, clone))

    @staticmethod
    def tasks_successful(job: etree._Element) -> bool:
        """Every task TERMINATED with retval 0 or SKIPPED. Checked at each task end, so
        scanned from the last task: the ones still queued or running are usually there
        (tasks start in document order), which keeps big loops linear."""
        for task in job.find("tasks").iterchildren("task", reversed=True):
            status = task.get("status")
            if status == "SKIPPED":
                continue
            if status != "TERMINATED" or task.get("retval") != "0":
                return False
        return True

    def handle_condition(
        self, node: etree._Element, ctx: Node, current_job: etree._Element
    ) -> bool:
        """§4.2 handle_condition: True to go on; SKIPPED/WAITING nodes stop here."""
        try:
            return self.eval.apply_condition(node, ctx, current_job)
        except WaitCondition:
            self.waiting.append((node, ctx))
            self._count(job_of(node) if node.tag == "task" else node, "waiting_conditions", 1)
            return False
        except EvalError:
            raise Abort(node if node.tag == "job" else None) from None

    def handle_loop(
        self, node: etree._Element, ctx: Node, current_job: etree._Element
    ) -> Iterator[tuple[etree._Element, Node]]:
        """§4.2 handle_loop: ``(clone, context)`` pairs, numbered as they are processed so
        evqids follow processing order as in the original."""
        try:
            yield from self.eval.expand_loop(node, ctx, current_job)
        except EvalError:
            raise Abort(node if node.tag == "job" else None) from None

    # -- queues and processes (§4.4, §4.5) ------------------------------------------------
    def enqueue(self, run: TaskRun) -> None:
        task = run.task
        if self.cancelling:
            task.set("status", "ABORTED")
            task.set("error", "Aborted on user request")
            self._task_error(task)
            return
        host = task.get("queue_host") or task.get("host")
        try:
            queue = self.engine.queues.resolve(task.get("queue", ""), host)
        except UnknownQueue:
            task.set("status", "ABORTED")
            task.set("error", "Unknown queue name")
            self._task_error(task)
            return
        task.set("status", "QUEUED")
        job = job_of(task)
        self._count(job, "running_tasks", 1)
        self._count(job, "queued_tasks", 1)
        self.running += 1
        run.queue = queue
        self.runs.add(run)
        self.engine.events.publish("TASK_ENQUEUE", self.id)
        self._queuing += 1
        try:
            self.engine.queues.enqueue(queue, run, self.id)
        finally:
            self._queuing -= 1

    def dequeued(self, run: TaskRun) -> str | None:
        """The queue gave ``run`` a slot. Returns an abort reason, or None to go ahead."""
        self._count(job_of(run.task), "queued_tasks", -1)
        if self.cancelling:
            return "Aborted on user request"
        return None

    def start_failed(self, run: TaskRun, reason: str) -> None:
        """The task could not be started: ABORTED, no output (§4.4 step 3)."""
        task = run.task
        task.set("status", "ABORTED")
        task.set("error", f"Task execution : {reason}")
        self._task_error(task)
        self._finish_run(run)
        self.after_task_change()

    def started(self, run: TaskRun) -> None:
        task = run.task
        task.set("status", "EXECUTING")
        task.set("pid", str(run.pid))
        task.set("tid", str(run.tid))
        task.set("execution_time", now())
        self.engine.events.publish("TASK_EXECUTE", self.id)
        self.engine.events.publish("QUEUE_EXECUTE")
        self.engine.savepoint_progress(self)

    def progress(self, run: TaskRun, percent: int) -> None:
        run.task.set("progression", str(max(0, min(100, percent))))
        self.engine.events.publish("TASK_PROGRESS", self.id)

    def stopped(
        self, run: TaskRun, retval: int, stdout: Output, stderr: Output, logtext: Output
    ) -> None:
        """workflow.md §4.5: record the attempt, retry or fail, then move the instance on."""
        task = run.task
        task.set("status", "TERMINATED")
        task.set("retval", str(retval))
        for attr in ("tid", "pid", "retry_at"):
            task.attrib.pop(attr, None)
        task.set("progression", "100")
        if not append_attempt(task, retval=retval,
                              execution_time=task.get("execution_time", now()),
                              exit_time=now(), stdout=stdout, stderr=stderr, log_text=logtext):
            task.set("status", "ABORTED")
            task.set("error", "Invalid XML returned")
            self._task_error(task)
        if retval != 0:
            if self.cancelling:
                task.set("error", "Won't retry because workflow is cancelling")
                self._task_error(task)
            elif not self.schedule_retry(run):
                self._task_error(task)
        self.engine.events.publish("TASK_TERMINATE", self.id)
        self.engine.events.publish("TASK_PROGRESS", self.id)
        self._finish_run(run)
        job = job_of(task)
        if self.tasks_successful(job):
            self._run_subjobs_safe(job)
        self.after_task_change()

    def _finish_run(self, run: TaskRun) -> None:
        self._count(job_of(run.task), "running_tasks", -1)
        self.running -= 1
        self.runs.discard(run)

    def after_task_change(self) -> None:
        """Re-evaluate waiting conditions (§4.8), then check for the end (§4.12)."""
        if self.waiting:
            waiting, self.waiting = self.waiting, []
            for node, ctx in waiting:
                node.attrib.pop("status", None)
                node.attrib.pop("details", None)
                self._count(job_of(node) if node.tag == "task" else node,
                            "waiting_conditions", -1)
                try:
                    if node.tag == "task":
                        self.run_task(node, ctx)
                    else:
                        self.run_subjob(node, ctx)
                except Abort as e:  # as if it had failed when first processed
                    failed = e.job if e.job is not None else node
                    self._job_aborted(job_of(failed) if failed.tag == "task" else failed)
        self.check_end()
        if not self.ended:
            self.engine.savepoint_progress(self)

    # -- retries (§4.11) -----------------------------------------------------------------
    def schedule_retry(self, run: TaskRun) -> bool:
        """Decide and arm a retry (§4.11.1); False means the failure is final."""
        task = run.task
        schedule = task.get("retry_schedule")
        if schedule and task.get("retry_schedule_level", "0") in ("0", ""):
            delay, times = self._advance_level(task, schedule)
        elif task.get("retry_delay") is None or task.get("retry_times") is None:
            return False
        else:
            delay, times = _int(task.get("retry_delay")), _int(task.get("retry_times"))
        if schedule and times == 0:
            delay, times = self._advance_level(task, schedule)
        if delay <= 0 or times <= 0:
            return False
        retval_filter = task.get("retry_retval")
        if retval_filter is not None and retval_filter != task.get("retval"):
            return False
        task.set("retry_at", now(time.time() + delay))
        task.set("retry_times", str(times - 1))
        self._count(job_of(task), "retrying_tasks", 1)
        loop = asyncio.get_running_loop()
        self.retrying[run] = loop.call_later(delay, self.retry_now, run)
        return True

    def _advance_level(self, task: etree._Element, schedule: str) -> tuple[int, int]:
        """Go to the next level of the task's retry schedule and copy its delay and times
        onto the task; past the last level nothing is copied (the task keeps the last
        level's values, as observed) and ``(0, 0)`` ends the retries."""
        level = _int(task.get("retry_schedule_level")) + 1
        task.set("retry_schedule_level", str(level))
        levels = self.doc.xpath("schedules/schedule[@name=$n]/level", n=schedule)
        if level > len(levels):
            return 0, 0
        delay, times = (levels[level - 1].get(a, "0") for a in ("retry_delay", "retry_times"))
        task.set("retry_delay", delay)
        task.set("retry_times", times)
        return _int(delay), _int(times)

    def retry_now(self, run: TaskRun) -> None:
        """A retry is due (timer, SIGUSR1, cancel): queue the task again."""
        handle = self.retrying.pop(run, None)
        if handle is None:
            return
        handle.cancel()
        self._count(job_of(run.task), "retrying_tasks", -1)
        self.enqueue(TaskRun(self, run.task))
        self.check_end()

    def retry_all(self) -> None:
        for run in list(self.retrying):
            self.retry_now(run)

    # -- actions (§4.14) -----------------------------------------------------------------
    def cancel(self) -> None:
        self.cancelling = True
        self.retry_all()
        self.engine.queues_cancel(self)
        self.check_end()

    # Our extension (the original has no per-task action): retry or skip one task of a running
    # instance, e.g. to unblock the subjobs of a job whose task failed.
    def task(self, evqid: int) -> etree._Element:
        for task in self.doc.iter("task"):
            if task.get("evqid") == str(evqid):
                return task
        raise ApiError("UNKNOWN_OBJECT", f"Unknown task : {evqid}")

    def _failed(self, task: etree._Element) -> bool:
        status = task.get("status")
        return status == "ABORTED" or (status == "TERMINATED" and task.get("retval") != "0"
                                       and not self._retry_of(task))

    def _retry_of(self, task: etree._Element) -> TaskRun | None:
        return next((run for run in self.retrying if run.task is task), None)

    def _forget_error(self, task: etree._Element) -> None:
        self._count(job_of(task), "error_tasks", -1)
        self.errors -= 1
        task.attrib.pop("error", None)

    def retry_task(self, task: etree._Element) -> None:
        """Run a failed task (or one waiting for its retry delay) again now."""
        pending = self._retry_of(task)
        if pending is not None:
            self.retry_now(pending)
            return
        if not self._failed(task):
            raise ApiError("INVALID_PARAMETER",
                           "Only a failed task or a task waiting for a retry can be retried")
        self._forget_error(task)
        self.enqueue(TaskRun(self, task))
        self.after_task_change()

    def skip_task(self, task: etree._Element) -> None:
        """Mark a queued, retrying or failed task SKIPPED so its job can go on."""
        pending = self._retry_of(task)
        if pending is not None:
            self.retrying.pop(pending).cancel()
            self._count(job_of(task), "retrying_tasks", -1)
            task.attrib.pop("retry_at", None)  # not counted as an error: nothing to forget
        elif task.get("status") == "QUEUED":
            run = next((r for r in self.runs if r.task is task), None)
            if run is None or run.queue is None or not run.queue.remove_where(
                    lambda r: r is run):
                raise ApiError("INVALID_PARAMETER", "The task is starting: kill it instead")
            self._count(job_of(task), "queued_tasks", -1)
            self._finish_run(run)
        elif self._failed(task):
            self._forget_error(task)
        else:
            raise ApiError("INVALID_PARAMETER", "Only a queued, retrying or failed task can be "
                           "skipped (kill an executing one)")
        task.set("status", "SKIPPED")
        task.set("details", "Skipped on user request")
        job = job_of(task)
        if self.tasks_successful(job):
            self._run_subjobs_safe(job)
        self.after_task_change()

    async def kill_task(self, pid: int) -> None:
        for run in list(self.runs):
            if run.pid == pid and run.task.get("status") == "EXECUTING":
                await self.engine.server.runner.kill(run)

    # -- end (§4.12) ---------------------------------------------------------------------
    def check_end(self) -> None:
        """§4.12: nothing queued, running or waiting for a retry → TERMINATED. Every
        transition ends with this check (the outermost one when they nest)."""
        if self.ended or self.running or self.retrying or self._queuing:
            return
        self.ended = True
        self.doc.set("status", "TERMINATED")
        if self.errors:
            self.doc.set("errors", str(self.errors))
        self.engine.terminated(self)

    def suspend(self) -> None:
        """Shutdown: drop timers and leave the queues, keep the state for the next start
        (§4.13.2): queued tasks stay QUEUED in the document and are queued again at resume."""
        for handle in self.retrying.values():
            handle.cancel()
        for run in self.runs:
            if run.queue is not None and run.task.get("status") == "QUEUED":
                run.queue.remove_where(lambda item, run=run: item is run)
        self.ended = True
