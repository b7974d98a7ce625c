"""The registry of workflow instances: launch, savepoints, history, resume, actions.

Persistence follows ``workflowinstance.savepoint.level`` (workflow.md §4.13) with one
improvement: at levels 2 and 3 the instance row carries the document from the launch on, and
the running document is written behind execution (coalesced, group-committed), so even after a
``kill -9`` of the daemon the next start resumes every instance instead of marking it
TERMINATED with an empty savepoint as the original does. A task spawned but not yet saved is
recognised at resume by its tid, which is derived from the instance id and the task's evqid
(see ``Runner.tid_of``), so nothing runs twice. Symmetrically, the forker is told to forget a
task's exit only once a savepoint holding that exit is committed (``exit_applied``): a crash in
between replays the exit at the next start instead of losing it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lxml import etree

from evqueue.engine.evaluation import new_instance
from evqueue.engine.instance import TaskRun, WorkflowInstance, job_of
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Tx, now
from evqueue.storage.schema import COUNT_TABLE, TAG_COUNT_TABLE

if TYPE_CHECKING:
    from evqueue.engine.users import User
    from evqueue.engine.workflows import Workflow
    from evqueue.server import Server

log = logging.getLogger(__name__)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=True)
_PERIODS = ("year", "month", "day", "hour")
#: 1-based SUBSTR offsets in 'YYYY-MM-DD HH:MM:SS' (the same text on both backends)
_SLICES = {"year": (1, 4), "month": (6, 2), "day": (9, 2), "hour": (12, 2)}
#: Makes a query read the instances in end order.
_END_INDEX = {"sqlite": 'INDEXED BY "t_workflow_instance.end_workflow"',
              "mysql": "FORCE INDEX (end_workflow)"}
_COUNTERS = ("running_tasks", "queued_tasks", "retrying_tasks", "error_tasks",
             "waiting_conditions")
#: write-behind delay of running savepoints at level 2 (level 3 writes at once)
_SAVE_DELAY = 0.05


def parse_document(xml: str | bytes) -> etree._Element:
    return etree.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml, _PARSER)


class Instances:
    """All instances executing on this node, and access to the stored ones."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.storage = server.storage
        self.events = server.events
        self.queues = server.queues
        self.config = server.config
        self.level: int = server.config["workflowinstance.savepoint.level"]
        self.active: dict[int, WorkflowInstance] = {}
        #: terminated instances whose final savepoint is not committed yet: id → (wf id, xml)
        self._finishing: dict[int, tuple[int, str]] = {}
        #: terminated instances waiting for ``_save_finals``: (instance, xml, end time)
        self._ending: list[tuple[WorkflowInstance, str, str]] = []
        self._dirty: set[WorkflowInstance] = set()
        self._save_handle: asyncio.Handle | None = None
        self._next_id = 1  # in-process sequence at levels 0/1 (ops.md §3.4)
        self._pending: set[asyncio.Task] = set()
        #: exits applied to an instance's document that no committed savepoint holds yet (tids)
        self._unsaved_exits: dict[WorkflowInstance, list[int]] = {}
        #: tids of saved exits whose savepoint is being committed
        self._committing: set[int] = set()

    async def load_sequence(self) -> None:
        row = await self.storage.query_one(
            "SELECT MAX(workflow_instance_id) FROM t_workflow_instance")
        self._next_id = (row[0] or 0) + 1 if row else 1

    # -- launch --------------------------------------------------------------------------
    async def launch(
        self, workflow: Workflow, parameters: Iterable[tuple[str, str]], *, host: str = "",
        user: str = "", comment: str = "", schedule_id: int | None = None,
    ) -> WorkflowInstance:
        """Create, persist (level ≥ 2) and start an instance (workflow.md §2.1, §4.1)."""
        stats = self.server.statistics
        try:
            doc = new_instance(
                workflow.definition, workflow.name, parameters, host=host, user=user,
                comment=comment,
                retry_schedule=lambda name: self.server.retry_schedules.get_by_name(
                    name).document(),
            )
        except ApiError:
            stats.workflow_exceptions += 1
            raise
        instance_id = await self._new_id(doc, workflow.id, schedule_id, host, comment)
        inst = WorkflowInstance(self, instance_id, workflow.id, doc, schedule_id=schedule_id)
        self._register(inst)
        log.info("[WID %s] Started", instance_id)
        inst.start()
        return inst

    async def _new_id(self, doc: etree._Element, workflow_id: int, schedule_id: int | None,
                      host: str, comment: str) -> int:
        """The id of a new instance: its row's (inserted with the launch document and the
        searchable parameters at level ≥ 2), else the in-process sequence (ops.md §3.4)."""
        if self.level >= 2:
            parameters = [
                (p.get("name"), p.text or "")
                for node in doc.iterchildren("parameters") for p in node.iterchildren("parameter")
            ] if self.config["workflowinstance.saveparameters"] else []
            instance_id = await self.storage.transaction(functools.partial(
                _insert_instance, (self.server.node, workflow_id, schedule_id, host, now(),
                                   comment, etree.tostring(doc, encoding="unicode")),
                parameters))
        else:
            instance_id = self._next_id
            self._next_id += 1
        doc.set("id", str(instance_id))
        return instance_id

    def _register(self, inst: WorkflowInstance) -> None:
        self.active[inst.id] = inst
        stats = self.server.statistics
        stats.workflow_instance_launched += 1
        stats.workflow_instance_executing += 1

    # -- savepoints ----------------------------------------------------------------------
    def savepoint_progress(self, inst: WorkflowInstance) -> None:
        """Write the running document behind execution (levels 2 and 3)."""
        if self.level < 2:
            return
        self._dirty.add(inst)
        if self._save_handle is None:
            loop = asyncio.get_running_loop()
            delay = 0 if self.level >= 3 else _SAVE_DELAY
            self._save_handle = loop.call_later(delay, self._save_dirty)

    def _save_dirty(self) -> None:
        self._save_handle = None
        dirty, self._dirty = self._dirty, set()
        saved: list[int] = []
        for inst in dirty:
            if inst.ended:
                continue
            self.storage.write(
                "UPDATE t_workflow_instance SET workflow_instance_savepoint = %s "
                "WHERE workflow_instance_id = %s",
                (etree.tostring(inst.doc, encoding="unicode"), inst.id),
            )
            saved += self._unsaved_exits.pop(inst, ())
        if saved:
            self._committing.update(saved)
            self._spawn(self._ack_when_committed(saved))

    def exit_applied(self, inst: WorkflowInstance, tid: int) -> None:
        """The runner applied the exit of task ``tid`` to ``inst``'s document: the forker may
        forget it once a savepoint holding it is committed (at once below level 2, where a
        crash loses the running state anyway)."""
        if self.level < 2:
            self.server.runner.ack(tid)
        else:
            self._unsaved_exits.setdefault(inst, []).append(tid)

    def respawning(self, inst: WorkflowInstance, tid: int) -> None:
        """``tid`` is about to run again (a retry) before its previous exit was saved: the
        forker must forget that exit first, or it refuses the spawn."""
        pending = self._unsaved_exits.get(inst)
        if pending and tid in pending:
            pending.remove(tid)
            self.server.runner.ack(tid)
        elif tid in self._committing:
            self._committing.discard(tid)
            self.server.runner.ack(tid)

    async def _ack_when_committed(self, tids: list[int]) -> None:
        await self.storage.flush()
        for tid in tids:
            if tid in self._committing:  # else acked already by respawning()
                self._committing.discard(tid)
                self.server.runner.ack(tid)

    def terminated(self, inst: WorkflowInstance) -> None:
        """workflow.md §4.12: final savepoint, custom attributes, tags, then release."""
        end = now()
        if self.level >= 1:
            inst.doc.set("end_time", end)
            inst.doc.set("errors", str(inst.errors))
        self._dirty.discard(inst)
        self.active.pop(inst.id, None)
        stats = self.server.statistics
        stats.workflow_instance_executing -= 1
        if inst.errors:
            stats.workflow_instance_errors += 1
        if self.level >= 1:
            xml = etree.tostring(inst.doc, encoding="unicode")
            self._finishing[inst.id] = (inst.workflow_id, xml)
            self._ending.append((inst, xml, end))
            if len(self._ending) == 1:
                self._spawn(self._save_finals())
        log.info("[WID %s] Terminated", inst.id)
        if not inst.done.done():
            inst.done.set_result(None)
        self.server.instance_ended(inst)
        self.events.publish("INSTANCE_TERMINATED", inst.id)

    async def _save_finals(self) -> None:
        """The final rows of the instances that ended since the previous call, in one
        transaction (a failed batch is retried instance by instance). At level 2, custom
        attributes and tags go first: whoever sees an instance ended sees them too."""
        batch, self._ending = self._ending, []
        rows = []
        for inst, xml, end in batch:
            if self.level >= 2:
                statements = await self._end_values(inst)
                statements.append((
                    "UPDATE t_workflow_instance SET workflow_instance_status = 'TERMINATED', "
                    "workflow_instance_end = %s, workflow_instance_errors = %s, "
                    "workflow_instance_savepoint = %s WHERE workflow_instance_id = %s",
                    (end, inst.errors, xml, inst.id)))
            else:
                statements = [self._row(inst, xml, "TERMINATED", end)]
            rows.append((inst, statements))
        try:
            await self._commit_finals(rows)
        except Exception:
            if len(rows) == 1:
                log.exception("[WID %s] Could not save the final savepoint", rows[0][0].id)
            else:  # one bad row must not lose the others
                for row in rows:
                    try:
                        await self._commit_finals([row])
                    except Exception:
                        log.exception("[WID %s] Could not save the final savepoint", row[0].id)
        finally:
            for inst, _ in rows:
                self._finishing.pop(inst.id, None)

    async def _commit_finals(
        self, rows: list[tuple[WorkflowInstance, list[tuple[str, tuple[Any, ...]]]]],
    ) -> None:
        """One transaction; then the exits these rows hold can be forgotten by the forker.
        Kept until the database takes it, however long an outage lasts: it is the only copy
        of these instances' final state."""
        await self.storage.transaction(functools.partial(
            _run_all, [statement for _, statements in rows for statement in statements]),
            keep=True)
        for inst, _ in rows:
            for tid in self._unsaved_exits.pop(inst, ()):
                self.server.runner.ack(tid)

    def _row(self, inst: WorkflowInstance, xml: str, status: str,
             end: str | None) -> tuple[str, tuple[Any, ...]]:
        """The full row of an instance (levels 0 and 1 write nothing before)."""
        return (
            "INSERT INTO t_workflow_instance (workflow_instance_id, node_name, workflow_id, "
            "workflow_schedule_id, workflow_instance_host, workflow_instance_start, "
            "workflow_instance_end, workflow_instance_status, workflow_instance_errors, "
            "workflow_instance_comment, workflow_instance_savepoint) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (inst.id, self.server.node, inst.workflow_id, inst.schedule_id,
             inst.doc.get("host", ""), inst.doc.get("start_time", now()), end, status,
             inst.errors, inst.doc.get("comment", ""), xml),
        )

    async def _end_values(self, inst: WorkflowInstance) -> list[tuple[str, tuple[Any, ...]]]:
        """workflow.md §4.15: the rows of the searchable custom attributes and automatic
        tags (tags missing from ``t_tag`` are created first)."""
        root = inst.doc
        if not any(True for _ in root.iterchildren("custom-attributes", "automatic-tags")):
            return []
        try:
            values, tags = inst.eval.end_values(root)
        except Exception as e:
            log.warning("[WID %s] Custom attributes/tags: %s", inst.id, e)
            return []
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "INSERT INTO t_workflow_instance_filters (workflow_instance_id, "
            "workflow_instance_filter, workflow_instance_filter_value) VALUES (%s, %s, %s)",
            (inst.id, name, value[:255])) for name, value in values]
        for label in tags:
            tag_id = await self.server.tags.ensure(label)
            statements.append((
                "INSERT INTO t_workflow_instance_tag (tag_id, workflow_instance_id) "
                "VALUES (%s, %s)", (tag_id, inst.id)))
        return statements

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def suspend_all(self) -> None:
        """Clean shutdown: save every running instance as it is (workflow.md §4.13.2). Exits
        arriving from now on stay in the forker's journal for the next start."""
        await self.server.runner.stop()
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        for inst in list(self.active.values()):
            inst.suspend()
            xml = etree.tostring(inst.doc, encoding="unicode")
            if self.level >= 2:
                self.storage.write(
                    "UPDATE t_workflow_instance SET workflow_instance_savepoint = %s "
                    "WHERE workflow_instance_id = %s", (xml, inst.id))
            else:
                await self.storage.execute(*self._row(inst, xml, "EXECUTING", None))
            log.log(25, "[WID %s] Suspended during shutdown", inst.id)
            if not inst.done.done():
                inst.done.cancel()
        self.active.clear()
        if self._pending:
            await asyncio.wait(list(self._pending))
        await self.storage.flush()
        for tids in self._unsaved_exits.values():
            for tid in tids:
                self.server.runner.ack(tid)
        self._unsaved_exits.clear()

    # -- resume at start-up (workflow.md §4.13.3) -------------------------------------------
    async def resume(self) -> None:
        """Rebuild this node's EXECUTING instances from their savepoints."""
        rows = await self.storage.query(
            "SELECT workflow_instance_id, workflow_id, workflow_schedule_id, "
            "workflow_instance_savepoint FROM t_workflow_instance "
            "WHERE workflow_instance_status = 'EXECUTING' AND node_name = %s "
            "ORDER BY workflow_instance_id", (self.server.node,))
        for instance_id, workflow_id, schedule_id, savepoint in rows:
            if not savepoint:
                await self.storage.execute(
                    "UPDATE t_workflow_instance SET workflow_instance_status = 'TERMINATED' "
                    "WHERE workflow_instance_id = %s", (instance_id,))
                continue
            try:
                doc = parse_document(savepoint)
            except etree.XMLSyntaxError:
                log.error("[WID %s] Invalid savepoint, cannot resume", instance_id)
                continue
            log.log(25, "[WID %s] Resuming", instance_id)
            doc.set("id", str(instance_id))
            inst = WorkflowInstance(self, instance_id, workflow_id, doc, schedule_id=schedule_id)
            self._register(inst)
            if doc.get("status") == "EXECUTING":
                self.restore(inst)
            else:  # the daemon died right after the launch: start it again
                inst.start()
                self._adopt_spawned(inst)
        if self.level < 2:
            await self._forget_suspended()

    async def _forget_suspended(self) -> None:
        """Levels 0/1: the rows written at shutdown are deleted once resumed, as the original
        does (only this node's, and ids are not handed out again: ops.md §1.5, §3.4). Ids of
        tasks the forker still knows stay reserved too: a new instance must not take them."""
        await self.storage.execute(
            "DELETE FROM t_workflow_instance WHERE workflow_instance_status = 'EXECUTING' "
            "AND node_name = %s", (self.server.node,))
        self._next_id = max(self._next_id, self.server.runner.max_instance_id() + 1)

    def _adopt_spawned(self, inst: WorkflowInstance) -> None:
        """Tasks the previous run had spawned although the savepoint still shows them queued
        are running (or ran): take them out of their queue and attach to them, so that their
        exit (maybe replayed already) is collected and nothing runs twice."""
        runner = self.server.runner
        for run in list(inst.runs):
            if run.task.get("status") == "QUEUED" and runner.knows_task(run):
                runner.adopt_queued(run)

    def restore(
        self, inst: WorkflowInstance, *, adopt: bool = True,
        lost_message: str = "Task process was lost while the engine was down",
    ) -> None:
        """Re-attach a rebuilt document's tasks: tasks the forker knows (running, or exit
        pending — even if the savepoint still says QUEUED) are re-registered, other queued
        ones are queued again, lost executing ones fail, failed ones go through the retry
        decision again."""
        if not adopt and inst.doc.get("status") is None:
            # a migrated instance saved at launch only (its node died before the first
            # progress savepoint): nothing of it ran here, so run it all
            inst.start()
            return
        runner = self.server.runner
        doc = inst.doc
        for node in doc.iter("job", "task", "workflow"):
            for name in _COUNTERS:
                node.attrib.pop(name, None)
        inst.eval.reindex()
        for node in doc.iter("job", "task"):
            if node.get("status") == "WAITING":
                inst.waiting.append((node, inst.eval.context_of(node)))
                inst._count(job_of(node) if node.tag == "task" else node,
                            "waiting_conditions", 1)
        lost = []
        for task in list(doc.iter("task")):
            status = task.get("status")
            tid = runner.tid_of(inst.id, task) if task.get("evqid") else 0
            if adopt and tid and status in ("EXECUTING", "QUEUED") and runner.knows(tid):
                runner.adopt(inst, task, tid)
            elif status == "QUEUED":
                inst.enqueue(TaskRun(inst, task))
            elif status == "EXECUTING":
                lost.append(task)
            elif status == "TERMINATED" and task.get("retval") not in ("0", None):
                run = TaskRun(inst, task)
                if not inst.schedule_retry(run):
                    inst._task_error(task)
        for task in lost:
            runner.lost(inst, task, lost_message)
        self.events.publish("INSTANCE_STARTED", inst.id)
        inst.check_end()

    def queues_cancel(self, inst: WorkflowInstance) -> None:
        """Cancel: move the instance's queued tasks to the head of their queues (§4.14)."""
        for queue in list(self.queues.queues.values()):
            taken = queue.remove_where(lambda run: run.instance is inst)
            if taken:
                self.queues.enqueue_urgent(queue, taken)

    # -- lookups -------------------------------------------------------------------------
    def active_or_error(self, instance_id: int, message: str) -> WorkflowInstance:
        inst = self.active.get(instance_id)
        if inst is None:
            raise ApiError("UNKNOWN_INSTANCE", message)
        return inst

    async def document(self, instance_id: int) -> tuple[int, etree._Element]:
        """``instance query``: the live document, else the stored one (protocol.md §3.6.2)."""
        inst = self.active.get(instance_id)
        if inst is not None:
            return inst.workflow_id, _copy(inst.doc)
        finishing = self._finishing.get(instance_id)
        if finishing is not None:
            return finishing[0], parse_document(finishing[1])
        row = await self.storage.query_one(
            "SELECT workflow_id, workflow_instance_status, workflow_instance_savepoint "
            "FROM t_workflow_instance WHERE workflow_instance_id = %s", (instance_id,))
        if row is None:
            raise ApiError("UNKNOWN_INSTANCE", "Unknown workflow instance")
        workflow_id, status, savepoint = row
        if status != "TERMINATED":
            raise ApiError("WRONG_NODE", "Workflow instance is still running on another node, "
                           "query the corresponding node")
        if savepoint is None:
            raise ApiError("INVALID_XML", "Invalid workflow XML")
        try:
            return workflow_id, parse_document(savepoint)
        except etree.XMLSyntaxError:
            raise ApiError(None, "Invalid XML document") from None

    async def workflow_of(self, instance_id: int, *, missing_ok: bool = False) -> int:
        inst = self.active.get(instance_id)
        if inst is not None:
            return inst.workflow_id
        row = await self.storage.query_one(
            "SELECT workflow_id FROM t_workflow_instance WHERE workflow_instance_id = %s",
            (instance_id,))
        if row is None:
            if missing_ok:
                return 0
            raise ApiError("UNKNOWN_INSTANCE", "Instance ID not found")
        return row[0]

    # -- actions -------------------------------------------------------------------------
    async def delete(self, instance_id: int) -> None:
        await self.storage.flush()

        def tx(t: Any) -> int:
            n = t.execute(
                "DELETE FROM t_workflow_instance WHERE workflow_instance_id = %s AND "
                "workflow_instance_status = 'TERMINATED'", (instance_id,)).rowcount
            if n:
                for table in ("t_workflow_instance_parameters", "t_workflow_instance_filters",
                              "t_datastore", "t_workflow_instance_tag"):
                    t.execute(f"DELETE FROM {table} WHERE workflow_instance_id = %s",
                              (instance_id,))
            return n

        if instance_id in self._finishing or not await self.storage.transaction(tx):
            raise ApiError("UNKNOWN_INSTANCE", "Instance ID not found")
        self.events.publish("INSTANCE_REMOVED", instance_id)

    async def tag(self, instance_id: int, tag_id: int) -> None:
        if not self.server.tags.exists(tag_id):
            raise ApiError("UNKNOWN_TAG", "Unknown Tag")
        await self.storage.flush()
        row = await self.storage.query_one(
            "SELECT workflow_instance_status FROM t_workflow_instance "
            "WHERE workflow_instance_id = %s", (instance_id,))
        if row is None:
            raise ApiError("UNKNOWN_INSTANCE", "Instance ID not found")
        if row[0] != "TERMINATED" or instance_id in self._finishing:
            raise ApiError("INSTANCE_IS_RUNNING", "Instance is not terminated")
        if await self.storage.query_one(
            "SELECT 1 FROM t_workflow_instance_tag WHERE tag_id = %s AND "
            "workflow_instance_id = %s", (tag_id, instance_id)):
            raise ApiError("INSTANCE_ALREADY_TAGGED", "Instance is already tagged")
        await self.storage.execute(
            "INSERT INTO t_workflow_instance_tag (tag_id, workflow_instance_id) VALUES (%s, %s)",
            (tag_id, instance_id))
        self.events.publish("INSTANCE_TAGGED", instance_id)

    async def untag(self, instance_id: int, tag_id: int) -> None:
        result = await self.storage.execute(
            "DELETE FROM t_workflow_instance_tag WHERE tag_id = %s AND workflow_instance_id = %s",
            (tag_id, instance_id))
        if not result.rowcount:
            raise ApiError("UNKNOWN_TAG_OR_INSTANCE", "Instance ID or tag ID not found")
        self.events.publish("INSTANCE_UNTAGGED", instance_id)

    async def debug_resume(self, instance_id: int) -> WorkflowInstance:
        """Clone a terminated instance and re-run what failed (workflow.md §4.14)."""
        await self.storage.flush()
        row = await self.storage.query_one(
            "SELECT workflow_id, workflow_instance_host, workflow_instance_comment, "
            "workflow_instance_savepoint FROM t_workflow_instance WHERE "
            "workflow_instance_id = %s AND workflow_instance_status = 'TERMINATED'",
            (instance_id,))
        if row is None or not row[3] or instance_id in self._finishing:
            raise ApiError(None, "Unable to find instance to resume, or instance is not "
                           "terminated")
        workflow_id, host, comment, savepoint = row
        doc = parse_document(savepoint)
        for attr in ("end_time", "errors"):
            doc.attrib.pop(attr, None)
        doc.set("status", "EXECUTING")
        for task in doc.iter("task"):
            if task.get("status") == "TERMINATED" and task.get("retval") not in ("0", None):
                for attr in ("retry_schedule_level", "retry_times", "retry_at", "progression",
                             "error", "retval", "execution_time", "status"):
                    task.attrib.pop(attr, None)
                task.set("status", "QUEUED")
        new_id = await self._new_id(doc, workflow_id, 0, host or "", comment or "")
        inst = WorkflowInstance(self, new_id, workflow_id, doc, schedule_id=0)
        self._register(inst)
        self.restore(inst, adopt=False)
        self.savepoint_progress(inst)
        return inst

    async def migrate(self, instance_id: int) -> None:
        """Adopt an instance left EXECUTING by another (dead) node (ops.md §1.5)."""
        row = await self.storage.query_one(
            "SELECT workflow_id, workflow_schedule_id, workflow_instance_savepoint, node_name "
            "FROM t_workflow_instance WHERE workflow_instance_id = %s AND "
            "workflow_instance_status = 'EXECUTING' AND node_name <> %s",
            (instance_id, self.server.node))
        if row is None or not row[2]:
            raise ApiError(None, "Workflow ID not found or already belongs to this node")
        workflow_id, schedule_id, savepoint, owner = row
        if await self.server.cluster.node_alive(owner):
            raise ApiError(None, f"Workflow instance {instance_id} runs on node {owner}, "
                                 "which is alive")
        # only from the owner read above: of two nodes migrating it at once, one adopts it
        # (this node too: an UPDATE replayed after a lost connection still counts)
        adopted = await self.storage.execute(
            "UPDATE t_workflow_instance SET node_name = %s WHERE workflow_instance_id = %s "
            "AND node_name IN (%s, %s) AND workflow_instance_status = 'EXECUTING'",
            (self.server.node, instance_id, owner, self.server.node))
        if adopted.rowcount != 1:
            raise ApiError(None, "Workflow ID not found or already belongs to this node")
        inst = WorkflowInstance(self, instance_id, workflow_id, parse_document(savepoint),
                                schedule_id=schedule_id)
        self._register(inst)
        self.restore(inst, adopt=False, lost_message="Task migrated")

    # -- history -------------------------------------------------------------------------
    async def list(
        self, *, user: User, filter_id: int, filter_node: str, filter_workflow: str,
        filter_launched_from: str, filter_launched_until: str, filter_ended_from: str,
        filter_ended_until: str, filter_status: str, filter_error: bool, filter_tag_id: int,
        filter_schedule_id: int, parameters: dict[str, str], custom: dict[str, str],
        groupby: str, limit: int, offset: int,
    ) -> tuple[int, list[tuple[dict[str, str], list[tuple[int, str]] | None]]]:
        """``instances list`` (protocol.md §3.6.3, errata 16): rows and the matching total."""
        await self.storage.flush()
        # Each filter: which count table can answer it too ("group": per workflow, node,
        # status and errors; "tag": per tag and workflow; "both"; None: neither), its clause on
        # the instances and on that count table. A clause applies when its value is set
        # (dates must parse). A known workflow is filtered by id, which the instances' indexes
        # start with (a name only just created on another node is looked up in t_workflow).
        known = self.server.workflows.find_by_name(filter_workflow) if filter_workflow else None
        filters: list[tuple[str | None, Any, str, str]] = [
            (None, filter_id, "wi.workflow_instance_id = %s", ""),
            ("group", filter_node, "wi.node_name = %s", "c.node_name = %s"),
            ("both", known.id, "wi.workflow_id = %s", "c.workflow_id = %s") if known else
            ("both", filter_workflow, "w.workflow_name = %s", "w.workflow_name = %s"),
            (None, _date(filter_launched_from), "wi.workflow_instance_start >= %s", ""),
            (None, _date(filter_launched_until), "wi.workflow_instance_start <= %s", ""),
            (None, _date(filter_ended_from), "wi.workflow_instance_end >= %s", ""),
            (None, _date(filter_ended_until), "wi.workflow_instance_end <= %s", ""),
            ("group", filter_status, "wi.workflow_instance_status = %s",
             "c.workflow_instance_status = %s"),
            ("tag", filter_tag_id, "wi.workflow_instance_id IN (SELECT workflow_instance_id "
                                   "FROM t_workflow_instance_tag WHERE tag_id = %s)",
             "c.tag_id = %s"),
            (None, filter_schedule_id, "wi.workflow_schedule_id = %s", ""),
        ]
        if not user.is_admin:
            readable = [wid for wid in self.server.workflows.ids() if user.can(wid, "read")]
            if not readable:
                return 0, []
            ids = ",".join(str(w) for w in readable)
            filters.append(("both", True, f"wi.workflow_id IN ({ids})",
                            f"c.workflow_id IN ({ids})"))
        if filter_error:
            filters.append(("group", True, "wi.workflow_instance_errors > 0", "c.with_errors = 1"))
        for table, column, pairs in (
            ("t_workflow_instance_parameters", "workflow_instance_parameter", parameters),
            ("t_workflow_instance_filters", "workflow_instance_filter", custom),
        ):
            filters += [(None, (name, value), f"wi.workflow_instance_id IN (SELECT "
                         f"workflow_instance_id FROM {table} WHERE {column} = %s AND "
                         f"{column}_value = %s)", "") for name, value in pairs.items()]
        active = [f for f in filters if f[1]]
        args = [a for f in active if f[1] is not True
                for a in (f[1] if isinstance(f[1], tuple) else (f[1],))]
        where = " AND ".join(["1=1", *(f[2] for f in active)])
        base = _from_instances(self.storage.dialect, where)
        if groupby:
            return await self._list_grouped(base, args, groupby, limit, offset)
        total, counts = await self._total(active, where, base, args,
                                          by_name=bool(filter_workflow) and known is None)
        if counts == TAG_COUNT_TABLE and await self._walk_end_order(total, offset + limit):
            base = _from_instances(self.storage.dialect, where, _END_INDEX[self.storage.dialect])
        bound: list[Any] = []
        if 0 < limit and offset + limit < total:
            # the page's last end time, read in index order (no sort), bounds what the ORDER
            # BY below sorts to about one page (ended rows come first, so none is lost)
            edge = await self.storage.query_one(
                f"SELECT wi.workflow_instance_end {base} AND wi.workflow_instance_end IS NOT "
                "NULL ORDER BY wi.workflow_instance_end DESC LIMIT 1 OFFSET %s",
                [*args, offset + limit - 1])
            if edge is not None:
                bound = [edge[0]]
        rows = await self.storage.query(
            "SELECT wi.workflow_instance_id, w.workflow_name, wi.node_name, "
            "wi.workflow_instance_host, wi.workflow_instance_start, wi.workflow_instance_end, "
            "wi.workflow_instance_errors, wi.workflow_instance_status, "
            f"wi.workflow_schedule_id, wi.workflow_instance_comment {base} "
            f"{'AND wi.workflow_instance_end >= %s ' if bound else ''}"
            "ORDER BY wi.workflow_instance_end IS NULL, wi.workflow_instance_end DESC, "
            "wi.workflow_instance_id LIMIT %s OFFSET %s", [*args, *bound, limit, offset])
        tags: dict[int, list[tuple[int, str]]] = {r[0]: [] for r in rows}
        if rows:
            ids = ",".join(str(r[0]) for r in rows)
            for iid, tid, label in await self.storage.query(
                "SELECT it.workflow_instance_id, t.tag_id, t.tag_label FROM "
                "t_workflow_instance_tag it JOIN t_tag t ON t.tag_id = it.tag_id "
                f"WHERE it.workflow_instance_id IN ({ids}) ORDER BY t.tag_label"):
                tags[iid].append((tid, label))
        items = []
        for iid, name, node, host, start, end, errors, status, schedule_id, comment in rows:
            attrs = {"id": str(iid), "name": name, "node_name": node or ""}
            if host is not None:
                attrs["host"] = host
            attrs.update(start_time=start or "", end_time=end or "",
                         errors=str(errors or 0), status=status)
            if schedule_id is not None:
                attrs["schedule_id"] = str(schedule_id)
            attrs["comment"] = comment or ""
            items.append((attrs, tags[iid]))
        return total, items

    async def _total(self, active: list[tuple[str | None, Any, str, str]], where: str,
                     base: str, args: list[Any], by_name: bool) -> tuple[int, str | None]:
        """The exact number of matching instances, and the count table it was read from
        (None: counted). ``by_name``: a clause reads ``t_workflow``'s name."""
        kinds = {f[0] for f in active}
        if not self.storage.instance_counts or None in kinds or {"tag", "group"} <= kinds:
            counts = None
        else:
            counts = TAG_COUNT_TABLE if "tag" in kinds else COUNT_TABLE
        if counts is not None:
            sql = (f"SELECT COALESCE(SUM(c.instance_count), 0) FROM {counts} c JOIN t_workflow w "
                   "ON w.workflow_id = c.workflow_id WHERE "
                   + " AND ".join(["1=1", *(f[3] for f in active)]))
        elif self.storage.dialect == "mysql" and not by_name:
            # InnoDB joins each matching instance to its workflow: counting per workflow
            # first, then joining the few groups, halves the cost (SQLite's planner would
            # read the whole workflow index for the grouping instead)
            sql = ("SELECT COALESCE(SUM(g.n), 0) FROM (SELECT wi.workflow_id, COUNT(*) AS n FROM "
                   f"t_workflow_instance wi WHERE {where} GROUP BY wi.workflow_id) g JOIN "
                   "t_workflow w ON w.workflow_id = g.workflow_id")
        else:
            sql = f"SELECT COUNT(*) {base}"
        return int((await self.storage.query_one(sql, args))[0]), counts

    async def _walk_end_order(self, matches: int, needed: int) -> bool:
        """Whether reading instances in end order and keeping the tagged ones finds a page
        sooner than reading every tagged instance and sorting them: about ``needed`` × (all
        instances / ``matches``) index entries against ``matches`` row reads."""
        everything = (await self.storage.query_one(
            f"SELECT COALESCE(SUM(instance_count), 0) FROM {COUNT_TABLE}"))[0]
        return matches * matches > needed * int(everything)

    async def _list_grouped(self, base: str, args: list[Any], groupby: str, limit: int,
                            offset: int) -> tuple[int, list[tuple[dict[str, str], None]]]:
        """Counts per workflow, node and period; an unknown period groups by workflow and
        node only (errata 16)."""
        parts = _PERIODS[: _PERIODS.index(groupby) + 1] if groupby in _PERIODS else ()
        exprs = [f"SUBSTR(wi.workflow_instance_start, {_SLICES[p][0]}, {_SLICES[p][1]})"
                 for p in parts]
        cols = ", ".join(["w.workflow_name", "wi.node_name", *exprs])
        order = ", ".join([*(f"{e} DESC" for e in exprs), "w.workflow_name", "wi.node_name"])
        rows = await self.storage.query(
            f"SELECT {cols}, COUNT(*) {base} GROUP BY {cols} ORDER BY {order}", args)
        items = []
        for row in rows[offset:offset + limit]:
            attrs = {"name": row[0], "node_name": row[1] or ""}
            for p, v in zip(parts, row[2:-1], strict=True):
                attrs[p] = str(int(v))
            attrs["count"] = str(row[-1])
            items.append((attrs, None))
        return len(rows), items


def _from_instances(dialect: str, where: str, index_hint: str = "") -> str:
    """``FROM`` the instances joined to their (still existing) workflow, ``WHERE`` ``where``.
    MariaDB would start from t_workflow's few rows and sort every instance they join:
    STRAIGHT_JOIN makes it read the instances first, in the order of their filter's index."""
    join = "STRAIGHT_JOIN" if dialect == "mysql" else "JOIN"
    return (f"FROM t_workflow_instance wi {index_hint} {join} t_workflow w "
            f"ON w.workflow_id = wi.workflow_id WHERE {where}")


def _insert_instance(row: tuple[Any, ...], parameters: list[tuple[str, str]], t: Tx) -> int:
    """The launch row and the searchable parameters, committed together; returns the id."""
    instance_id = t.execute(
        "INSERT INTO t_workflow_instance (node_name, workflow_id, workflow_schedule_id, "
        "workflow_instance_host, workflow_instance_start, workflow_instance_status, "
        "workflow_instance_comment, workflow_instance_savepoint) "
        "VALUES (%s, %s, %s, %s, %s, 'EXECUTING', %s, %s)", row).lastrowid
    for name, value in parameters:
        t.execute("INSERT INTO t_workflow_instance_parameters (workflow_instance_id, "
                  "workflow_instance_parameter, workflow_instance_parameter_value) "
                  "VALUES (%s, %s, %s)", (instance_id, name, value))
    return instance_id


def _run_all(statements: list[tuple[str, tuple[Any, ...]]], t: Tx) -> None:
    for sql, args in statements:
        t.execute(sql, args)


_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$")


def _date(value: str) -> str:
    """A date filter, or "" (ignored) when malformed, as the original (errata 16)."""
    return value if _DATETIME.match(value) else ""


def _copy(doc: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(doc))
