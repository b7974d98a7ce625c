"""One-node-only actions decided by the database (issue #14): several nodes (one storage, so
one connection and one writer thread, each) race for the same claim or lease; exactly one wins,
on SQLite and on MariaDB."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from evqueue.engine.cluster import claim, release_lease, renew_leases, take_lease
from evqueue.storage.base import now
from evqueue.storage.threaded import ThreadedStorage

NODES = 4
ROUNDS = 15
TTL = 6.0
#: (the table also holds the writers' short-lived commit markers on MariaDB)
LEASE_7 = "WHERE claim_name = 'running_7'"


@pytest.fixture
async def nodes(backend) -> AsyncIterator[list[ThreadedStorage]]:
    storages = [backend.make() for _ in range(NODES)]
    try:
        for st in storages:  # one by one: the first creates the schema
            await st.open()
        yield storages
    finally:
        for st in storages:
            await st.close()


async def race(nodes: list[ThreadedStorage],
               attempt: Callable[[ThreadedStorage, str], Awaitable[bool]],
               first: int = 0) -> list[bool]:
    """Run ``attempt(storage, node name)`` on every node from ``first`` at once (node ``i``
    is named ``n<i>``): each writer thread is held in a transaction until all have queued
    their attempt, then all are released together."""
    racers = list(enumerate(nodes))[first:]
    gate = threading.Event()
    held = [st.transaction(lambda tx: gate.wait(5)) for _, st in racers]
    attempts = [asyncio.ensure_future(attempt(st, f"n{i}")) for i, st in racers]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*held)
    return list(await asyncio.gather(*attempts))


async def test_one_node_wins_each_occurrence_claim(backend, nodes):
    for k in range(ROUNDS):
        name = f"scheduledwf_1_{1_700_000_000 + k}"
        wins = await race(nodes, lambda st, node, name=name: claim(st, name, node))
        assert sum(wins) == 1, (k, wins)
        rows = backend.admin("SELECT node_name FROM t_evqueue_claim WHERE claim_name = %s",
                             (name,))
        assert rows == [(f"n{wins.index(True)}",)]
    # one run per occurrence: a second claim loses, even the winner's
    assert await claim(nodes[0], "gc_1", "n0")
    assert not await claim(nodes[0], "gc_1", "n0")
    assert not await claim(nodes[1], "gc_1", "n1")


async def test_one_node_takes_a_free_or_stale_lease_over(backend, nodes):
    stale = now(time.time() - 2 * TTL)
    for k in range(ROUNDS):
        name = f"running_{k}"
        if k % 2:  # a dead node's lease; otherwise no row at all
            backend.admin("INSERT INTO t_evqueue_claim (claim_name, node_name, claim_time) "
                          "VALUES (%s, 'dead', %s)", (name, stale))
        wins = await race(nodes, lambda st, node, name=name: take_lease(st, name, node, TTL))
        assert sum(wins) == 1, (k, wins)
        rows = backend.admin("SELECT node_name FROM t_evqueue_claim WHERE claim_name = %s",
                             (name,))
        assert rows == [(f"n{wins.index(True)}",)]


async def test_a_fresh_lease_is_kept_by_its_holder_alone(backend, nodes):
    assert await take_lease(nodes[0], "running_7", "n0", TTL)
    wins = await race(nodes, lambda st, node: take_lease(st, "running_7", node, TTL), first=1)
    assert wins == [False] * (NODES - 1)
    assert await take_lease(nodes[0], "running_7", "n0", TTL)  # the holder keeps it
    # a renewal by another node does not touch it; the holder's does
    backend.admin("UPDATE t_evqueue_claim SET claim_time = %s", (now(time.time() - 60),))
    renew_leases(nodes[1], ["running_7"], "n1")
    await nodes[1].flush()
    assert backend.admin(f"SELECT claim_time < %s FROM t_evqueue_claim {LEASE_7}",
                         (now(time.time() - 30),)) == [(1,)]
    renew_leases(nodes[0], ["running_7"], "n0")
    await nodes[0].flush()
    assert backend.admin(f"SELECT claim_time < %s FROM t_evqueue_claim {LEASE_7}",
                         (now(time.time() - 30),)) == [(0,)]
    # a release by another node does not free it; the holder's does
    release_lease(nodes[1], "running_7", "n1")
    await nodes[1].flush()
    assert backend.admin(f"SELECT node_name FROM t_evqueue_claim {LEASE_7}") == [("n0",)]
    release_lease(nodes[0], "running_7", "n0")
    await nodes[0].flush()
    assert await take_lease(nodes[2], "running_7", "n2", TTL)
