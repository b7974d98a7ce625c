"""The blocking Client (the asyncio client driven from its private I/O thread)."""

from __future__ import annotations

import threading

import pytest
from fakeserver import FakeServer, eventually, ko, response

from evqueue.client import Client, EvqConnectionError, EvqError


@pytest.mark.parametrize("kind", ["tcp", "unix", "ws"])
def test_blocking_client(fake: FakeServer, kind: str) -> None:
    fake.answers[("instance", "launch")] = lambda q: response("fake", workflow_instance_id="8")
    fake.answers[("instance", "cancel")] = lambda q: ko("fake", "Unknown workflow instance",
                                                        "UNKNOWN_INSTANCE")
    with Client(fake.url(kind), "admin", "admin") as c:
        assert c.greeting is None and c.url == fake.url(kind)
        assert c.connect().node == "fake" and c.greeting is not None
        assert c.launch("wf", {"a": "b"}) == 8
        with pytest.raises(EvqError) as err:
            c.cancel(8)
        assert err.value.code == "UNKNOWN_INSTANCE"
        assert c.query_raw("<nope/>").get("error-code") == "UNKNOWN_COMMAND"
        assert c.ping().uptime == 12
    assert fake.connections == 1
    if kind != "ws":
        assert eventually(lambda: fake.quits == 1)


def test_blocking_errors(closed_url: str) -> None:
    with pytest.raises(EvqConnectionError), Client(closed_url) as c:
        c.ping()
    with pytest.raises(ValueError, match="invalid server URL"):
        Client("localhost:5000")


def test_blocking_client_from_threads_and_inside_an_event_loop(fake: FakeServer) -> None:
    fake.answers[("ping", None)] = lambda q: [0.05, response("fake", uptime="4")]
    clients = [Client(fake.tcp_url, "admin", "admin") for _ in range(4)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.ping().uptime))
               for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [4] * 4 and fake.connections == 4
    for c in clients:
        c.close()


async def test_blocking_client_inside_a_running_loop(fake: FakeServer) -> None:
    with Client(fake.unix_url, "admin", "admin") as c:
        assert c.ping().node == "fake"


def test_progress_callback_cannot_reenter_the_blocking_client(fake: FakeServer) -> None:
    running = '<workflow id="1" name="wf" status="EXECUTING"/>'
    fake.answers[("instance", "query")] = lambda q: response("fake", body=running)
    with Client(fake.tcp_url, "admin", "admin") as c:
        with pytest.raises(RuntimeError, match="I/O thread"):
            c.wait(1, progress=lambda i: c.ping())
        assert c.ping().node == "fake"
