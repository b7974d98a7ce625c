"""The daemon's one lifecycle object: start-up, serving, reloads, signals, shutdown.

Start-up order follows the original (ops.md §1.3) where it matters to operators: storage and
schema first, then definitions, then resumed instances, then the listeners. SIGTERM stops the
listeners, saves running instances and leaves their task processes running (ops.md §1.6).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable

from evqueue import (
    VERSION,
    api,  # noqa: F401  (importing it registers every query handler)
)
from evqueue import log as evqlog
from evqueue.config import Config
from evqueue.engine.cluster import Cluster
from evqueue.engine.events import EventBus
from evqueue.engine.gc import GarbageCollector
from evqueue.engine.instance import WorkflowInstance
from evqueue.engine.instances import Instances
from evqueue.engine.notifications import Notifications
from evqueue.engine.queue_pool import QueuePool
from evqueue.engine.retry_schedules import RetrySchedules
from evqueue.engine.runner import Runner
from evqueue.engine.scheduler import Scheduler
from evqueue.engine.statistics import Statistics
from evqueue.engine.storage_module import Displays, Launchers, Variables
from evqueue.engine.tags import Tags
from evqueue.engine.users import ANONYMOUS, User, Users
from evqueue.engine.workflow_schedules import WorkflowSchedules
from evqueue.engine.workflows import Workflows
from evqueue.process.spawner import Spawner
from evqueue.protocol.framing import Framer
from evqueue.protocol.session import Session
from evqueue.storage import open_storage
from evqueue.transport.stream import StreamListeners
from evqueue.transport.websocket import WebsocketListener

log = logging.getLogger("evqueue.server")

#: Optional modules announced in the greeting (the React UI enables menus from it).
MODULES = [("git", VERSION), ("storage", VERSION)]


class Server:
    """Owns the configuration, the storage, the engine objects and the listeners."""

    def __init__(self, config: Config, *, wait_db: bool = False) -> None:
        self.config = config
        self.node: str = config["cluster.node.name"]
        self.auth_enabled: bool = config["core.auth.enable"]
        self.started_at = time.time()
        self.statistics = Statistics()
        self.events = EventBus()
        self.storage = open_storage(config, wait_db=wait_db)
        self.users = Users(self.storage)
        self.anonymous_user: User = ANONYMOUS
        self.queues = QueuePool(self.storage, config["queuepool.scheduler"], self.events)
        self.workflows = Workflows(self)
        self.retry_schedules = RetrySchedules(self)
        self.workflow_schedules = WorkflowSchedules(self)
        self.tags = Tags(self)
        self.notifications = Notifications(self)
        self.variables = Variables(self)
        self.launchers = Launchers(self)
        self.displays = Displays(self)
        self.instances = Instances(self)
        self.runner = Runner(self)
        self.queues.start_task = self.runner.start_task
        self.scheduler = Scheduler(self)
        self.cluster = Cluster(self)
        self.gc = GarbageCollector(self)
        self.stream = StreamListeners(self)
        self.websocket = WebsocketListener(self)
        #: module name (``control reload``) → coroutine reloading it from the database
        self.reloaders: dict[str, Callable[[], Awaitable[None]]] = {
            "queuepool": self.queues.reload,
            "workflows": self.workflows.reload,
            "scheduler": self.scheduler.reload,
            "retry_schedules": self.retry_schedules.reload,
            "users": self.users.reload,
            "tags": self.tags.reload,
            "notifications": self.notifications.reload,
            "launchers": self.launchers.reload,
            "displays": self.displays.reload,
        }
        self.spawner: Spawner | None = None
        self._stop = asyncio.Event()
        self._stopping = False
        self._trim_timer: asyncio.TimerHandle | None = None

    # -- sessions -------------------------------------------------------------------------
    def new_session(self, framer: Framer | None, *, newline: bool) -> Session:
        return Session(
            node=self.node,
            lookup_user=self.users.lookup,
            auth_enabled=self.auth_enabled,
            modules=MODULES,
            framer=framer,
            newline=newline,
        )

    @property
    def uptime(self) -> int:
        return int(time.time() - self.started_at)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, load every definition, then bind the listeners (fatal on failure)."""
        await self.storage.open()
        cfg = self.config
        if cfg["logger.db.enable"]:
            evqlog.attach_database(self.storage, self.events, self.node, cfg["logger.db.filter"])
        await self.workflow_schedules.reload()
        await self.reload_all()
        await self.instances.load_sequence()
        # the forker's socket and journal live beside its PID file, in a directory of their
        # own: several nodes may share one run directory (ops.md §4.5)
        forker_dir = os.path.splitext(os.path.abspath(cfg["forker.pidfile"]))[0] + ".d"
        os.makedirs(forker_dir, exist_ok=True)
        self.spawner = await Spawner.start(
            forker_dir,
            cfg["processmanager.logs.directory"], on_exit=self.runner.on_exit,
            on_progress=self.runner.on_progress, pidfile=cfg["forker.pidfile"],
            cwd=os.getcwd(), delete_logs=cfg["processmanager.logs.delete"],
        )
        self.runner.spawner = self.spawner
        await self.instances.resume()
        self.runner.resumed()
        self.scheduler.start()
        self.gc.start()
        # after the forker started, so that it and the tasks keep the limit they had
        _raise_fd_limit(cfg["network.connections.max"] + cfg["ws.connections.max"] + 256)
        await self.stream.start()
        await self.websocket.start()
        self._release_free_memory()
        log.log(evqlog.NOTICE, "evqueue core started")

    async def serve(self) -> None:
        """Run until a shutdown is requested, then stop cleanly."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Graceful shutdown (ops.md §1.6): tasks keep running, instances are saved."""
        log.log(evqlog.NOTICE, "Shutting down...")
        await self.stream.close_listeners()
        await self.websocket.close()
        self.scheduler.stop()
        self.gc.stop()
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        await self.stream.close_connections()
        await self.instances.suspend_all()
        if self.runner.remote is not None:
            await self.runner.remote.close()
        if self.spawner is not None:
            await self.spawner.close()
        await self.cluster.close()
        await self.storage.close()
        log.log(evqlog.NOTICE, "Clean exit")

    def _release_free_memory(self) -> None:
        """Give back to the system, once started and then every 10 s, the heap glibc keeps
        after frees (start-up, bursts of instances): 0.7 MB of the idle RSS, and without it a
        busy daemon's RSS creeps up (bench/soak.py at 50 launches/s: +1,067 KB/min, with it
        +182 KB/min). A trim costs well under a millisecond."""
        if _MALLOC_TRIM is None:
            return
        _MALLOC_TRIM(0)
        self._trim_timer = asyncio.get_running_loop().call_later(
            _TRIM_INTERVAL, self._release_free_memory)

    def request_shutdown(self) -> None:
        self._stop.set()

    async def reload_all(self) -> None:
        for reload in self.reloaders.values():
            await reload()

    async def reload(self, module: str) -> None:
        await self.reloaders[module]()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_terminate)
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)

    def _on_terminate(self) -> None:
        self._stopping = True
        self.request_shutdown()

    def _on_interrupt(self) -> None:
        if self._stopping:
            log.warning("Second SIGINT, forcing exit")
            os._exit(1)
        self._on_terminate()

    def _on_hangup(self) -> None:
        log.log(evqlog.NOTICE, "Got SIGHUP, reloading configuration")
        asyncio.ensure_future(self._reload_logged())

    async def _reload_logged(self) -> None:
        try:
            await self.reload_all()
        except Exception:
            log.exception("Reload failed")

    def _on_usr1(self) -> None:
        log.log(evqlog.NOTICE, "Got SIGUSR1, retrying waiting tasks now")
        self.retry_now()

    def retry_now(self) -> None:
        """Flush the retrier (SIGUSR1, ``control action="retry"``)."""
        for inst in list(self.instances.active.values()):
            inst.retry_all()

    def instance_ended(self, inst: WorkflowInstance) -> None:
        """Hooks run when an instance terminates (not when suspended at shutdown)."""
        self.scheduler.instance_ended(inst)
        self.notifications.instance_ended(inst)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _find_malloc_trim()
_TRIM_INTERVAL = 10.0


def _raise_fd_limit(needed: int) -> None:
    """Room for every connection the configuration allows: raise the soft RLIMIT_NOFILE
    (within the hard limit), else accept() fails with EMFILE once per second in the logs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < needed:
        log.warning("Open files limited to %d by the hard limit: the %d connections allowed "
                    "may not all be accepted", new, needed)
