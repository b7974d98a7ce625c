"""Python client of the evQueue API, blocking and asyncio, for one server or a federation.

Blocking::

    from evqueue.client import Client

    with Client("tcp://localhost:5000", "admin", "admin") as evq:
        iid = evq.launch("backup", {"db": "prod"}, comment="nightly")
        final = evq.wait(iid, timeout=3600)
        print(final.status, final.errors)
        total, rows = evq.instances(workflow="backup", error=True, limit=10)
        evq.query('<control action="reload" module="workflows" />')   # anything else

asyncio: the same methods on :class:`AsyncClient`, awaited (``async with AsyncClient(...)``).

URLs: ``tcp://host[:port]`` (5000), ``unix:///run/evqueue/evqueue.socket``,
``ws://host[:port]`` (5001, websocket ``api`` sub-protocol). The connection is opened on first
use, kept open, reopened after any failure; ``close()`` sends ``<quit />``.

Errors: a KO answer raises :class:`EvqError` (``.code`` is the server's ``error-code``,
``.message`` its text); :meth:`~AsyncClient.query_raw` returns KO answers instead. Failing to
get an answer raises :class:`EvqConnectionError`, a ``ConnectionError`` (timeouts:
:class:`EvqTimeout`).

Several servers: :class:`Federation` / :class:`AsyncFederation` take a list of URLs or
``$EVQUEUE_SERVERS`` (``"tcp://a:5000,unix:///run/evqueue/b.sock"``), launch on a random
server with failover, route instance ids to their owner node and merge read-only views.
"""

from evqueue.client.aio import AsyncClient
from evqueue.client.blocking import Client, Federation
from evqueue.client.errors import (
    AllServersFailed,
    EvqConnectionError,
    EvqError,
    EvqTimeout,
    ProtocolError,
)
from evqueue.client.federation import AsyncFederation
from evqueue.client.model import (
    Greeting,
    Instance,
    InstanceRow,
    Ping,
    Queue,
    QueueStatistics,
    Schedule,
    Statistics,
    Workflow,
)

__all__ = [
    "AllServersFailed",
    "AsyncClient",
    "AsyncFederation",
    "Client",
    "EvqConnectionError",
    "EvqError",
    "EvqTimeout",
    "Federation",
    "Greeting",
    "Instance",
    "InstanceRow",
    "Ping",
    "ProtocolError",
    "Queue",
    "QueueStatistics",
    "Schedule",
    "Statistics",
    "Workflow",
]
