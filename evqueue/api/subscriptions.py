"""Event subscriptions of one websocket ``events`` session (protocol.md §4.5–4.6).

Sans-I/O: the transport feeds ``<event …/>`` commands and engine events in, and takes out
:class:`Push` jobs (run this API command as the subscriber, then push the answer with these
ids). Throttling: while a push of the same (api_cmd, external_id) is unacknowledged, further
occurrences are merged into one follow-up push carrying the accumulated object ids.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from lxml import etree

from evqueue.api.params import Params
from evqueue.engine.events import EVENTS
from evqueue.protocol.errors import ApiError

#: one global event-id counter per process, shared by every connection (§4.6)
_event_ids = itertools.count(1)


@dataclass(slots=True)
class Subscription:
    type: str
    api_cmd: str
    object_id: int
    external_id: int


@dataclass(slots=True)
class Push:
    """Execute ``api_cmd`` and push its answer with these root attributes."""

    api_cmd: str
    external_id: int
    object_ids: list[int]
    event_id: int


@dataclass(slots=True)
class _Throttle:
    online: int  # event-id of the unacknowledged push
    merged: list[int] = field(default_factory=list)
    pending: bool = False


class EventsSession:
    """Subscriptions, throttling state and the FIFO of pushes of one connection."""

    def __init__(self, *, throttling: bool, max_pending: int = 10000) -> None:
        self.throttling = throttling
        self.max_pending = max_pending
        self.subscriptions: list[Subscription] = []
        self.queue: deque[Push] = deque()
        self._throttle: dict[tuple[str, int], _Throttle] = {}

    @property
    def overflowed(self) -> bool:
        """A subscriber that cannot keep up is dropped rather than slowing the engine."""
        return len(self.queue) > self.max_pending

    def command(self, query: etree._Element) -> int:
        """Apply one ``<event>`` command; returns the change in subscription count.
        Raises ApiError (the transport closes the websocket with its text)."""
        if query.tag != "event":
            raise ApiError("UNKNOWN_COMMAND",
                           "Only event query group is supported by this protocol")
        p = Params(query)
        action = p.str("action")
        if action == "subscribe":
            type_ = p.str("type")
            if type_ not in EVENTS:
                raise ApiError("INVALID_PARAMETER", f"Unknown event : {type_}")
            try:
                api_cmd = p.base64("api_cmd").decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError("INVALID_PARAMETER", "Invalid base64 sequence") from None
            sub = Subscription(type_, api_cmd, p.int("object_id", 0), p.int("external_id", 0))
            self.subscriptions.append(sub)
            if p.bool("send_now", False):
                self._send_now(sub)
            return 1
        if action == "unsubscribe":
            type_ = p.str("type")
            object_id = p.int("object_id", 0)
            external_id = p.int("external_id", 0)
            before = len(self.subscriptions)
            self.subscriptions = [
                s for s in self.subscriptions
                if not (s.type == type_ and s.object_id == object_id
                        and (external_id == 0 or s.external_id == external_id))
            ]
            self._throttle.clear()
            return len(self.subscriptions) - before
        if action == "unsubscribeall":
            n = len(self.subscriptions)
            self.subscriptions.clear()
            self.queue.clear()
            self._throttle.clear()
            return -n
        if action == "ack":
            self.ack(p.int("event_id"))
            return 0
        raise ApiError("UNKNOWN_COMMAND", "Unknown command or action")

    def _send_now(self, sub: Subscription) -> None:
        """``send_now``: fire as if the event occurred for the subscription's object, for
        every matching subscription of that type when no external id is given (§4.5)."""
        if sub.external_id:
            self._occur(sub, sub.object_id)
            return
        for s in self.subscriptions:
            if s.type == sub.type and s.object_id in (0, sub.object_id):
                self._occur(s, sub.object_id)

    def event(self, name: str, object_id: int) -> int:
        """An engine event: queue the matching subscriptions; returns deliveries queued."""
        n = 0
        for s in self.subscriptions:
            if s.type == name and s.object_id in (0, object_id):
                self._occur(s, object_id)
                n += 1
        return n

    def _occur(self, sub: Subscription, object_id: int) -> None:
        event_id = next(_event_ids)
        if not self.throttling:
            self.queue.append(Push(sub.api_cmd, sub.external_id, _ids(object_id), event_id))
            return
        key = (sub.api_cmd, sub.external_id)
        state = self._throttle.get(key)
        if state is None:
            self._throttle[key] = _Throttle(event_id)
            self.queue.append(Push(sub.api_cmd, sub.external_id, _ids(object_id), event_id))
            return
        state.pending = True
        if object_id and object_id not in state.merged:
            state.merged.append(object_id)

    def ack(self, event_id: int) -> None:
        if not self.throttling:
            return
        for key, state in list(self._throttle.items()):
            if state.online != event_id:
                continue
            if not state.pending:
                del self._throttle[key]
                return
            new_id = next(_event_ids)
            self._throttle[key] = _Throttle(new_id)
            self.queue.append(Push(key[0], key[1], state.merged, new_id))
            return


def _ids(object_id: int) -> list[int]:
    return [object_id] if object_id else []


def push_attributes(push: Push) -> dict[str, str]:
    """Root attributes added to a pushed answer (also on KO answers, unlike the original)."""
    attrs = {"event-id": str(push.event_id)}
    if push.external_id:
        attrs["external-id"] = str(push.external_id)
    if push.object_ids:
        attrs["object-id"] = ",".join(str(i) for i in push.object_ids)
    return attrs

