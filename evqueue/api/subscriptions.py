"""Event subscriptions of the websocket ``events`` sessions (protocol.md §4.5–4.6).

Sans-I/O: the transport feeds ``<event …/>`` commands and acknowledgements into an
:class:`EventsSession` per connection and engine events into the process's :class:`EventLog`,
and takes :class:`Push` jobs (run this API command as the subscriber, then push the answer with
these ids) out of :meth:`EventsSession.next_push`.

Throttling (``ws.events.throttling``) works per (api_cmd, external_id) of a connection: after a
push, further occurrences are merged into one follow-up push carrying the accumulated object ids,
sent once the push is acknowledged (as in the original) and no sooner than :data:`WINDOW` after
it (docs/deviations.md). A client that acknowledges at once thus gets at most one push per
window and subscription, and an occurrence after a quiet period is pushed at once.

A subscription waiting for its ack or its window does not look at each occurrence: it keeps its
position in the shared log and reads what it missed when it may push again. Only sessions with a
subscription ready to push at once are called per occurrence, so a burst of events costs one
append each plus one push per window and subscriber, however many subscribers there are.

What a slow client makes the process hold is bounded: pushes it has not taken
(:data:`MAX_BACKLOG`) and occurrences it has not read (:data:`MAX_LAG`). Beyond either, the
session reports :attr:`EventsSession.overflowed` and the transport drops the connection.
"""

from __future__ import annotations

import enum
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from evqueue.api.params import Params
from evqueue.engine.events import EVENTS
from evqueue.engine.statistics import Statistics
from evqueue.protocol.errors import ApiError

__all__ = ["MAX_BACKLOG", "MAX_LAG", "WINDOW", "EventLog", "EventsSession", "Push",
           "Subscription", "push_attributes"]

WINDOW = 0.25
"""Seconds between two throttled pushes of one subscription."""

MAX_BACKLOG = 10000
"""Pushes one connection may leave untaken before it is dropped."""

MAX_LAG = 100000
"""Occurrences a throttled connection may leave unread (never acknowledging) before it is
dropped."""

_TRIM = 4096  # entries appended to a name's log between two trims

_UINT64_MAX = 2**64 - 1
#: leading digits as C ``stoull`` reads them (``event_id`` is unsigned 64-bit)
_STOULL = re.compile(r"[ \t\n\v\f\r]*\+?([0-9]+)")
#: ``<event action="ack" event_id="N"/>`` in either attribute order and quoting: every push is
#: acknowledged, so this common message skips the XML parser
_ACK = re.compile(r"""\s*<event\s+(?:action=(["'])ack\1\s+event_id=(["'])(\d+)\2"""
                  r"""|event_id=(["'])(\d+)\4\s+action=(["'])ack\6)\s*/>\s*\Z""")


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


class EventLog:
    """The occurrences of each event name somebody listens to, shared by every session of the
    process, and the global ``event-id`` counter."""

    def __init__(self, statistics: Statistics, *, max_lag: int = MAX_LAG) -> None:
        self.statistics = statistics
        self.max_lag = max_lag
        self._entries: dict[str, list[int]] = {}  # name → object ids, from _base[name] on
        self._base: dict[str, int] = {}
        self._trim_at: dict[str, int] = {}  # name → log length that triggers the next trim
        self._sessions: dict[str, dict[EventsSession, None]] = {}  # every listener of a name
        self._awake: dict[str, dict[EventsSession, None]] = {}  # … called per occurrence
        self._last_id = 0

    def publish(self, name: str, object_id: int) -> None:
        """One occurrence (an engine event)."""
        if name not in self._sessions:
            return
        entries = self._entries[name]
        entries.append(object_id)
        if len(entries) >= self._trim_at[name]:
            self._trim(name)
        for session in tuple(self._awake.get(name, ())):
            session._occurrence(name, object_id)

    def position(self, name: str) -> int:
        return self._base[name] + len(self._entries[name])

    def since(self, name: str, position: int) -> list[int]:
        """The object ids of the occurrences from ``position`` on."""
        return self._entries[name][position - self._base[name]:]

    def take_id(self, skipped: int = 0) -> int:
        """A new event-id, after counting ``skipped`` merged occurrences (one counter for
        every subscription × occurrence: ids are increasing, not contiguous, §4.6)."""
        self._last_id += skipped + 1
        return self._last_id

    def listen(self, session: EventsSession, name: str, *, awake: bool) -> None:
        if name not in self._sessions:
            self._sessions[name], self._entries[name] = {}, []
            self._base.setdefault(name, 0)
            self._trim_at[name] = _TRIM
        self._sessions[name][session] = None
        if awake:
            self._awake.setdefault(name, {})[session] = None
        else:
            self._awake.get(name, {}).pop(session, None)

    def forget(self, session: EventsSession, name: str) -> None:
        self._awake.get(name, {}).pop(session, None)
        sessions = self._sessions.get(name)
        if sessions is not None:
            sessions.pop(session, None)
            if not sessions:  # nobody reads it any more (positions stay monotonic)
                self._base[name] = self.position(name)
                del self._sessions[name], self._entries[name]

    def _trim(self, name: str) -> None:
        """Drop what every session has read; sessions too far behind overflow."""
        end = self.position(name)
        keep = end
        for session in tuple(self._sessions[name]):
            position = session._unread(name)
            if position is None:
                continue
            if end - position > self.max_lag:
                session._lagging()
            else:
                keep = min(keep, position)
        if name in self._entries:
            entries = self._entries[name]
            del entries[:keep - self._base[name]]
            self._base[name] = keep
            self._trim_at[name] = len(entries) + _TRIM


class _State(enum.Enum):
    IDLE = "idle"  # the next occurrence is pushed at once
    ONLINE = "online"  # pushed, not acknowledged yet
    WAITING = "waiting"  # acknowledged; what was missed goes out when the window has passed


@dataclass(slots=True, eq=False)
class _Key:
    """The subscriptions of one (api_cmd, external_id) of a throttled session."""

    api_cmd: str
    external_id: int
    subs: list[Subscription] = field(default_factory=list)
    state: _State = _State.IDLE
    since: float = 0.0  # when the last push was queued
    #: event name → log position covered by the last push (while not IDLE)
    cursors: dict[str, int] = field(default_factory=dict)
    #: ``send_now`` occurrences merged while not IDLE
    extra: dict[int, None] = field(default_factory=dict)
    extra_pending: bool = False


class EventsSession:
    """Subscriptions, throttling state and the FIFO of pushes of one connection.

    ``notify`` is called when an occurrence queued a push or made the session overflow.
    """

    def __init__(self, log: EventLog, *, throttling: bool, window: float = WINDOW,
                 max_backlog: int = MAX_BACKLOG, clock: Callable[[], float] = time.monotonic,
                 notify: Callable[[], None] = lambda: None) -> None:
        self._log = log
        self.throttling = throttling
        self.window = window
        self.max_backlog = max_backlog
        self._clock = clock
        self._notify = notify
        self.subscriptions: list[Subscription] = []
        self._by_type: dict[str, list[Subscription]] = {}
        self._keys: dict[tuple[str, int], _Key] = {}
        self._queue: deque[Push] = deque()
        self._online: dict[int, _Key] = {}  # unacknowledged event-id → its key
        self._due: list[_Key] = []  # WAITING keys
        self._lag = False

    # -- what the transport reads ---------------------------------------------------------
    @property
    def types(self) -> set[str]:
        """The event names this connection currently listens to."""
        return set(self._by_type)

    @property
    def ready(self) -> bool:
        """A push can be taken now (see :meth:`next_push`)."""
        return bool(self._queue)

    @property
    def owed(self) -> bool:
        """A follow-up push may fall due (see :meth:`next_due`)."""
        return bool(self._due)

    @property
    def overflowed(self) -> bool:
        """A subscriber that cannot keep up is dropped rather than slowing the engine."""
        return self._lag or len(self._queue) > self.max_backlog

    def next_push(self) -> Push | None:
        """The oldest push to deliver now (FIFO), or None."""
        if self._due:
            self._release(self._clock())
        return self._queue.popleft() if self._queue else None

    def next_due(self) -> float | None:
        """When (on the clock) a follow-up push may fall due."""
        if not self._due:
            return None
        return min(k.since for k in self._due) + self.window

    # -- commands -------------------------------------------------------------------------
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
            self._subscribe(sub)
            if p.bool("send_now", False):
                self._send_now(sub)
            return 1
        if action == "unsubscribe":
            type_ = p.str("type")
            object_id = p.int("object_id", 0)
            external_id = p.int("external_id", 0)
            before = len(self.subscriptions)
            self._reset([
                s for s in self.subscriptions
                if not (s.type == type_ and s.object_id == object_id
                        and (external_id == 0 or s.external_id == external_id))
            ])
            return len(self.subscriptions) - before
        if action == "unsubscribeall":
            n = len(self.subscriptions)
            self.clear()
            return -n
        if action == "ack":
            self.ack(_uint64(p.str("event_id")))
            return 0
        raise ApiError("UNKNOWN_COMMAND", "Unknown command or action")

    def try_ack(self, message: str) -> bool:
        """Apply ``message`` if it is a plain ``ack`` command; False to parse it normally."""
        m = _ACK.match(message)
        if m is None:
            return False
        self.ack(int(m.group(3) or m.group(5)))
        return True

    def ack(self, event_id: int) -> None:
        """The client acknowledged ``event_id``: what was missed may follow after the window
        (ignored without throttling, like unknown ids)."""
        key = self._online.pop(event_id, None)
        if key is not None:
            key.state = _State.WAITING
            self._due.append(key)

    def clear(self) -> None:
        """Forget every subscription and everything pending (``unsubscribeall``, close)."""
        self._queue.clear()
        self._reset([])

    # -- subscriptions --------------------------------------------------------------------
    def _subscribe(self, sub: Subscription) -> None:
        self.subscriptions.append(sub)
        self._by_type.setdefault(sub.type, []).append(sub)
        if not self.throttling:
            self._log.listen(self, sub.type, awake=True)
            return
        key = self._keys.get((sub.api_cmd, sub.external_id))
        if key is None:
            key = self._keys[sub.api_cmd, sub.external_id] = _Key(sub.api_cmd, sub.external_id)
        key.subs.append(sub)
        self._log.listen(self, sub.type, awake=False)
        if key.state is not _State.IDLE:  # occurrences before the subscription do not count
            key.cursors.setdefault(sub.type, self._log.position(sub.type))
        self._wake(sub.type)

    def _reset(self, subscriptions: list[Subscription]) -> None:
        """Keep only ``subscriptions``, with no throttling state (as ``unsubscribe``)."""
        for name in self._by_type:
            self._log.forget(self, name)
        self.subscriptions, self._by_type, self._keys = [], {}, {}
        self._online.clear()
        self._due.clear()
        for sub in subscriptions:
            self._subscribe(sub)

    def _wake(self, name: str) -> None:
        """Be called per occurrence of ``name`` only while one of its keys is IDLE."""
        awake = any(self._keys[s.api_cmd, s.external_id].state is _State.IDLE
                    for s in self._by_type[name])
        self._log.listen(self, name, awake=awake)

    # -- occurrences ----------------------------------------------------------------------
    def _occurrence(self, name: str, object_id: int) -> None:
        """EventLog callback, while some subscription of ``name`` can push at once."""
        queued = False
        for sub in self._by_type[name]:
            if sub.object_id not in (0, object_id):
                continue
            if not self.throttling:
                self._log.statistics.ws_events += 1
                self._queue.append(Push(sub.api_cmd, sub.external_id, _ids(object_id),
                                        self._log.take_id()))
                queued = True
                continue
            key = self._keys[sub.api_cmd, sub.external_id]
            if key.state is _State.IDLE:
                self._log.statistics.ws_events += 1
                self._push(key, _ids(object_id), 0)
                queued = True
        if queued:
            self._notify()

    def _send_now(self, sub: Subscription) -> None:
        """Run now as if the event occurred for the subscription's object: for every matching
        subscription of that type when no external id is given (§4.5)."""
        subs = [sub] if sub.external_id else [
            s for s in self._by_type[sub.type] if s.object_id in (0, sub.object_id)]
        for s in subs:
            self._log.statistics.ws_events += 1
            if not self.throttling:
                self._queue.append(Push(s.api_cmd, s.external_id, _ids(sub.object_id),
                                        self._log.take_id()))
                continue
            key = self._keys[s.api_cmd, s.external_id]
            if key.state is _State.IDLE:
                self._push(key, _ids(sub.object_id), 0)
            else:
                key.extra_pending = True
                if sub.object_id:
                    key.extra[sub.object_id] = None

    def _push(self, key: _Key, object_ids: list[int], skipped: int) -> None:
        """Queue a push of ``key``, which then covers the log up to now."""
        event_id = self._log.take_id(skipped)
        was_idle = key.state is _State.IDLE
        key.state, key.since = _State.ONLINE, self._clock()
        key.cursors = {s.type: self._log.position(s.type) for s in key.subs}
        key.extra, key.extra_pending = {}, False
        self._online[event_id] = key
        self._queue.append(Push(key.api_cmd, key.external_id, object_ids, event_id))
        if was_idle:
            for name in key.cursors:
                self._wake(name)

    def _release(self, now: float) -> None:
        """WAITING keys whose window has passed: push what they missed, or become IDLE."""
        waiting = []
        for key in self._due:
            if now < key.since + self.window:
                waiting.append(key)
                continue
            ids, matched = self._missed(key)
            self._log.statistics.ws_events += matched
            if matched or key.extra_pending:
                self._push(key, ids, matched)
                continue
            key.state, key.cursors = _State.IDLE, {}
            for s in key.subs:
                self._wake(s.type)
        self._due = waiting

    def _missed(self, key: _Key) -> tuple[list[int], int]:
        """Object ids (in order, once each) and count of the occurrences since the last push
        matching the key's subscriptions."""
        ids = dict(key.extra)
        matched = 0
        for sub in key.subs:
            entries = self._log.since(sub.type, key.cursors[sub.type])
            if sub.object_id:
                hits = entries.count(sub.object_id)
                if hits:
                    ids[sub.object_id] = None
            else:
                hits = len(entries)
                ids.update(dict.fromkeys(filter(None, entries)))
            matched += hits
        return list(ids), matched

    # -- EventLog callbacks ---------------------------------------------------------------
    def _unread(self, name: str) -> int | None:
        """The oldest log position of ``name`` this session still has to read."""
        positions = [k.cursors[name] for k in self._keys.values() if name in k.cursors]
        return min(positions, default=None)

    def _lagging(self) -> None:
        """Too far behind the log: stop reading it and ask to be dropped."""
        self._lag = True
        self.clear()
        self._notify()


def _ids(object_id: int) -> list[int]:
    return [object_id] if object_id else []


def _uint64(value: str) -> int:
    m = _STOULL.match(value)
    if m is None or int(m.group(1)) > _UINT64_MAX:
        raise ApiError("INVALID_INTEGER", "Attribute 'event_id' has invalid integer value")
    return int(m.group(1))


def push_attributes(push: Push) -> dict[str, str]:
    """Root attributes added to a pushed answer (also on KO answers, unlike the original)."""
    attrs = {"event-id": str(push.event_id)}
    if push.external_id:
        attrs["external-id"] = str(push.external_id)
    if push.object_ids:
        attrs["object-id"] = ",".join(str(i) for i in push.object_ids)
    return attrs
