"""In-process publish/subscribe of engine events (protocol.md §4.7).

Publishing never blocks the engine: subscribers are plain callables that must only enqueue
(websocket sessions keep bounded queues and drop themselves when they cannot keep up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[str, int], None]

#: Every event name a client may subscribe to (core, storage and git modules).
EVENTS = frozenset(
    """INSTANCE_STARTED INSTANCE_TERMINATED INSTANCE_REMOVED INSTANCE_TAGGED INSTANCE_UNTAGGED
    TASK_ENQUEUE TASK_EXECUTE TASK_TERMINATE TASK_PROGRESS
    QUEUE_ENQUEUE QUEUE_DEQUEUE QUEUE_EXECUTE QUEUE_TERMINATE
    QUEUE_CREATED QUEUE_MODIFIED QUEUE_REMOVED
    WORKFLOW_CREATED WORKFLOW_MODIFIED WORKFLOW_REMOVED WORKFLOW_SUBSCRIBED WORKFLOW_UNSUBSCRIBED
    WORKFLOWSCHEDULE_CREATED WORKFLOWSCHEDULE_MODIFIED WORKFLOWSCHEDULE_REMOVED
    WORKFLOWSCHEDULE_STARTED WORKFLOWSCHEDULE_STOPPED
    RETRYSCHEDULE_CREATED RETRYSCHEDULE_MODIFIED RETRYSCHEDULE_REMOVED
    USER_CREATED USER_MODIFIED USER_REMOVED TAG_CREATED TAG_MODIFIED TAG_REMOVED
    NOTIFICATION_CREATED NOTIFICATION_MODIFIED NOTIFICATION_REMOVED
    NOTIFICATION_TYPE_CREATED NOTIFICATION_TYPE_REMOVED
    LOG_ENGINE LOG_API LOG_NOTIFICATION VARIABLE_SET VARIABLE_UNSET
    LAUNCHER_CREATED LAUNCHER_MODIFIED LAUNCHER_REMOVED
    DISPLAY_CREATED DISPLAY_MODIFIED DISPLAY_REMOVED
    GIT_PULLED GIT_SAVED GIT_LOADED GIT_REMOVED""".split()
)


class EventBus:
    """Fan-out of ``(event name, object id)`` to the current subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)

    def publish(self, name: str, object_id: int = 0) -> None:
        for fn in tuple(self._subscribers):
            try:
                fn(name, object_id)
            except Exception:  # a broken subscriber must not break the engine
                log.exception("Event subscriber failed on %s", name)
