"""The ``events`` subscription state machine, fed directly (sans-I/O, protocol.md §4.5–4.6)."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from evqueue.api.subscriptions import EventLog, EventsSession, Push, push_attributes
from evqueue.engine.statistics import Statistics
from evqueue.protocol.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cmd(s: EventsSession, xml: str) -> int:
    return s.command(etree.fromstring(xml))


def subscribe(s: EventsSession, type_: str, api: str = "<ping/>", **attrs: str) -> int:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    b64 = base64.b64encode(api.encode()).decode()
    return cmd(s, f'<event action="subscribe" type="{type_}" api_cmd="{b64}"{extra}/>')


def drain(s: EventsSession) -> list[Push]:
    out = []
    while (p := s.next_push()) is not None:
        out.append(p)
    return out


def test_object_filter_external_id_and_global_ids():
    log = EventLog(Statistics())
    s, other = EventsSession(log, throttling=False), EventsSession(log, throttling=False)
    assert subscribe(s, "INSTANCE_TERMINATED", object_id="7", external_id="3") == 1
    subscribe(other, "INSTANCE_TERMINATED")
    assert s.types == {"INSTANCE_TERMINATED"}
    log.publish("INSTANCE_TERMINATED", 8)
    log.publish("INSTANCE_STARTED", 7)
    assert drain(s) == [] and [p.object_ids for p in drain(other)] == [[8]]
    log.publish("INSTANCE_TERMINATED", 7)
    [mine], [theirs] = drain(s), drain(other)
    assert (mine.api_cmd, mine.external_id, mine.object_ids) == ("<ping/>", 3, [7])
    assert theirs.event_id == mine.event_id + 1  # one counter for every connection
    assert push_attributes(mine) == {"event-id": str(mine.event_id), "external-id": "3",
                                     "object-id": "7"}
    for _ in range(2):  # without throttling every occurrence is pushed
        log.publish("INSTANCE_TERMINATED", 7)
    assert len(drain(s)) == 2
    assert log.statistics.ws_events == 7


def test_throttling_merges_until_ack_then_waits_for_the_window():
    clock = Clock()
    log = EventLog(Statistics())
    s = EventsSession(log, throttling=True, window=0.1, clock=clock)
    subscribe(s, "INSTANCE_TERMINATED", external_id="1")
    subscribe(s, "INSTANCE_STARTED", external_id="1")  # same command and id: merged too
    log.publish("INSTANCE_TERMINATED", 1)
    [first] = drain(s)
    assert first.object_ids == [1]
    for i in (2, 3, 2, 4):
        log.publish("INSTANCE_TERMINATED", i)
    log.publish("INSTANCE_STARTED", 5)
    log.publish("QUEUE_ENQUEUE", 0)  # nobody listens: not even kept
    assert drain(s) == [] and s.next_due() is None  # nothing until acknowledged
    s.ack(first.event_id + 1000)  # unknown ids are ignored
    assert s.next_due() is None
    s.ack(first.event_id)
    assert drain(s) == [] and s.next_due() == pytest.approx(100.1)
    clock.now = 100.1
    [merged] = drain(s)
    assert merged.object_ids == [2, 3, 4, 5]
    assert merged.event_id > first.event_id + 5  # merged occurrences used ids too
    # acknowledged at once, and nothing happened within the window: the next occurrence
    # goes out at once
    assert s.try_ack(f"<event event_id='{merged.event_id}' action='ack' />")
    clock.now = 100.25
    assert drain(s) == [] and s.next_due() is None
    log.publish("INSTANCE_TERMINATED", 6)
    [again] = drain(s)
    assert again.object_ids == [6]
    # acknowledged, but an occurrence comes within the window: it waits for the window
    s.ack(again.event_id)
    log.publish("INSTANCE_TERMINATED", 7)
    assert drain(s) == [] and s.next_due() == pytest.approx(100.35)
    clock.now = 100.35
    assert [p.object_ids for p in drain(s)] == [[7]]


def test_send_now():
    log = EventLog(Statistics())
    s = EventsSession(log, throttling=False)
    subscribe(s, "INSTANCE_STARTED", api="<a/>", external_id="1")
    subscribe(s, "INSTANCE_STARTED", api="<b/>", object_id="9")
    subscribe(s, "INSTANCE_STARTED", api="<c/>", send_now="yes")
    # without external id every matching subscription runs (object 0 ≠ filter 9)
    assert sorted(p.api_cmd for p in drain(s)) == ["<a/>", "<c/>"]
    subscribe(s, "INSTANCE_STARTED", api="<d/>", send_now="yes", external_id="4")
    assert [p.api_cmd for p in drain(s)] == ["<d/>"]
    # throttled: a send_now while a push is online is merged into the follow-up
    clock = Clock()
    t = EventsSession(log, throttling=True, window=0, clock=clock)
    subscribe(t, "TAG_CREATED", external_id="1", send_now="yes")
    [first] = drain(t)
    subscribe(t, "TAG_CREATED", external_id="1", send_now="yes", object_id="3")
    assert drain(t) == []
    t.ack(first.event_id)
    assert [p.object_ids for p in drain(t)] == [[3]]


def test_unsubscribe_and_unsubscribeall():
    log = EventLog(Statistics())
    s = EventsSession(log, throttling=True)
    subscribe(s, "TAG_CREATED", external_id="1")
    subscribe(s, "TAG_CREATED", external_id="2")
    subscribe(s, "TAG_CREATED", object_id="5", external_id="3")
    assert cmd(s, '<event action="unsubscribe" type="TAG_CREATED" external_id="1"/>') == -1
    log.publish("TAG_CREATED", 0)
    [pushed] = drain(s)
    assert pushed.external_id == 2
    # unsubscribe also clears the throttling state: the next occurrence goes out at once
    assert cmd(s, '<event action="unsubscribe" type="TAG_CREATED" object_id="5"/>') == -1
    log.publish("TAG_CREATED", 0)
    assert [p.external_id for p in drain(s)] == [2]
    subscribe(s, "TAG_CREATED", object_id="5")
    assert cmd(s, '<event action="unsubscribe" type="TAG_CREATED"/>') == -1  # object 0 only
    assert cmd(s, '<event action="unsubscribeall"/>') == -1
    assert s.types == set()
    log.publish("TAG_CREATED", 5)
    assert drain(s) == []


def test_a_subscriber_too_far_behind_overflows():
    log = EventLog(Statistics(), max_lag=5000)
    calls = []
    never_acks = EventsSession(log, throttling=True, notify=lambda: calls.append(1))
    acks = EventsSession(log, throttling=True, window=0)
    subscribe(never_acks, "INSTANCE_TERMINATED")
    subscribe(acks, "INSTANCE_TERMINATED")
    for i in range(1, 10000):
        log.publish("INSTANCE_TERMINATED", i)
        for p in drain(acks):
            acks.ack(p.event_id)
        if i == 1:
            assert len(drain(never_acks)) == 1 and not never_acks.overflowed
    assert never_acks.overflowed and never_acks.types == set() and len(calls) == 2
    assert not acks.overflowed
    assert len(log._entries["INSTANCE_TERMINATED"]) <= 4096  # read entries are dropped
    s = EventsSession(log, throttling=False, max_backlog=5)  # pushes nobody takes
    subscribe(s, "TAG_CREATED")
    for _ in range(6):
        log.publish("TAG_CREATED", 0)
    assert s.overflowed


@pytest.mark.parametrize(("xml", "message"), [
    ("<ping/>", "Only event query group is supported by this protocol"),
    ('<event action="subscribe" type="NOPE" api_cmd=""/>', "Unknown event : NOPE"),
    ('<event action="subscribe" type="TAG_CREATED" api_cmd="!!"/>', "Invalid base64 sequence"),
    ('<event action="subscribe" type="TAG_CREATED" api_cmd="/w=="/>',
     "Invalid base64 sequence"),  # not UTF-8
    ('<event action="subscribe" type="TAG_CREATED"/>', "Missing 'api_cmd' attribute"),
    ('<event action="ack"/>', "Missing 'event_id' attribute"),
    ('<event action="ack" event_id="x"/>', "Attribute 'event_id' has invalid integer value"),
    ('<event action="nope"/>', "Unknown command or action"),
])
def test_bad_commands_raise(xml: str, message: str):
    with pytest.raises(ApiError) as e:
        cmd(EventsSession(EventLog(Statistics()), throttling=True), xml)
    assert e.value.message == message


def test_event_ids_are_unsigned_64_bit():
    s = EventsSession(EventLog(Statistics()), throttling=True)
    cmd(s, f'<event action="ack" event_id="{2**63}"/>')  # beyond 32 bits: accepted
    with pytest.raises(ApiError):
        cmd(s, f'<event action="ack" event_id="{2**64}"/>')
    assert not s.try_ack('<event action="ack" event_id="1" extra="x"/>')  # parsed normally
