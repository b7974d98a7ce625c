"""Blocking flavour: :class:`Client` and :class:`Federation` drive the asyncio ones.

The session, federation and websocket logic exist once, in asyncio. Blocking objects run it on
one private event loop in a daemon thread shared by the whole process, so they work the same
from plain scripts, from several threads, and from code that already runs its own event loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, TypeVar

from lxml import etree

from evqueue.client.aio import DEFAULT_MAX_SIZE, AsyncClient, ProgressCallback, Query
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

T = TypeVar("T")


class _IoThread:
    """The event loop thread behind every blocking client (restarted in a forked child)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="evqueue-client-io", daemon=True
                )
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._running_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking evqueue client cannot be used from its own I/O thread "
                "(e.g. inside a progress callback)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: abandon the query, drop its connection
            raise


_io = _IoThread()


class _Blocking:
    """Blocking wrappers of the helpers shared by :class:`AsyncClient` and
    :class:`AsyncFederation`; see those classes for the documentation of each method."""

    _aio: AsyncClient | AsyncFederation

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        _io.run(self._aio.close())

    def query_raw(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        return _io.run(self._aio.query_raw(query, timeout=timeout))

    def query(self, query: Query, *, timeout: float | None = None) -> etree._Element:
        return _io.run(self._aio.query(query, timeout=timeout))

    def launch(
        self,
        name: str,
        parameters: Mapping[str, object] | None = None,
        *,
        mode: Literal["asynchronous", "synchronous"] = "asynchronous",
        timeout: int = 0,
        comment: str | None = None,
        host: str | None = None,
        user: str | None = None,
    ) -> int:
        return _io.run(
            self._aio.launch(
                name, parameters, mode=mode, timeout=timeout, comment=comment, host=host,
                user=user,
            )
        )

    def wait(
        self,
        instance_id: int,
        timeout: float = 0,
        *,
        progress: ProgressCallback | None = None,
        interval: float = 1.0,
    ) -> Instance:
        """Note: ``progress`` is called on the client's I/O thread."""
        return _io.run(
            self._aio.wait(instance_id, timeout, progress=progress, interval=interval)
        )

    def instance(self, instance_id: int) -> Instance:
        return _io.run(self._aio.instance(instance_id))

    def cancel(self, instance_id: int) -> None:
        _io.run(self._aio.cancel(instance_id))

    def instances(
        self,
        *,
        limit: int = 30,
        offset: int = 0,
        parameters: Mapping[str, object] | None = None,
        **filters: object,
    ) -> tuple[int, list[InstanceRow]]:
        return _io.run(
            self._aio.instances(limit=limit, offset=offset, parameters=parameters, **filters)
        )

    def status(self, limit: int = 0) -> list[Instance]:
        return _io.run(self._aio.status(limit))

    def statistics(self) -> Statistics:
        return _io.run(self._aio.statistics())

    def queue_statistics(self) -> list[QueueStatistics]:
        return _io.run(self._aio.queue_statistics())

    def queues(self) -> list[Queue]:
        return _io.run(self._aio.queues())

    def schedules(self) -> list[Schedule]:
        return _io.run(self._aio.schedules())

    def workflows(self) -> list[Workflow]:
        return _io.run(self._aio.workflows())


class Client(_Blocking):
    """Blocking client for one server; same API as :class:`AsyncClient`."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 30.0,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self._aio = AsyncClient(url, user, password, timeout, max_size=max_size)

    def __repr__(self) -> str:
        return f"Client({self.url!r}, user={self._aio.user!r})"

    @property
    def url(self) -> str:
        return self._aio.url

    @property
    def greeting(self) -> Greeting | None:
        """The last ``<ready>`` greeting; None before the first connection."""
        return self._aio.greeting

    def connect(self) -> Greeting:
        return _io.run(self._aio.connect())

    def ping(self) -> Ping:
        return _io.run(self._aio.ping())


class Federation(_Blocking):
    """Blocking client for several servers; same API as :class:`AsyncFederation`."""

    def __init__(
        self,
        servers: list[str] | str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 30.0,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._aio = AsyncFederation(
            servers, user, password, timeout, max_size=max_size, rng=rng
        )

    def __repr__(self) -> str:
        return f"Federation({self.urls!r})"

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self._aio.clients]

    @property
    def unreachable(self) -> dict[str, ConnectionError]:
        """Servers the last aggregated call could not reach, by URL."""
        return dict(self._aio.unreachable)

    def ping(self) -> list[Ping]:
        return _io.run(self._aio.ping())
