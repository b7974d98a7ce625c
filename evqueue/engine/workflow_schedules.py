"""Workflow schedule definitions (protocol.md §3.7, workflow.md §7, ops.md §4.3): the cache of
``t_workflow_schedule`` with its parameters and parsed schedule strings, and the checked
mutations. Arming timers is the scheduler's job (:mod:`evqueue.engine.scheduler`); it reads
:meth:`WorkflowSchedules.all` and uses :meth:`WorkflowSchedule.runnable_on` and
:meth:`WorkflowSchedule.next_time`. The caller of a mutation reloads the scheduler.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evqueue.engine.schedule_string import Schedule, parse_schedule
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Tx

if TYPE_CHECKING:
    from evqueue.server import Server

log = logging.getLogger(__name__)

ONFAILURE = ("CONTINUE", "SUSPEND")
#: ``node``: a node name (``cluster.node.name`` rules: printable ASCII, its DB column's size),
#: or ``all`` / ``any``.
_NODE = re.compile(r"[\x20-\x7e]{1,32}")

Parameters = list[tuple[str, str]]


@dataclass(slots=True)
class WorkflowSchedule:
    id: int
    node: str  # a node name, "all" or "any"
    workflow_id: int
    schedule: str
    onfailure: str  # CONTINUE | SUSPEND
    user: str | None
    host: str | None
    active: bool
    comment: str
    parameters: Parameters = field(default_factory=list)
    #: None when the stored string is invalid (written by hand or by another implementation)
    parsed: Schedule | None = None

    def runnable_on(self, node: str) -> bool:
        """Whether ``node`` must arm this schedule (active, valid, node / ``all`` / ``any``)."""
        return self.active and self.parsed is not None and self.node in (node, "all", "any")

    def next_time(self, after: float) -> float:
        """Next occurrence strictly after ``after`` (only for a valid schedule)."""
        if self.parsed is None:
            raise ValueError(f"workflow schedule {self.id} has an invalid schedule string")
        return self.parsed.next_time(after)


def _parsed(schedule_id: int, text: str) -> Schedule | None:
    try:
        return parse_schedule(text)
    except ApiError as e:
        log.error("Workflow schedule %s is ignored: invalid schedule '%s': %s",
                  schedule_id, text, e.message)
        return None


def _reparsed(previous: WorkflowSchedule | None, schedule_id: int, text: str) -> Schedule | None:
    """Reuse the parsed schedule of an unchanged string (reloads with 10,000 schedules)."""
    if previous is not None and previous.schedule == text:
        return previous.parsed
    return _parsed(schedule_id, text)


def _insert_parameters(tx: Tx, schedule_id: int, parameters: Parameters) -> None:
    for name, value in parameters:
        tx.execute(
            "INSERT INTO t_workflow_schedule_parameters (workflow_schedule_id, "
            "workflow_schedule_parameter, workflow_schedule_parameter_value) "
            "VALUES (%s, %s, %s)",
            (schedule_id, name, value),
        )


def _not_found() -> ApiError:
    return ApiError("UNKNOWN_WORKFLOW_SCHEDULE", "Workflow schedule not found")


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """What ``workflow_schedule create|edit`` set."""

    workflow_id: int
    node: str
    schedule: str
    onfailure: str
    user: str
    host: str
    active: bool
    comment: str
    parameters: Parameters

    def row(self) -> tuple[object, ...]:
        """Column values in :data:`_COLUMNS` order; empty user/host are stored NULL."""
        return (self.node, self.workflow_id, self.schedule, self.onfailure, self.user or None,
                self.host or None, int(self.active), self.comment)


_COLUMNS = ("node_name", "workflow_id", "workflow_schedule", "workflow_schedule_onfailure",
            "workflow_schedule_user", "workflow_schedule_host", "workflow_schedule_active",
            "workflow_schedule_comment")


class WorkflowSchedules:
    """Every workflow schedule of the cluster (all nodes)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._storage = server.storage
        self._by_id: dict[int, WorkflowSchedule] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            f"SELECT workflow_schedule_id, {', '.join(_COLUMNS)} FROM t_workflow_schedule")
        parameters: dict[int, Parameters] = {}
        for schedule_id, name, value in await self._storage.query(
            "SELECT workflow_schedule_id, workflow_schedule_parameter, "
            "workflow_schedule_parameter_value FROM t_workflow_schedule_parameters"
        ):
            parameters.setdefault(schedule_id, []).append((name, value or ""))
        old = self._by_id
        self._by_id = {
            sid: WorkflowSchedule(
                sid, node, workflow_id, text, onfailure, user, host, bool(active),
                comment or "", parameters.get(sid, []), _reparsed(old.get(sid), sid, text),
            )
            for sid, node, workflow_id, text, onfailure, user, host, active, comment in rows
        }

    def get(self, schedule_id: int) -> WorkflowSchedule | None:
        return self._by_id.get(schedule_id)

    def all(self) -> list[WorkflowSchedule]:
        """Sorted by id."""
        return [self._by_id[i] for i in sorted(self._by_id)]

    # -- mutations (the caller reloads the scheduler) -------------------------------------
    def _check(self, d: ScheduleDefinition) -> None:
        workflow = self._server.workflows.get(d.workflow_id)
        parse_schedule(d.schedule)
        if d.onfailure not in ONFAILURE:
            raise ApiError("INVALID_PARAMETER", "onfailure must be 'CONTINUE' or 'SUSPEND'")
        if not _NODE.fullmatch(d.node):
            raise ApiError("INVALID_PARAMETER", "Invalid node name")
        workflow.definition.schedule_parameters(d.parameters)

    async def create(self, d: ScheduleDefinition) -> int:
        self._check(d)

        def insert(tx: Tx) -> int:
            schedule_id = tx.execute(
                f"INSERT INTO t_workflow_schedule ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                d.row(),
            ).lastrowid
            _insert_parameters(tx, schedule_id, d.parameters)
            return schedule_id

        return await self._storage.transaction(insert)

    async def edit(self, schedule_id: int, d: ScheduleDefinition) -> None:
        self._check(d)

        def update(tx: Tx) -> bool:
            found = tx.execute(
                f"UPDATE t_workflow_schedule SET {', '.join(c + ' = %s' for c in _COLUMNS)} "
                "WHERE workflow_schedule_id = %s",
                (*d.row(), schedule_id),
            ).rowcount
            if found:
                tx.execute("DELETE FROM t_workflow_schedule_parameters "
                           "WHERE workflow_schedule_id = %s", (schedule_id,))
                _insert_parameters(tx, schedule_id, d.parameters)
            return bool(found)

        if not await self._storage.transaction(update):
            raise _not_found()

    async def delete(self, schedule_id: int) -> None:
        def delete(tx: Tx) -> int:
            tx.execute("DELETE FROM t_workflow_schedule_parameters "
                       "WHERE workflow_schedule_id = %s", (schedule_id,))
            return tx.execute("DELETE FROM t_workflow_schedule WHERE workflow_schedule_id = %s",
                              (schedule_id,)).rowcount

        if not await self._storage.transaction(delete):
            raise _not_found()

    async def set_active(self, schedule_id: int, active: bool) -> bool:
        """Lock/unlock (and ``onfailure=SUSPEND``); False if the schedule does not exist."""
        result = await self._storage.execute(
            "UPDATE t_workflow_schedule SET workflow_schedule_active = %s "
            "WHERE workflow_schedule_id = %s",
            (int(active), schedule_id),
        )
        cached = self._by_id.get(schedule_id)
        if cached is not None:
            cached.active = active
        return bool(result.rowcount)
