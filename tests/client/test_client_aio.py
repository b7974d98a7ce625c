"""AsyncClient against the fake server over real tcp, unix and websocket connections."""

from __future__ import annotations

import asyncio

import pytest
from fakeserver import FakeServer, eventually, ko, response
from lxml import etree

from evqueue.client import (
    AsyncClient,
    EvqConnectionError,
    EvqError,
    EvqTimeout,
    Ping,
    ProtocolError,
    Queue,
)

KINDS = ["tcp", "unix", "ws"]

RUNNING = (
    '<workflow id="7" name="wf" status="EXECUTING" running_tasks="1" start_time="2024-01-01 '
    '10:00:00"><subjobs><job><tasks><task status="TERMINATED"/><task status="EXECUTING"/>'
    "</tasks></job></subjobs></workflow>"
)
DONE = (
    '<workflow id="7" name="wf" status="TERMINATED" errors="0" end_time="2024-01-01 10:00:05">'
    '<subjobs><job><tasks><task status="TERMINATED"/><task status="TERMINATED"/></tasks></job>'
    "</subjobs></workflow>"
)


def client(server: FakeServer, kind: str = "tcp", **kw: object) -> AsyncClient:
    return AsyncClient(server.url(kind), "admin", "admin", **kw)


@pytest.mark.parametrize("kind", KINDS)
async def test_handshake_greeting_and_one_connection(fake: FakeServer, kind: str) -> None:
    async with client(fake, kind) as c:
        assert c.greeting is None
        greeting = await c.connect()
        assert (greeting.node, greeting.profile, greeting.version) == ("fake", "ADMIN", "3.3")
        assert greeting.modules == {"storage": "3.3"} and c.greeting == greeting
        assert await c.ping() == Ping("fake", "3.3", 12, False)
        await c.ping()
    assert fake.connections == 1
    if kind != "ws":  # the websocket protocol has no <quit />: the socket is just closed
        assert eventually(lambda: fake.quits == 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_password_is_an_auth_error(fake: FakeServer, kind: str) -> None:
    c = AsyncClient(fake.url(kind), "admin", "wrong")
    with pytest.raises(EvqError) as err:
        await c.ping()
    assert err.value.code == "AUTH_ERROR" and err.value.message == "Invalid authentication"
    assert fake.queries == []


async def test_missing_credentials(fake: FakeServer) -> None:
    with pytest.raises(EvqError, match="Authentication is required") as err:
        await AsyncClient(fake.tcp_url, "admin").ping()
    assert err.value.code == "AUTH_ERROR"


async def test_server_without_authentication(make_fake) -> None:
    server = make_fake(users={})
    async with AsyncClient(server.unix_url) as c:
        assert (await c.ping()).node == "fake"


@pytest.mark.parametrize("kind", KINDS)
async def test_ko_raises_with_the_error_code(fake: FakeServer, kind: str) -> None:
    async with client(fake, kind) as c:
        with pytest.raises(EvqError) as err:
            await c.query('<nope action="x" />')
        assert err.value.code == "UNKNOWN_COMMAND"
        assert err.value.message == "Unknown command or action"
        assert err.value.response is not None and err.value.response.get("node") == "fake"
        raw = await c.query_raw(etree.Element("nope"))
        assert raw.get("status") == "KO" and raw.get("error-code") == "UNKNOWN_COMMAND"
        assert (await c.ping()).uptime == 12
    assert fake.connections == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_keepalive_pings_are_skipped(fake: FakeServer, kind: str) -> None:
    fake.answers[("instance", "wait")] = lambda q: [
        "<ping />", 0.05, "<ping />", response("fake", extra="yes")
    ]
    async with client(fake, kind) as c:
        answer = await c.query('<instance action="wait" id="1" />')
        assert answer.tag == "response" and answer.get("extra") == "yes"
        assert (await c.ping()).node == "fake"


async def test_queries_are_newline_terminated_and_padded(fake: FakeServer) -> None:
    async with client(fake) as c:
        await c.ping()
    assert eventually(lambda: fake.quits == 1)
    assert fake.received.endswith(b"\n")
    # Everything after the <auth> answer: each query padded to 9 bytes and ended by "\n".
    queries = fake.received.split(b"\n")[1:-1]
    assert [q.rstrip() for q in queries] == [b"<ping/>", b"<quit/>"]
    assert all(len(q) + 1 >= 9 for q in queries)


async def test_close_sends_quit_and_the_client_reconnects(fake: FakeServer) -> None:
    c = client(fake, "unix")
    await c.ping()
    await c.close()
    assert eventually(lambda: fake.quits == 1)
    await c.ping()
    assert fake.connections == 2
    await c.close()


async def test_server_closing_while_idle_is_transparent(fake: FakeServer) -> None:
    fake.answers[("ping", None)] = lambda q: [response("fake", uptime="1"), None]
    async with client(fake) as c:
        await c.ping()
        await asyncio.sleep(0.1)
        assert (await c.ping()).uptime == 1
    assert fake.connections == 2


async def test_unsolicited_document_is_never_taken_for_an_answer(fake: FakeServer) -> None:
    # The original's idle timeout: a KO nobody asked for arrives on an idle connection.
    stale = ko("fake", "Error reading socket, recv() returned error 11", "UNEXPECTED_EXCEPTION")
    fake.answers[("ping", None)] = lambda q: [response("fake", uptime="5"), 0.02, stale]
    async with client(fake) as c:
        await c.ping()
        await asyncio.sleep(0.1)
        assert (await c.ping()).uptime == 5
    assert fake.connections == 2


async def test_connection_lost_during_a_query(fake: FakeServer) -> None:
    fake.answers[("instance", "launch")] = lambda q: [None]
    async with client(fake) as c:
        with pytest.raises(EvqConnectionError) as err:
            await c.launch("wf")
        assert err.value.sent and isinstance(err.value, ConnectionError)
        assert not isinstance(err.value, EvqError)
        assert (await c.ping()).node == "fake"


async def test_connection_refused(closed_url: str) -> None:
    with pytest.raises(EvqConnectionError) as err:
        await AsyncClient(closed_url).ping()
    assert not err.value.sent and closed_url in str(err.value)
    with pytest.raises(EvqConnectionError):
        await AsyncClient("unix:///nonexistent/evq.sock").ping()


async def test_timeout_drops_the_connection(fake: FakeServer) -> None:
    slow = response("fake", body='<statistics api_queries="9"/>')
    fake.answers[("statistics", "query")] = lambda q: [0.4, slow]
    async with client(fake, timeout=0.2) as c:
        with pytest.raises(EvqTimeout) as err:
            await c.statistics()
        assert isinstance(err.value, TimeoutError) and err.value.sent
        assert (await c.ping()).node == "fake"
        assert fake.connections == 2
        answer = await c.query('<statistics action="query" type="global" />', timeout=0)
        assert answer.find("statistics").get("api_queries") == "9"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["<response><x></response>", '<foo status="OK"/>'])
async def test_bad_answers_are_protocol_errors(fake: FakeServer, kind: str, bad: str) -> None:
    fake.answers[("workflows", "list")] = lambda q: bad
    async with client(fake, kind) as c:
        with pytest.raises(ProtocolError):
            await c.workflows()
        assert (await c.ping()).node == "fake"


async def test_invalid_queries_fail_locally(fake: FakeServer) -> None:
    async with client(fake) as c:
        with pytest.raises(ValueError, match="invalid query XML"):
            await c.query("<ping")
        with pytest.raises(ValueError, match="close"):
            await c.query("<quit />")
    assert fake.connections == 0


async def test_concurrent_queries_share_the_connection_in_turn(fake: FakeServer) -> None:
    fake.answers[("ping", None)] = lambda q: [0.02, response("fake", uptime="3")]
    async with client(fake) as c:
        results = await asyncio.gather(*(c.ping() for _ in range(5)))
    assert [p.uptime for p in results] == [3] * 5 and fake.connections == 1


async def test_launch(fake: FakeServer) -> None:
    fake.answers[("instance", "launch")] = lambda q: ["<ping />", response(
        "fake", workflow_instance_id="42"
    )]
    async with client(fake) as c:
        assert await c.launch("backup", {"db": "prod", "n": 3}, comment="nightly",
                              host="h1", user="u") == 42
        assert await c.launch("backup", mode="synchronous", timeout=5) == 42
    first, second = [q for q in fake.queries if q.tag == "instance"]
    assert dict(first.attrib) == {"action": "launch", "name": "backup", "mode": "asynchronous",
                                  "comment": "nightly", "host": "h1", "user": "u"}
    assert [(p.get("name"), p.get("value")) for p in first] == [("db", "prod"), ("n", "3")]
    assert second.get("mode") == "synchronous" and second.get("timeout") == "5"


async def test_launch_answer_without_id(fake: FakeServer) -> None:
    fake.answers[("instance", "launch")] = lambda q: response("fake")
    async with client(fake) as c:
        with pytest.raises(ProtocolError):
            await c.launch("wf")


async def test_instance_and_instances(fake: FakeServer) -> None:
    fake.answers[("instance", "query")] = lambda q: response("fake", body=DONE)
    fake.answers[("instances", "list")] = lambda q: response(
        "fake", rows="12", body='<workflow id="3" name="wf" node_name="fake" errors="2" '
        'status="TERMINATED"><tags/></workflow>'
    )
    async with client(fake) as c:
        inst = await c.instance(7)
        assert (inst.id, inst.status, inst.errors, inst.node) == (7, "TERMINATED", 0, "fake")
        total, rows = await c.instances(workflow="wf", error=True, status=None, limit=5,
                                        offset=10, parameters={"p": "v"})
        assert total == 12 and [(r.id, r.errors, r.server) for r in rows] == [(3, 2, fake.tcp_url)]
        with pytest.raises(TypeError, match="bogus"):
            await c.instances(bogus=1)
    (query,) = [q for q in fake.queries if q.tag == "instances"]
    assert dict(query.attrib) == {"action": "list", "limit": "5", "offset": "10",
                                  "filter_workflow": "wf", "filter_error": "yes"}
    assert [(p.get("name"), p.get("value")) for p in query] == [("p", "v")]
    assert fake.attrs("instance") == [{"action": "query", "id": "7"}]


async def test_wait_returns_the_final_instance(fake: FakeServer) -> None:
    fake.answers[("instance", "wait")] = lambda q: ["<ping />", response("fake")]
    fake.answers[("instance", "query")] = lambda q: response("fake", body=DONE)
    async with client(fake) as c:
        final = await c.wait(7)
    assert final.terminated and final.progress() == (2, 2)
    assert fake.attrs("instance")[0] == {"action": "wait", "id": "7", "timeout": "0"}


async def test_wait_on_an_instance_that_already_ended(fake: FakeServer) -> None:
    fake.answers[("instance", "wait")] = lambda q: ko("fake", "Unknown instance ID",
                                                      "UNKNOWN_INSTANCE")
    fake.answers[("instance", "query")] = lambda q: response("fake", body=DONE)
    async with client(fake) as c:
        assert (await c.wait(7)).terminated


async def test_wait_on_an_unknown_instance(fake: FakeServer) -> None:
    fake.answers[("instance", "wait")] = lambda q: ko("fake", "Unknown instance ID",
                                                      "UNKNOWN_INSTANCE")
    fake.answers[("instance", "query")] = lambda q: ko("fake", "Unknown workflow instance",
                                                       "UNKNOWN_INSTANCE")
    async with client(fake) as c:
        with pytest.raises(EvqError) as err:
            await c.wait(7)
    assert err.value.code == "UNKNOWN_INSTANCE"


async def test_wait_timeout(fake: FakeServer) -> None:
    fake.answers[("instance", "wait")] = lambda q: [
        float(q.get("timeout")) / 10, ko("fake", "Wait timed out", "TIMED_OUT")
    ]
    async with client(fake) as c:
        with pytest.raises(EvqError) as err:
            await c.wait(7, timeout=0.3)
    assert err.value.code == "TIMED_OUT"
    assert fake.attrs("instance")[0]["timeout"] == "1"


async def test_wait_with_progress(fake: FakeServer) -> None:
    states = iter([RUNNING, RUNNING, DONE])
    fake.answers[("instance", "query")] = lambda q: response("fake", body=next(states))
    fake.answers[("instance", "wait")] = lambda q: [0.02, ko("fake", "Wait timed out", "TIMED_OUT")]
    seen: list[tuple[str, tuple[int, int]]] = []
    async with client(fake) as c:
        final = await c.wait(7, progress=lambda i: seen.append((i.status, i.progress())))
    assert final.terminated
    assert seen == [("EXECUTING", (1, 2)), ("EXECUTING", (1, 2)), ("TERMINATED", (2, 2))]
    assert {a["timeout"] for a in fake.attrs("instance") if a["action"] == "wait"} == {"1"}


async def test_other_helpers(fake: FakeServer) -> None:
    fake.answers[("instance", "cancel")] = lambda q: response("fake")
    fake.answers[("status", "query")] = lambda q: response("fake", count="1", body=RUNNING)
    fake.answers[("statistics", "query")] = lambda q: response(
        "fake", body='<statistics api_queries="5" workflow_instance_executing="1"/>'
        if q.get("type") == "global" else
        '<statistics><queue name="q1" concurrency="2" size="3" running_tasks="1" '
        'scheduler="fifo"/></statistics>'
    )
    fake.answers[("queuepool", "list")] = lambda q: response(
        "fake", body='<queue id="1" name="q1" concurrency="2" scheduler="default" dynamic="no"/>'
    )
    fake.answers[("workflow_schedules", "list")] = lambda q: response(
        "fake", body='<workflow_schedule id="4" workflow_name="wf" active="0" schedule=";;;;;">'
        '<parameter name="a" value="b"/></workflow_schedule>'
    )
    fake.answers[("workflows", "list")] = lambda q: response(
        "fake", body='<workflow id="2" name="wf" group="g" comment="c" lastcommit=""/>'
    )
    async with client(fake, "ws") as c:
        await c.cancel(7)
        (running,) = await c.status(limit=10)
        assert (running.id, running.running_tasks, running.node) == (7, 1, "fake")
        assert (await c.statistics())["api_queries"] == 5
        (queue,) = await c.queue_statistics()
        assert (queue.name, queue.size, queue.node) == ("q1", 3, "fake")
        assert await c.queues() == [Queue(1, "q1", 2, "default", False)]
        (schedule,) = await c.schedules()
        assert (schedule.id, schedule.active, schedule.parameters) == (4, False, {"a": "b"})
        assert [w.name for w in await c.workflows()] == ["wf"]
    assert fake.attrs("instance") == [{"action": "cancel", "id": "7"}]
    assert fake.attrs("status") == [{"action": "query", "type": "workflows", "limit": "10"}]
    assert fake.attrs("workflow_schedules") == [{"action": "list", "display_parameters": "yes"}]
