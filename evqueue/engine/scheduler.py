"""Workflow schedules firing (workflow.md §7.3–7.4).

Each active schedule of this node owns one timer on the event loop (the loop's own heap), armed
for its next occurrence: no periodic scan, and one schedule's long run never delays another
(the original made schedules wait for each other). A schedule is not re-armed while its
instance runs; it is re-armed from the end of that instance, so an every-second schedule starts
at every second at which the previous run has ended.

Across a restart: a schedule whose instance is resumed counts as running until that instance
ends; every other schedule is armed from now. Occurrences that fell while the daemon was down
are not run afterwards (like the original), and an occurrence already run is never run again,
since the next occurrence is always strictly after the current time. A step of the wall clock
re-arms every schedule from the new time (occurrences stepped over are not run either).

``any`` schedules run on one node per occurrence (a claim row in the database). While one node
runs an instance of such a schedule it holds a lease row ``running_<id>``, renewed every
:data:`LEASE_PERIOD` seconds and dropped at the end of the instance: a node that wins a later
occurrence skips it while another node's lease is fresh, and a dead node's lease simply expires
(:func:`evqueue.engine.cluster.take_lease` takes it over atomically).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from evqueue.engine import cluster
from evqueue.log import NOTICE
from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.engine.instance import WorkflowInstance
    from evqueue.engine.workflow_schedules import WorkflowSchedule
    from evqueue.server import Server

log = logging.getLogger(__name__)

#: The loop's clock is monotonic: a wall-clock step (or a suspended machine) would make every
#: timer fire at the wrong wall-clock time. One timer compares both clocks this often and
#: re-arms every schedule when they moved apart by more than CLOCK_STEP seconds.
CLOCK_CHECK = 60.0
CLOCK_STEP = 1.0
#: Lease of a running ``any`` schedule: renewal period and age after which it is stale.
LEASE_PERIOD = 2.0
LEASE_TTL = 3 * LEASE_PERIOD


def _lease(schedule_id: int) -> str:
    return f"running_{schedule_id}"


class Scheduler:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.node = server.node
        #: schedule id → (timer, fire time, schedule string it was computed from)
        self._timers: dict[int, tuple[asyncio.TimerHandle, float, str]] = {}
        #: schedule id → id of its running instance (0 while the launch is in flight)
        self.running: dict[int, int] = {}
        #: ``any`` schedules whose running instance this node holds the lease of
        self._leases: set[int] = set()
        self._lease_timer: asyncio.TimerHandle | None = None
        self._clock_timer: asyncio.TimerHandle | None = None
        self._clock_offset = 0.0  # wall clock minus loop clock at the last check
        self._tasks: set[asyncio.Task] = set()
        self._started = False

    def _mine(self, schedule: WorkflowSchedule) -> bool:
        return schedule.runnable_on(self.node)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        """Re-read the schedules and re-arm them all from now (§7.4)."""
        await self.server.workflow_schedules.reload()
        if self._started:
            self._arm_all()

    def start(self) -> None:
        for inst in self.server.instances.active.values():
            if inst.schedule_id:
                self.running[inst.schedule_id] = inst.id
                schedule = self.server.workflow_schedules.get(inst.schedule_id)
                if schedule is not None and schedule.node == "any":
                    self._spawn(self._resume_lease(inst.schedule_id))
        self._started = True
        self._arm_all()
        self._clock_offset = time.time() - asyncio.get_running_loop().time()
        self._arm_clock_check()

    def stop(self) -> None:
        self._started = False
        self._cancel_timers()
        for handle in (self._lease_timer, self._clock_timer):
            if handle is not None:
                handle.cancel()
        self._lease_timer = self._clock_timer = None

    def _cancel_timers(self) -> None:
        for handle, _, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _arm_clock_check(self) -> None:
        self._clock_timer = asyncio.get_running_loop().call_later(CLOCK_CHECK,
                                                                   self._check_clock)

    def _check_clock(self) -> None:
        offset = time.time() - asyncio.get_running_loop().time()
        step, self._clock_offset = offset - self._clock_offset, offset
        if abs(step) > CLOCK_STEP:
            log.warning("The wall clock moved by %+.0f s: re-arming every schedule", step)
            self._cancel_timers()
            self._arm_all()
        self._arm_clock_check()

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
        wall = time.time()
        at = schedule.next_time(wall)
        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + max(0.0, at - wall), self._fire, schedule.id, at)
        self._timers[schedule.id] = (handle, at, schedule.schedule)

    def _fire(self, schedule_id: int, at: float) -> None:
        self._timers.pop(schedule_id, None)
        schedule = self.server.workflow_schedules.get(schedule_id)
        if schedule is None or not self._mine(schedule) or schedule_id in self.running:
            return
        if time.time() < at:  # woke early (the wall clock went back): wait for the real second
            self._arm(schedule)
            return
        self.running[schedule_id] = 0
        self._spawn(self._launch(schedule, at))

    async def _launch(self, schedule: WorkflowSchedule, at: float) -> None:
        server = self.server
        try:
            if schedule.node == "any" and not await self._claim_any(schedule.id, at):
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
            self._release_lease(schedule.id)
            self._rearm(schedule.id)
            return
        log.log(NOTICE, "[WID %s] Instantiated by workflow scheduler", inst.id)
        server.events.publish("WORKFLOWSCHEDULE_STARTED", schedule.id)
        if self.running.get(schedule.id) == 0 and not inst.ended:
            self.running[schedule.id] = inst.id

    async def _claim_any(self, schedule_id: int, at: float) -> bool:
        """Win this occurrence of an ``any`` schedule, then its lease (refused while another
        node runs the schedule)."""
        storage = self.server.storage
        if not await cluster.claim(storage, f"scheduledwf_{schedule_id}_{int(at)}", self.node):
            return False
        if not await cluster.take_lease(storage, _lease(schedule_id), self.node, LEASE_TTL):
            return False
        self._leases.add(schedule_id)
        self._arm_lease_timer()
        return True

    async def _resume_lease(self, schedule_id: int) -> None:
        """Hold the lease of a resumed ``any`` instance again, unless another node took the
        schedule over while this one was down (its run and ours then overlap once)."""
        try:
            taken = await cluster.take_lease(self.server.storage, _lease(schedule_id),
                                             self.node, LEASE_TTL)
        except Exception as e:
            log.error("Workflow schedule %s: could not take its lease back: %s", schedule_id, e)
            return
        if not taken:
            log.warning("Workflow schedule %s was taken over by another node while this one "
                        "was down", schedule_id)
        elif schedule_id in self.running:
            self._leases.add(schedule_id)
            self._arm_lease_timer()
        else:  # the resumed instance ended meanwhile
            cluster.release_lease(self.server.storage, _lease(schedule_id), self.node)

    def _release_lease(self, schedule_id: int) -> None:
        if schedule_id in self._leases:
            self._leases.discard(schedule_id)
            cluster.release_lease(self.server.storage, _lease(schedule_id), self.node)

    def _arm_lease_timer(self) -> None:
        if self._lease_timer is None:
            self._lease_timer = asyncio.get_running_loop().call_later(
                LEASE_PERIOD, self._renew_leases)

    def _renew_leases(self) -> None:
        self._lease_timer = None
        if not self._leases:
            return
        cluster.renew_leases(self.server.storage, [_lease(i) for i in sorted(self._leases)],
                             self.node)
        self._arm_lease_timer()

    def instance_ended(self, inst: WorkflowInstance) -> None:
        schedule_id = inst.schedule_id
        if not schedule_id or schedule_id not in self.running:
            return
        del self.running[schedule_id]
        self._release_lease(schedule_id)
        self.server.events.publish("WORKFLOWSCHEDULE_STOPPED", schedule_id)
        schedule = self.server.workflow_schedules.get(schedule_id)
        if schedule is None:
            return
        if inst.errors and schedule.onfailure == "SUSPEND":
            log.warning("Workflow schedule %s suspended after a failed instance", schedule_id)
            self._spawn(self._suspend(schedule_id))
            return
        self._rearm(schedule_id)

    async def _suspend(self, schedule_id: int) -> None:
        try:
            await self.server.workflow_schedules.set_active(schedule_id, False)
        except Exception as e:
            log.error("Workflow schedule %s could not be suspended: %s", schedule_id, e)
            return
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
