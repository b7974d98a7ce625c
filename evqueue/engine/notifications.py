"""Notification plugins (ops.md §6, protocol.md §3.10, errata 2, 3, 4, 9 and 18).

A *type* is an installed plugin: its manifest, its executable (kept in the database and
written to ``<notifications.tasks.directory>/<type id>`` by :meth:`Notifications.sync_binaries`)
and a plugin-level JSON configuration. A *notification* is a named configuration of a type
(JSON parameters); workflows are bound to notifications in ``t_workflow_notification``, whose
cache is the workflows' (``Workflow.notifications``).

Types and notifications are cached and reloaded after every change; mutations leave the
reload to the caller. Unlike the original, an edit naming an unknown type changes nothing,
and unregistering a type removes every binding of its notifications whatever its scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import tempfile
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.engine.workflows import parse_stored, stored_text
from evqueue.log import NOTICE
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Tx, now

if TYPE_CHECKING:
    from evqueue.engine.instance import WorkflowInstance
    from evqueue.server import Server

log = logging.getLogger(__name__)

SCOPES = ("WORKFLOW", "ELOGS")
#: Largest file accepted inside a plugin zip once decompressed (guards against zip bombs).
MAX_PLUGIN_FILE = 64 * 1024 * 1024
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass(frozen=True, slots=True)
class NotificationType:
    id: int
    name: str
    scope: str  # WORKFLOW | ELOGS
    description: str
    manifest: str  # the plugin's manifest.xml
    conf: bytes  # plugin-level configuration (JSON), given to every run as ``pluginconf``

    def manifest_document(self) -> etree._Element:
        return parse_stored(self.manifest)


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    type_id: int
    name: str
    subscribe_all: bool
    parameters: str  # JSON, given to every run as ``notificationconf``


@dataclass(frozen=True, slots=True)
class Plugin:
    """What ``notification_type register`` found in a plugin zip."""

    name: str
    description: str
    scope: str
    manifest: str
    binary: bytes


def read_plugin(data: bytes) -> Plugin:
    """Unpack and check a plugin zip (ops.md §6.1). Archive errors have no code (errata 18)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise ApiError(None, "Unable to open Zip archive") from None
    with archive:
        manifest_bytes = _zip_member(archive, "manifest.xml")
        try:
            root = etree.fromstring(manifest_bytes, _PARSER)
        except etree.XMLSyntaxError as e:
            raise ApiError("INVALID_PARAMETER", f"Invalid manifest : {e}") from None

        def tag(name: str) -> str | None:
            found = root.xpath(f"/plugin/{name}")
            return "".join(found[0].itertext()) if found else None

        values = {}
        for name in ("name", "description", "binary"):
            value = tag(name)
            if not value:
                raise ApiError("INVALID_PARAMETER", f"Missing '{name}' tag in manifest")
            values[name] = value
        scope = tag("scope") or "WORKFLOW"
        if scope not in SCOPES:
            raise ApiError("INVALID_PARAMETER", "Invalid scope, should be 'WORKFLOW' or 'ELOGS'")
        return Plugin(values["name"], values["description"], scope,
                      stored_text(manifest_bytes, root), _zip_member(archive, values["binary"]))


def _zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ApiError(None, f"File not found : {name}") from None
    if info.file_size > MAX_PLUGIN_FILE:
        raise ApiError("INVALID_PARAMETER", f"File too large in Zip archive : {name}")
    try:
        with archive.open(info) as f:
            return f.read(MAX_PLUGIN_FILE + 1)[:MAX_PLUGIN_FILE]
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError,
            EOFError) as e:
        raise ApiError(None, f"Unable to read {name} from Zip archive : {e}") from None


def _unknown_type() -> ApiError:
    return ApiError("UNKNOWN_NOTIFICATION_TYPE", "Unknown notification type ID")


def _unknown_notification() -> ApiError:
    return ApiError("UNKNOWN_NOTIFICATION", "Unable to find notification")


def _unknown_conf_type() -> ApiError:
    return ApiError("UNKNOWN_NOTIFICATION_TYPE", "Unable to find notification type")


class Notifications:
    """Every plugin type and configured notification, by id."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._storage = server.storage
        self.directory: str = server.config["notifications.tasks.directory"]
        self._types: dict[int, NotificationType] = {}
        self._notifications: dict[int, Notification] = {}
        self._concurrency: int = server.config["notifications.tasks.concurrency"]
        self._running = 0
        self._seq = 0  # names the stderr files of plugin runs
        self._plugins: set[asyncio.Task] = set()

    async def reload(self) -> None:
        types = {
            tid: NotificationType(tid, name, scope, description or "", manifest or "",
                                  bytes(conf or b""))
            for tid, name, scope, description, manifest, conf in await self._storage.query(
                "SELECT notification_type_id, notification_type_name, notification_type_scope, "
                "notification_type_description, notification_type_manifest, "
                "notification_type_conf_content FROM t_notification_type")
        }
        notifications = {
            nid: Notification(nid, tid, name, bool(subscribe_all), parameters or "")
            for nid, tid, name, subscribe_all, parameters in await self._storage.query(
                "SELECT notification_id, notification_type_id, notification_name, "
                "notification_subscribe_all, notification_parameters FROM t_notification")
        }
        self._types = types
        self._notifications = notifications

    # -- types ----------------------------------------------------------------------------
    def get_type(self, type_id: int) -> NotificationType:
        try:
            return self._types[type_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown NotificationType ID : {type_id}") from None

    def types(self) -> list[NotificationType]:
        """Sorted by name (``notification_types list``)."""
        return sorted(self._types.values(), key=lambda t: t.name)

    def binary_path(self, type_id: int) -> str:
        """Where a type's executable is run from (named by the numeric id, like the original,
        so that plugins installed by either engine are found)."""
        return os.path.join(self.directory, str(type_id))

    def get_conf(self, type_id: int) -> bytes:
        try:
            return self._types[type_id].conf
        except KeyError:
            raise _unknown_conf_type() from None

    async def set_conf(self, type_id: int, conf: bytes) -> None:
        result = await self._storage.execute(
            "UPDATE t_notification_type SET notification_type_conf_content = %s "
            "WHERE notification_type_id = %s", (conf, type_id))
        if not result.rowcount:
            raise _unknown_conf_type()

    async def register(self, plugin: Plugin) -> int:
        """Install a plugin, or update the type of the same name (its configuration is kept);
        then write the binaries."""

        def upsert(tx: Tx) -> int:
            values = (plugin.scope, plugin.description, plugin.manifest, plugin.binary)
            row = tx.query("SELECT notification_type_id FROM t_notification_type "
                           "WHERE notification_type_name = %s", (plugin.name,))
            if row:
                tx.execute(
                    "UPDATE t_notification_type SET notification_type_scope = %s, "
                    "notification_type_description = %s, notification_type_manifest = %s, "
                    "notification_type_binary_content = %s WHERE notification_type_id = %s",
                    (*values, row[0][0]))
                return row[0][0]
            return tx.execute(
                "INSERT INTO t_notification_type (notification_type_scope, "
                "notification_type_description, notification_type_manifest, "
                "notification_type_binary_content, notification_type_name, "
                "notification_type_conf_content) VALUES (%s, %s, %s, %s, %s, %s)",
                (*values, plugin.name, b"")).lastrowid

        type_id = await self._storage.transaction(upsert)
        await self.sync_binaries()
        return type_id

    async def unregister(self, type_id: int) -> None:
        """Remove a type, its notifications, all their workflow bindings and its binary."""
        self.get_type(type_id)

        def delete(tx: Tx) -> None:
            tx.execute(
                "DELETE FROM t_workflow_notification WHERE notification_id IN "
                "(SELECT notification_id FROM t_notification WHERE notification_type_id = %s)",
                (type_id,))
            tx.execute("DELETE FROM t_notification WHERE notification_type_id = %s", (type_id,))
            tx.execute("DELETE FROM t_notification_type WHERE notification_type_id = %s",
                       (type_id,))

        await self._storage.transaction(delete)
        await asyncio.to_thread(_remove, self.binary_path(type_id))

    async def sync_binaries(self) -> None:
        """Write every type's executable whose file is missing or differs (mode 0755)."""
        rows = await self._storage.query(
            "SELECT notification_type_id, notification_type_binary_content "
            "FROM t_notification_type")
        binaries = [(self.binary_path(tid), bytes(b)) for tid, b in rows if b is not None]
        await asyncio.to_thread(_write_binaries, binaries)

    # -- notifications --------------------------------------------------------------------
    def get(self, notification_id: int) -> Notification:
        try:
            return self._notifications[notification_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT",
                           f"Unknown Notification ID : {notification_id}") from None

    def scope_of(self, notification: Notification) -> str:
        type_ = self._types.get(notification.type_id)
        return type_.scope if type_ else ""

    def all(self, scope: str = "*") -> list[Notification]:
        """Sorted by name, restricted to the types of ``scope`` unless it is ``*``."""
        return sorted(
            (n for n in self._notifications.values() if scope in ("*", self.scope_of(n))),
            key=lambda n: (n.name, n.id))

    def for_workflow(self, workflow_id: int) -> list[tuple[Notification, NotificationType]]:
        """The notifications to run when an instance of the workflow ends (WORKFLOW scope)."""
        workflow = self._server.workflows.find(workflow_id)
        bound = []
        for notification_id in workflow.notifications if workflow else ():
            notification = self._notifications.get(notification_id)
            if notification is not None and self.scope_of(notification) == "WORKFLOW":
                bound.append((notification, self._types[notification.type_id]))
        return bound

    def _check(self, type_id: int, name: str) -> None:
        if not name:
            raise ApiError("INVALID_PARAMETER", "Name cannot be empty")
        if type_id not in self._types:
            raise _unknown_type()

    async def create(self, type_id: int, name: str, parameters: str,
                     subscribe_all: bool) -> int:
        """Create a notification; ``subscribe_all`` binds it to every existing workflow (and
        workflow creation binds new ones)."""
        self._check(type_id, name)

        def insert(tx: Tx) -> int:
            notification_id = tx.execute(
                "INSERT INTO t_notification (notification_type_id, notification_name, "
                "notification_subscribe_all, notification_parameters) VALUES (%s, %s, %s, %s)",
                (type_id, name, int(subscribe_all), parameters)).lastrowid
            if subscribe_all:
                _subscribe_all(tx, notification_id)
            return notification_id

        return await self._storage.transaction(insert)

    async def edit(self, notification_id: int, type_id: int, name: str, parameters: str,
                   subscribe_all: bool) -> None:
        self._check(type_id, name)

        def update(tx: Tx) -> None:
            if not tx.execute(
                "UPDATE t_notification SET notification_type_id = %s, notification_name = %s, "
                "notification_subscribe_all = %s, notification_parameters = %s "
                "WHERE notification_id = %s",
                (type_id, name, int(subscribe_all), parameters, notification_id),
            ).rowcount:
                raise _unknown_notification()
            if subscribe_all:
                _subscribe_all(tx, notification_id)

        await self._storage.transaction(update)

    async def delete(self, notification_id: int) -> None:
        """Delete a notification and its workflow bindings."""

        def delete(tx: Tx) -> int:
            deleted = tx.execute("DELETE FROM t_notification WHERE notification_id = %s",
                                 (notification_id,)).rowcount
            tx.execute("DELETE FROM t_workflow_notification WHERE notification_id = %s",
                       (notification_id,))
            return deleted

        if not await self._storage.transaction(delete):
            raise _unknown_notification()

    def instance_ended(self, inst: WorkflowInstance) -> None:
        """Run every notification bound to the instance's workflow (ops.md §6.2). Plugins run
        in the background: their failures and timeouts are logged, never felt by the engine.
        """
        bound = self.for_workflow(inst.workflow_id)
        if not bound:
            return
        xml = etree.tostring(inst.doc, encoding="unicode")
        for notification, type_ in bound:
            if self._running >= self._concurrency:
                log.warning("Maximum concurrency reached for notifications calls, dropping "
                            "call to notification %s of instance %s", notification.id, inst.id)
                continue
            self._running += 1
            task = asyncio.ensure_future(self._run_plugin(inst, xml, notification, type_))
            self._plugins.add(task)
            task.add_done_callback(self._plugins.discard)

    async def _run_plugin(self, inst: WorkflowInstance, xml: str, notification: Notification,
                          type_: NotificationType) -> None:
        """One plugin run: argv = instance id, error count, API socket path; stdin = JSON;
        stderr to a file, kept in ``t_log_notifications`` when the plugin fails."""
        label = f"Notification {notification.name} ({type_.name}) of instance {inst.id}"
        try:
            await self._execute(inst, xml, notification, type_, label)
        except Exception as e:
            log.error("%s could not be run: %s", label, e)
        finally:
            self._running -= 1

    async def _execute(self, inst: WorkflowInstance, xml: str, notification: Notification,
                       type_: NotificationType, label: str) -> None:
        cfg = self._server.config
        binary = self.binary_path(type_.id)
        if not os.path.exists(binary):  # a new node or a wiped directory (often /tmp)
            await self.sync_binaries()
        payload = json.dumps({"instance": xml, "pluginconf": _json(type_.conf),
                              "notificationconf": _json(notification.parameters)}).encode()
        self._seq += 1
        stderr_path = os.path.join(
            cfg["notifications.logs.directory"],
            f"notif_{os.getpid()}_{self._seq}_{notification.id}.stderr")
        try:
            with open(stderr_path, "wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    binary, str(inst.id), str(inst.errors), cfg["network.bind.path"],
                    cwd=self.directory, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL, stderr=stderr, start_new_session=True)
            try:
                await asyncio.wait_for(_feed_and_wait(proc, payload),
                                       cfg["notifications.tasks.timeout"] or None)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the plugin and its children
                await proc.wait()
                log.warning("%s timed out", label)
                return
            if proc.returncode == 0:
                log.log(NOTICE, "%s executed successfully", label)
                return
            log.warning("%s returned %s", label, proc.returncode)
            message = await asyncio.to_thread(_read_head, stderr_path,
                                              cfg["notifications.logs.maxsize"])
            await self._storage.execute(
                "INSERT INTO t_log_notifications (node_name, log_notifications_pid, "
                "log_notifications_message, log_notifications_timestamp) "
                "VALUES (%s, %s, %s, %s)",
                (self._server.node, proc.pid, message.decode("utf-8", "replace"), now()))
            self._server.events.publish("LOG_NOTIFICATION")
        finally:
            if cfg["notifications.logs.delete"]:
                await asyncio.to_thread(_remove, stderr_path)


async def _feed_and_wait(proc: asyncio.subprocess.Process, payload: bytes) -> None:
    """Write the JSON document then EOF (a plugin may exit without reading it), then wait."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(payload)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        proc.stdin.close()
    await proc.wait()


def _read_head(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _json(text: str | bytes) -> object:
    """A stored JSON configuration as an object (empty or invalid: an empty object)."""
    try:
        value = json.loads(text or b"{}")
    except ValueError:
        return {}
    return value


def _subscribe_all(tx: Tx, notification_id: int) -> None:
    """Bind a notification to every workflow not bound to it yet."""
    tx.execute(
        "INSERT INTO t_workflow_notification (workflow_id, notification_id) "
        "SELECT workflow_id, %s FROM t_workflow WHERE workflow_id NOT IN "
        "(SELECT workflow_id FROM t_workflow_notification WHERE notification_id = %s)",
        (notification_id, notification_id))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_binaries(binaries: list[tuple[str, bytes]]) -> None:
    """Rewrite the files whose content differs, atomically (a plugin may be starting)."""
    for path, content in binaries:
        try:
            with open(path, "rb") as f:
                if f.read() == content:
                    continue
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".plugin-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
