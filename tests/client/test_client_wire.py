"""Sans-I/O parts of the client: URLs, query encoding, handshake documents, answer parsing."""

from __future__ import annotations

from datetime import datetime

import pytest
from lxml import etree

from evqueue.client import EvqError, ProtocolError
from evqueue.client.model import (
    Greeting,
    Instance,
    InstanceRow,
    Queue,
    QueueStatistics,
    Schedule,
    Statistics,
)
from evqueue.client.wire import (
    auth_request,
    check_response,
    encode_message,
    encode_stream,
    parse_greeting,
    parse_url,
    to_element,
)

# Answers of the original engine (golden transcripts 03, 11, 18, 24, 27), trimmed.
INSTANCE_FINAL = """<response node="localhost" status="OK"><workflow comment="golden run"
 end_time="2026-11-24 08:23:27" errors="0" evqid="1" id="1" name="golden_wf" queued_tasks="0"
 running_tasks="0" start_time="2026-11-24 08:23:27" status="TERMINATED">
  <subjobs><job name="first"><tasks>
    <task path="/bin/echo" retval="0" status="TERMINATED"><output retval="0">hello
</output></task>
    <task path="emit_items.sh" retval="0" status="TERMINATED"/>
  </tasks><subjobs><job name="second"><tasks><task path="/bin/echo" status="EXECUTING"/>
  </tasks></job><job name="third"><tasks><task path="/bin/true"/></tasks></job></subjobs>
  </job></subjobs></workflow></response>"""

INSTANCES_LIST = """<response node="localhost" rows="3" status="OK"><workflow comment="golden run"
 end_time="2026-11-24 08:23:27" errors="0" host="" id="1" name="golden_wf" node_name="localhost"
 start_time="2026-11-24 08:23:26" status="TERMINATED"><tags><tag id="2" label="nightly"/></tags>
 </workflow><workflow comment="" end_time="" errors="1" host="" id="3" name="golden_fail"
 node_name="localhost" schedule_id="4" start_time="2026-11-24 08:23:27" status="EXECUTING">
 <tags/></workflow></response>"""

QUEUE_STATS = """<response node="localhost" status="OK"><statistics><queue concurrency="1"
 name="default" running_tasks="0" scheduler="fifo" size="0"/><queue concurrency="2" name="golden"
 running_tasks="1" scheduler="prio" size="5"/></statistics></response>"""

QUEUEPOOL = """<response node="localhost" status="OK"><queue concurrency="1" dynamic="no" id="1"
 name="default" scheduler="default"/><queue concurrency="2" dynamic="yes" id="2" name="golden"
 scheduler="fifo"/></response>"""

SCHEDULES = """<response node="localhost" status="OK"><workflow_schedule active="1"
 comment="golden" id="1" node="localhost" onfailure="CONTINUE" schedule="0;30;3;0;0;"
 workflow_group="golden" workflow_id="1" workflow_name="golden_wf"><parameter name="greeting"
 value="scheduled"/><parameter name="items" value="s"/></workflow_schedule></response>"""


@pytest.mark.parametrize(
    ("url", "scheme", "address"),
    [
        ("tcp://localhost:5000", "tcp", ("localhost", 5000)),
        ("tcp://10.0.0.1", "tcp", ("10.0.0.1", 5000)),
        ("tcp://[::1]:7000", "tcp", ("::1", 7000)),
        ("unix:///run/evqueue/evqueue.socket", "unix", "/run/evqueue/evqueue.socket"),
        ("ws://node1:6001", "ws", "ws://node1:6001"),
        ("ws://node1", "ws", "ws://node1:5001"),
        ("wss://node1/api", "wss", "wss://node1:5001/api"),
    ],
)
def test_parse_url(url: str, scheme: str, address: object) -> None:
    endpoint = parse_url(url)
    assert (endpoint.scheme, endpoint.address, endpoint.url) == (scheme, address, url)


@pytest.mark.parametrize(
    "url", ["localhost:5000", "http://x", "unix://relative/path", "tcp://", "tcp://h:99999",
            "tcp://h:abc", "tcp://h:1/path", ""],
)
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="tcp://host"):
        parse_url(url)


def test_short_queries_are_padded_to_nine_bytes_and_end_with_newline() -> None:
    data = encode_stream(to_element("<ping/>"))
    assert data.endswith(b"\n") and len(data) >= 9
    assert etree.fromstring(data).tag == "ping"
    quit_ = encode_stream(etree.Element("quit"))
    assert len(quit_) == 9 and quit_.endswith(b"\n")


def test_long_queries_are_not_padded() -> None:
    query = to_element('<?xml version="1.0"?>\n<workflows action="list" />')
    data = encode_stream(query)
    assert data.startswith(b"<workflows") and data.endswith(b'"/>\n')


def test_websocket_messages_have_no_terminator() -> None:
    text = encode_message(to_element("<ping/>"))
    assert text == "<ping/>"


def test_to_element_accepts_text_bytes_and_elements() -> None:
    elem = etree.Element("ping")
    assert to_element(elem) is elem
    assert to_element(b'<status action="query" type="workflows"/>').get("type") == "workflows"
    assert to_element("<a>é</a>").text == "é"


@pytest.mark.parametrize("bad", ["<ping", "not xml", "", "<a></b>", "<a/><b/>"])
def test_to_element_rejects_malformed_queries(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid query XML"):
        to_element(bad)


def test_auth_request_uses_the_protocol_test_vector() -> None:
    auth = auth_request("ad\"min<", "admin", "00000000000000000000000000000000000000ff")
    assert auth.tag == "auth"
    assert auth.get("response") == "605f419d26b841224d794520f3dd139dcd9dc11b"
    assert etree.fromstring(encode_stream(auth)).get("user") == 'ad"min<'


@pytest.mark.parametrize("challenge", ["", "not hex"])
def test_auth_request_with_a_bad_challenge_is_a_protocol_error(challenge: str) -> None:
    with pytest.raises(ProtocolError):
        auth_request("admin", "admin", challenge)


def test_parse_greeting() -> None:
    ready = etree.fromstring(
        '<ready node="n1" profile="USER" status="OK" time="2024-05-02 14:03:11" version="3.3">'
        '<modules><module name="git" version="3.3"/><module name="storage" version="3.3"/>'
        "</modules></ready>"
    )
    assert parse_greeting(ready) == Greeting(
        "n1", "USER", "3.3", datetime(2024, 5, 2, 14, 3, 11), {"git": "3.3", "storage": "3.3"}
    )


def test_parse_greeting_errors() -> None:
    bad_auth = etree.fromstring(
        '<response error="Invalid authentication" error-code="AUTH_ERROR" node="n" status="KO"/>'
    )
    with pytest.raises(EvqError) as err:
        parse_greeting(bad_auth)
    assert (err.value.code, err.value.message) == ("AUTH_ERROR", "Invalid authentication")
    with pytest.raises(ProtocolError):
        parse_greeting(etree.fromstring('<response node="n" status="OK"/>'))


def test_check_response() -> None:
    ok = etree.fromstring('<response node="n" status="OK"/>')
    assert check_response(ok) is ok
    for bad in ('<ready status="OK"/>', '<response node="n"/>'):
        with pytest.raises(ProtocolError):
            check_response(etree.fromstring(bad))


def test_evq_error_from_ko_response() -> None:
    ko = etree.fromstring('<response error="Wait timed out" error-code="TIMED_OUT" status="KO"/>')
    error = EvqError.from_response(ko)
    assert (error.code, error.message, str(error)) == (
        "TIMED_OUT", "Wait timed out", "Wait timed out (TIMED_OUT)"
    )
    uncoded = EvqError.from_response(etree.fromstring('<response error="bad" status="KO"/>'))
    assert (uncoded.code, str(uncoded)) == (None, "bad")
    assert not isinstance(error, ConnectionError)


def test_instance_document() -> None:
    response = etree.fromstring(INSTANCE_FINAL)
    inst = Instance.from_element(response[0], "localhost")
    assert (inst.id, inst.name, inst.status, inst.errors, inst.comment) == (
        1, "golden_wf", "TERMINATED", 0, "golden run"
    )
    assert inst.terminated and inst.end_time == datetime(2026, 11, 24, 8, 23, 27)
    assert inst.task_counts() == {"TERMINATED": 2, "EXECUTING": 1, "PENDING": 1}
    assert inst.progress() == (2, 4)
    assert inst.document.find("subjobs/job/tasks/task/output").text == "hello\n"


def test_instance_rows() -> None:
    response = etree.fromstring(INSTANCES_LIST)
    first, second = (InstanceRow.from_element(w, "tcp://x") for w in response)
    assert first.tags == ("nightly",) and first.schedule_id is None and first.server == "tcp://x"
    assert first.start_time == datetime(2026, 11, 24, 8, 23, 26)
    assert (second.id, second.errors, second.end_time, second.schedule_id) == (3, 1, None, 4)


def test_queue_models() -> None:
    stats = [QueueStatistics.from_element(q, "localhost")
             for q in etree.fromstring(QUEUE_STATS).iterfind("statistics/queue")]
    assert stats[1] == QueueStatistics("localhost", "golden", 2, 5, 1, "prio")
    queues = [Queue.from_element(q) for q in etree.fromstring(QUEUEPOOL)]
    assert queues == [Queue(1, "default", 1, "default", False), Queue(2, "golden", 2, "fifo", True)]


def test_schedule_model() -> None:
    (schedule,) = [Schedule.from_element(s) for s in etree.fromstring(SCHEDULES)]
    assert schedule.active and schedule.schedule == "0;30;3;0;0;"
    assert schedule.parameters == {"greeting": "scheduled", "items": "s"}
    assert schedule.workflow_name == "golden_wf"


def test_statistics_combine() -> None:
    a = Statistics.from_response(etree.fromstring(
        '<response node="a" status="OK"><statistics api_queries="3" ws_queries="1"/></response>'
    ))
    b = Statistics("b", {"api_queries": 4})
    total = Statistics.combine([a, b])
    assert total.counters == {"api_queries": 7, "ws_queries": 1}
    assert total["api_queries"] == 7 and total.node == "*" and total.parts == (a, b)
