"""A federation of three real daemons: launches keep going when one is killed, none is lost or
duplicated, and aggregated statistics are the sum over the nodes."""

from __future__ import annotations

import signal
import time

from evqtest import create_workflow, one_task

from evqueue.client import Client, Federation


def test_federation_survives_a_dead_node(make_daemon):
    daemons = [make_daemon(**{"cluster.node.name": f"n{i}"}) for i in range(3)]
    for d in daemons:
        with d.client() as c:
            create_workflow(c, "w", one_task("/bin/true"))
    with Federation([d.url for d in daemons], "admin", "admin", timeout=10) as fed:
        for i in range(30):
            if i == 10:
                daemons[1].stop(signal.SIGKILL)
            fed.launch("w", comment=f"launch-{i}")
        stats = fed.statistics()
        assert fed.unreachable.keys() == {daemons[1].url}
        assert len(stats.parts) == 2
        assert stats["workflow_instance_launched"] == sum(
            s["workflow_instance_launched"] for s in stats.parts)
    daemons[1].start()  # the killed node resumes what it had
    comments = []
    for d in daemons:
        with Client(d.url, "admin", "admin") as c:
            for _ in range(100):
                if c.query('<status action="query" type="workflows" />').get("count") == "0":
                    break
                time.sleep(0.05)
            rows = c.query('<instances action="list" limit="100" />')
            comments += [r.get("comment") for r in rows]
    assert sorted(comments) == sorted(f"launch-{i}" for i in range(30))
