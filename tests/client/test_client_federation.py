"""Federation: random launch with failover, aggregation with a server down, owner routing."""

from __future__ import annotations

import random

import pytest
from fakeserver import FakeServer, ko, response

from evqueue.client import (
    AllServersFailed,
    AsyncFederation,
    EvqConnectionError,
    EvqError,
    Federation,
)
from evqueue.client.federation import server_list


class Pick(random.Random):
    """Always starts the failover rotation at ``index``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def randrange(self, *args: object, **kwargs: object) -> int:
        return self.index


def running(node: str, iid: int, end: str = "") -> str:
    return (f'<workflow id="{iid}" name="wf" node_name="{node}" status="EXECUTING" '
            f'end_time="{end}" errors="0"><tags/></workflow>')


def serve_launches(*servers: FakeServer) -> None:
    for n, server in enumerate(servers):
        server.answers[("instance", "launch")] = (
            lambda q, s=server, iid=100 + n: response(s.node, workflow_instance_id=iid)
        )


def launches(server: FakeServer) -> int:
    return len([a for a in server.attrs("instance") if a["action"] == "launch"])


def test_server_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVQUEUE_SERVERS", "tcp://a:5000, unix:///run/evqueue/b.sock,")
    assert server_list() == ["tcp://a:5000", "unix:///run/evqueue/b.sock"]
    assert server_list("ws://x") == ["ws://x"]
    assert server_list(["tcp://a", " "]) == ["tcp://a"]
    assert [c.url for c in AsyncFederation(user="u").clients] == server_list()
    monkeypatch.delenv("EVQUEUE_SERVERS")
    with pytest.raises(ValueError, match="EVQUEUE_SERVERS"):
        AsyncFederation()


async def test_launch_picks_a_random_server(make_fake) -> None:
    a, b = make_fake("a"), make_fake("b")
    serve_launches(a, b)
    fed = AsyncFederation([a.tcp_url, b.unix_url], "admin", "admin", rng=random.Random(3))
    ids = {await fed.launch("wf", {"p": 1}) for _ in range(20)}
    await fed.close()
    assert ids == {100, 101} and launches(a) + launches(b) == 20


async def test_launch_fails_over_past_a_dead_server(make_fake, closed_url: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    b.refuse = True  # accepts, then closes before the greeting
    serve_launches(a)
    fed = AsyncFederation([closed_url, b.tcp_url, a.ws_url], "admin", "admin", rng=Pick(0))
    assert await fed.launch("wf") == 100
    assert b.connections == 1 and launches(a) == 1
    # The owner is remembered: cancel goes straight to it.
    a.answers[("instance", "cancel")] = lambda q: response("a")
    await fed.cancel(100)
    assert [x["action"] for x in a.attrs("instance")] == ["launch", "cancel"]
    await fed.close()


async def test_launch_is_not_repeated_after_it_was_sent(make_fake) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.answers[("instance", "launch")] = lambda q: [None]  # received, then the node dies
    serve_launches(b)
    fed = AsyncFederation([a.tcp_url, b.tcp_url], "admin", "admin", rng=Pick(0))
    with pytest.raises(EvqConnectionError) as err:
        await fed.launch("wf")
    assert err.value.sent and launches(a) == 1 and launches(b) == 0
    await fed.close()


async def test_all_servers_down(make_fake, closed_url: str) -> None:
    dead = make_fake("dead")
    dead.refuse = True
    fed = AsyncFederation([closed_url, dead.unix_url], "admin", "admin")
    with pytest.raises(AllServersFailed) as err:
        await fed.launch("wf")
    assert set(err.value.errors) == {closed_url, dead.unix_url}
    assert isinstance(err.value, ConnectionError) and not err.value.sent
    with pytest.raises(AllServersFailed):
        await fed.statistics()


async def test_aggregation_skips_the_server_that_is_down(make_fake, closed_url: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    for server, n, iid in ((a, 3, 9), (b, 4, 3)):
        server.answers[("statistics", "query")] = lambda q, s=server, n=n: response(
            s.node, body=f'<statistics api_queries="{n}" workflow_instance_executing="1"/>'
            if q.get("type") == "global" else
            f'<statistics><queue name="q" concurrency="1" size="{n}" running_tasks="0" '
            'scheduler="fifo"/></statistics>'
        )
        server.answers[("status", "query")] = lambda q, s=server, iid=iid: response(
            s.node, count="1", body=running(s.node, iid)
        )
    fed = AsyncFederation([a.tcp_url, closed_url, b.ws_url], "admin", "admin")
    stats = await fed.statistics()
    assert stats["api_queries"] == 7 and stats["workflow_instance_executing"] == 2
    assert sorted(p.node for p in stats.parts) == ["a", "b"]
    assert list(fed.unreachable) == [closed_url]
    assert sorted(p.node for p in await fed.ping()) == ["a", "b"]
    assert [(i.id, i.node) for i in await fed.status()] == [(3, "b"), (9, "a")]
    assert sorted((q.node, q.size) for q in await fed.queue_statistics()) == [("a", 3), ("b", 4)]
    await fed.close()


async def test_instance_lists_are_merged_per_node(make_fake, closed_url: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.answers[("instances", "list")] = lambda q: response("a", rows="2", body=(
        running("a", 1, "2024-01-01 10:00:01") + running("a", 4, "2024-01-01 10:00:04")
    ).replace("EXECUTING", "TERMINATED"))
    b.answers[("instances", "list")] = lambda q: response("b", rows="2", body=(
        running("b", 2, "2024-01-01 10:00:02").replace("EXECUTING", "TERMINATED")
        + running("b", 3)
    ))
    fed = AsyncFederation([a.unix_url, b.tcp_url, closed_url], "admin", "admin")
    total, rows = await fed.instances(limit=2, offset=1, workflow="wf")
    assert total == 4 and [(r.id, r.node) for r in rows] == [(2, "b"), (1, "a")]
    assert rows[0].server == b.tcp_url and list(fed.unreachable) == [closed_url]
    assert a.attrs("instances") == [{"action": "list", "limit": "3", "offset": "0",
                                     "filter_node": "a", "filter_workflow": "wf"}]
    total, rows = await fed.instances(node="b")
    assert total == 2 and {r.node for r in rows} == {"b"}
    assert len(a.attrs("instances")) == 1 and b.attrs("instances")[-1]["filter_node"] == "b"
    await fed.close()


async def test_instance_ids_are_routed_to_their_owner(make_fake, closed_url: str) -> None:
    a, b, c = make_fake("a"), make_fake("b"), make_fake("c")
    a.answers[("instance", "query")] = lambda q: ko(
        "a", "Workflow instance is still running on another node, query the corresponding node",
        "WRONG_NODE")
    b.answers[("instance", None)] = lambda q: response(
        "b", body='<workflow id="7" name="wf" status="EXECUTING"/>'
    ) if q.get("action") == "query" else response("b")
    c.answers[("instance", "query")] = lambda q: ko("c", "Unknown workflow instance",
                                                    "UNKNOWN_INSTANCE")
    fed = AsyncFederation([a.tcp_url, closed_url, b.tcp_url, c.tcp_url], "admin", "admin")
    inst = await fed.instance(7)
    assert (inst.node, inst.status) == ("b", "EXECUTING")
    await fed.cancel(7)
    raw = await fed.query_raw('<instance action="killtask" id="7" pid="12"/>')
    assert raw.get("node") == "b"
    assert [x["action"] for x in b.attrs("instance")] == ["query", "cancel", "killtask"]
    assert len(a.attrs("instance")) == 1 and c.attrs("instance") == []
    await fed.close()


async def test_unknown_instance_everywhere(make_fake) -> None:
    a, b = make_fake("a"), make_fake("b")
    for server in (a, b):
        server.answers[("instance", "query")] = lambda q, s=server: ko(
            s.node, "Unknown workflow instance", "UNKNOWN_INSTANCE")
    fed = AsyncFederation([a.tcp_url, b.tcp_url], "admin", "admin")
    with pytest.raises(EvqError) as err:
        await fed.wait(99)
    assert err.value.code == "UNKNOWN_INSTANCE"
    raw = await fed.query_raw('<instance action="query" id="99"/>')
    assert raw.get("error-code") == "UNKNOWN_INSTANCE"
    assert len(a.attrs("instance")) == len(b.attrs("instance")) == 2
    await fed.close()


async def test_other_errors_stop_the_owner_search(make_fake) -> None:
    a, b = make_fake("a"), make_fake("b")
    a.answers[("instance", "query")] = lambda q: ko("a", "insufficient rights",
                                                    "INSUFFICIENT_RIGHTS")
    fed = AsyncFederation([a.tcp_url, b.tcp_url], "admin", "admin")
    with pytest.raises(EvqError) as err:
        await fed.instance(1)
    assert err.value.code == "INSUFFICIENT_RIGHTS" and b.attrs("instance") == []
    await fed.close()


async def test_definitions_come_from_any_reachable_server(make_fake, closed_url: str) -> None:
    a = make_fake("a")
    a.answers[("queuepool", "list")] = lambda q: response(
        "a", body='<queue id="1" name="q" concurrency="1" scheduler="fifo" dynamic="no"/>')
    fed = AsyncFederation([closed_url, a.tcp_url], "admin", "admin", rng=Pick(0))
    assert [q.name for q in await fed.queues()] == ["q"]
    await fed.close()


def test_blocking_federation(make_fake, closed_url: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    serve_launches(a, b)
    with Federation(f"{a.tcp_url},{closed_url},{b.unix_url}", "admin", "admin") as fed:
        assert fed.urls == [a.tcp_url, closed_url, b.unix_url]
        assert sorted(p.node for p in fed.ping()) == ["a", "b"]
        assert list(fed.unreachable) == [closed_url]
        assert fed.launch("wf") in (100, 101)
