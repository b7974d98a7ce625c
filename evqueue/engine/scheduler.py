"""Workflow schedules firing (workflow.md §7.3–7.4).

Each active schedule of this node owns one timer on the event loop (the loop's own heap), armed
for its next occurrence: no periodic scan, and one schedule's long run never delays another
(the original made schedules wait for each other). A schedule is not re-armed while its
instance runs; it is re-armed from the end of that instance, so an every-second schedule starts
at every second at which the previous run has ended. Runs missed while the daemon was down are
not executed (like the original).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.engine.instance import WorkflowInstance
    from evqueue.engine.workflow_schedules import WorkflowSchedule
    from evqueue.server import Server

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.node = server.node
        #: schedule id → (timer, fire time, schedule string it was computed from)
        self._timers: dict[int, tuple[asyncio.TimerHandle, float, str]] = {}
        #: schedule id → id of its running instance (0 while the launch is in flight)
        self.running: dict[int, int] = {}
        self._started = False

    def _mine(self, schedule: WorkflowSchedule) -> bool:
        return schedule.runnable_on(self.node)

    async def reload(self) -> None:
        """Re-read the schedules and re-arm them all from now (§7.4)."""
        await self.server.workflow_schedules.reload()
        if self._started:
            self._arm_all()

    def start(self) -> None:
        for inst in self.server.instances.active.values():
            if inst.schedule_id:
                self.running[inst.schedule_id] = inst.id
        self._started = True
        self._arm_all()

    def stop(self) -> None:
        self._started = False
        for handle, _, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _arm_all(self) -> None:
        """(Re-)arm every schedule of this node. A timer whose schedule string did not change
        is kept: re-computing it from now would give the same second, and with 10,000
        schedules re-arming everything would stall the loop on every definition change."""
        timers, self._timers = self._timers, {}
        for schedule in self.server.workflow_schedules.all():
            if not self._mine(schedule) or schedule.id in self.running:
                continue
            kept = timers.pop(schedule.id, None)
            if kept is not None and kept[2] == schedule.schedule:
                self._timers[schedule.id] = kept
            else:
                self._arm(schedule)
        for handle, _, _ in timers.values():
            handle.cancel()

    def _arm(self, schedule: WorkflowSchedule) -> None:
        at = schedule.next_time(time.time())
        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + max(0.0, at - time.time()), self._fire,
                              schedule.id, at)
        self._timers[schedule.id] = (handle, at, schedule.schedule)

    def _fire(self, schedule_id: int, at: float) -> None:
        self._timers.pop(schedule_id, None)
        schedule = self.server.workflow_schedules.get(schedule_id)
        if schedule is None or not self._mine(schedule) or schedule_id in self.running:
            return
        if time.time() < at:  # woke early (clock adjusted): wait for the real second
            self._arm(schedule)
            return
        self.running[schedule_id] = 0
        asyncio.ensure_future(self._launch(schedule, at))

    async def _launch(self, schedule: WorkflowSchedule, at: float) -> None:
        server = self.server
        try:
            if schedule.node == "any" and not await server.cluster.claim(
                f"scheduledwf_{schedule.id}_{int(at)}"):
                self.running.pop(schedule.id, None)
                self._rearm(schedule.id)
                return
            workflow = server.workflows.get(schedule.workflow_id)
            inst = await server.instances.launch(
                workflow, schedule.parameters, host=schedule.host or "",
                user=schedule.user or "", schedule_id=schedule.id,
            )
        except Exception as e:
            log.error("Workflow schedule %s could not launch its instance: %s", schedule.id, e)
            self.running.pop(schedule.id, None)
            self._rearm(schedule.id)
            return
        log.log(25, "[WID %s] Instantiated by workflow scheduler", inst.id)
        server.events.publish("WORKFLOWSCHEDULE_STARTED", schedule.id)
        if schedule.id in self.running and self.running[schedule.id] == 0 and not inst.ended:
            self.running[schedule.id] = inst.id

    def instance_ended(self, inst: WorkflowInstance) -> None:
        schedule_id = inst.schedule_id
        if not schedule_id or schedule_id not in self.running:
            return
        del self.running[schedule_id]
        self.server.events.publish("WORKFLOWSCHEDULE_STOPPED", schedule_id)
        schedule = self.server.workflow_schedules.get(schedule_id)
        if schedule is None:
            return
        if inst.errors and schedule.onfailure == "SUSPEND":
            log.warning("Workflow schedule %s suspended after a failed instance", schedule_id)
            asyncio.ensure_future(self._suspend(schedule_id))
            return
        self._rearm(schedule_id)

    async def _suspend(self, schedule_id: int) -> None:
        await self.server.workflow_schedules.set_active(schedule_id, False)
        self.server.cluster.notify_reload("scheduler")

    def _rearm(self, schedule_id: int) -> None:
        schedule = self.server.workflow_schedules.get(schedule_id)
        if self._started and schedule is not None and self._mine(schedule):
            self._arm(schedule)

    def status(self) -> list[dict[str, str]]:
        """Rows of ``status type="scheduler"`` (protocol.md §3.2)."""
        out = []
        workflows = self.server.workflows
        for schedule_id, (_, at, _) in sorted(self._timers.items(), key=lambda kv: kv[1][1]):
            schedule = self.server.workflow_schedules.get(schedule_id)
            if schedule is None:
                continue
            out.append({"workflow_schedule_id": str(schedule_id),
                        "name": workflows.name_of(schedule.workflow_id),
                        "scheduled_at": now(at)})
        for schedule_id, instance_id in sorted(self.running.items()):
            schedule = self.server.workflow_schedules.get(schedule_id)
            name = workflows.name_of(schedule.workflow_id) if schedule else ""
            out.append({"workflow_schedule_id": str(schedule_id), "name": name,
                        "workflow_instance_id": str(instance_id), "scheduled_at": "running"})
        return out
