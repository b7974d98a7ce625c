"""Queues: global concurrency limits shared by every workflow (workflow.md §5).

A queue holds waiting tasks and counts running ones. ``fifo`` dispatches in enqueue order,
``prio`` the oldest instance first. Dynamic queues split per host into ``name@host`` sub-queues
with the parent's limits. Dispatch is event-driven: whenever a task is enqueued or a slot frees,
the pool starts whatever can start now (queues in name order, like the original).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evqueue.engine.events import EventBus
from evqueue.storage.base import Storage

QueueItem = Any  # the engine's queued-task handle; opaque to the pool


@dataclass
class Queue:
    id: int
    name: str
    concurrency: int
    scheduler: str  # configured value: fifo | prio | default
    dynamic: bool
    default_scheduler: str = "fifo"
    running: int = 0
    #: heap of (key, seq, item); key = seq (fifo) or instance id (prio)
    _waiting: list[tuple[int, int, QueueItem]] = field(default_factory=list)
    #: cancelled tasks jump the line and ignore the limit (workflow.md §4.14)
    _urgent: list[QueueItem] = field(default_factory=list)
    deleted: bool = False
    #: set on the per-host sub-queues of a dynamic queue (``name@host``), not in the DB
    parent: str = ""

    @property
    def effective_scheduler(self) -> str:
        return self.default_scheduler if self.scheduler == "default" else self.scheduler

    @property
    def size(self) -> int:
        return len(self._waiting) + len(self._urgent)

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.size == 0

    def push(self, item: QueueItem, instance_id: int, seq: int) -> None:
        key = instance_id if self.effective_scheduler == "prio" else seq
        heapq.heappush(self._waiting, (key, seq, item))

    def can_dispatch(self) -> bool:
        return bool(self._urgent) or (bool(self._waiting) and self.running < self.concurrency)

    def pop(self) -> QueueItem:
        if self._urgent:
            return self._urgent.pop(0)
        return heapq.heappop(self._waiting)[2]

    def remove_where(self, pred: Callable[[QueueItem], bool]) -> list[QueueItem]:
        """Take out the waiting items matching ``pred`` (cancel moves them to the front)."""
        taken = [e[2] for e in self._waiting if pred(e[2])]
        if taken:
            self._waiting = [e for e in self._waiting if not pred(e[2])]
            heapq.heapify(self._waiting)
        return taken

    def resort(self) -> None:
        """Re-key the waiting list after a scheduler change."""
        items = self._waiting
        self._waiting = []
        for _key, seq, item in items:
            k = item.instance_id if self.effective_scheduler == "prio" else seq
            heapq.heappush(self._waiting, (k, seq, item))


class UnknownQueue(Exception):
    pass


class QueuePool:
    """All live queues of this node, their definitions and the dispatcher."""

    def __init__(self, storage: Storage, default_scheduler: str, events: EventBus) -> None:
        self._storage = storage
        self._events = events
        self._default_scheduler = default_scheduler
        self.queues: dict[str, Queue] = {}
        self._seq = itertools.count()
        #: set by the engine: starts one dequeued item (must not raise)
        self.start_task: Callable[[Queue, QueueItem], None] = lambda q, item: None
        self._dispatching = False

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT queue_id, queue_name, queue_concurrency, queue_scheduler, queue_dynamic "
            "FROM t_queue"
        )
        seen = set()
        for qid, name, concurrency, scheduler, dynamic in rows:
            seen.add(name)
            q = self.queues.get(name)
            if q is None or q.idle:
                self.queues[name] = Queue(qid, name, concurrency, scheduler, bool(dynamic),
                                          self._default_scheduler)
                continue
            q.id, q.deleted = qid, False
            changed = q.scheduler != scheduler
            q.concurrency, q.scheduler = concurrency, scheduler
            if changed:
                q.resort()
        for name, q in list(self.queues.items()):
            if name in seen or q.parent in seen:
                continue
            if q.idle:
                del self.queues[name]
            else:
                q.deleted = True
        self.dispatch()

    def definitions(self) -> list[Queue]:
        """Configured queues (and live sub-queues) sorted by name, as ``queuepool list``."""
        return [self.queues[n] for n in sorted(self.queues)]

    def live_queues(self) -> list[Queue]:
        return self.definitions()

    def get_by_id(self, queue_id: int) -> Queue | None:
        for q in self.queues.values():
            if q.id == queue_id and not q.parent:
                return q
        return None

    def resolve(self, name: str, host: str | None) -> Queue:
        """The queue a task goes to; dynamic queues split per host (§5.3)."""
        q = self.queues.get(name)
        if q is None or q.deleted:
            raise UnknownQueue(name)
        if q.dynamic and host:
            sub_name = f"{name}@{host}"
            sub = self.queues.get(sub_name)
            if sub is None:
                sub = Queue(q.id, sub_name, q.concurrency, q.scheduler, False,
                            self._default_scheduler, parent=name)
                self.queues[sub_name] = sub
            return sub
        return q

    def enqueue(self, queue: Queue, item: QueueItem, instance_id: int) -> None:
        queue.push(item, instance_id, next(self._seq))
        self._events.publish("QUEUE_ENQUEUE")
        self.dispatch()

    def enqueue_urgent(self, queue: Queue, items: list[QueueItem]) -> None:
        queue._urgent.extend(items)
        self.dispatch()

    def adopt_running(self, queue: Queue) -> None:
        """Count a task found running at restart against its queue's limit."""
        queue.running += 1

    def release(self, queue: Queue) -> None:
        """A task of ``queue`` stopped: free its slot, drop empty leftovers, start the next."""
        queue.running -= 1
        self._events.publish("QUEUE_TERMINATE")
        if queue.idle and (queue.deleted or queue.parent):
            self.queues.pop(queue.name, None)
        self.dispatch()

    def dispatch(self) -> None:
        """Start every task that can start now: the first dispatchable queue in name order
        gives one task, then the scan starts over (§5.2). Re-entrant calls (a start that
        fails frees its slot) are absorbed by the running pass."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            progress = True
            while progress:
                progress = False
                for name in sorted(self.queues):
                    q = self.queues.get(name)
                    if q is not None and q.can_dispatch():
                        item = q.pop()
                        q.running += 1
                        self._events.publish("QUEUE_DEQUEUE")
                        self.start_task(q, item)
                        progress = True
                        break
        finally:
            self._dispatching = False
