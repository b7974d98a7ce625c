"""Workflow definitions (protocol.md §3.5, workflow.md §1.5): the in-memory cache of
``t_workflow`` and its notification bindings, and the checked mutations.

The cache is reloaded after every change (here and, through ``control reload``, on the other
nodes of a cluster); lookups never touch the database. Mutations validate first, then write in
one transaction, and leave the reload to the caller so that one reload serves a whole query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.engine.definitions import WorkflowDefinition, parse_workflow
from evqueue.protocol.errors import ApiError
from evqueue.storage.base import DuplicateEntry, Tx

if TYPE_CHECKING:
    from evqueue.server import Server

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=True)


def parse_stored(xml: str) -> etree._Element:
    """A fresh element tree of a stored definition (workflow or retry schedule); a row
    spoilt outside the API is a KO answer, not an unexpected exception."""
    try:
        return etree.fromstring(xml.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError:
        raise ApiError(None, "Invalid XML document") from None


def stored_text(content: bytes, root: etree._Element) -> str:
    """What to store for validated definition bytes: the text verbatim when it is UTF-8 (the
    original stores the decoded content as is), else its re-serialisation, since the column
    holds text and a declaration naming another encoding would then lie."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return etree.tostring(root, encoding="unicode")
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    if encoding.upper().replace("-", "") not in ("UTF8", "ASCII", "USASCII"):
        return etree.tostring(root, encoding="unicode")
    return text


@dataclass(slots=True)
class Workflow:
    id: int
    name: str
    xml: str  # the stored definition text
    group: str
    comment: str
    lastcommit: str  # git commit of the definition, "" if none
    notifications: tuple[int, ...] = ()  # subscribed notification ids, ascending
    _definition: WorkflowDefinition | None = field(default=None, repr=False, compare=False)

    @property
    def definition(self) -> WorkflowDefinition:
        """The validated definition (launches, schedule parameters), parsed on first use; a
        stored text that no longer validates gives the validation error."""
        if self._definition is None:
            self._definition = parse_workflow(self.xml)
        return self._definition

    def document(self) -> etree._Element:
        """A fresh tree of the stored text (``get``/``list``: not re-validated)."""
        return parse_stored(self.xml)


def check_name(name: str) -> None:
    if not name:
        raise ApiError("INVALID_PARAMETER", "Workflow name cannot be empty")
    if not _NAME.fullmatch(name):
        raise ApiError("INVALID_PARAMETER", "Invalid workflow name")


def _validated(name: str, content: bytes) -> str:
    """Name and definition checks, in the original's order (workflow.md §1.5 steps 1, 3, 4)."""
    check_name(name)
    return stored_text(content, parse_workflow(content).root)


class Workflows:
    """Every workflow definition, by id and by name."""

    def __init__(self, server: Server) -> None:
        self._storage = server.storage
        self._by_id: dict[int, Workflow] = {}
        self._by_name: dict[str, Workflow] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT workflow_id, workflow_name, workflow_xml, workflow_group, workflow_comment, "
            "workflow_lastcommit FROM t_workflow"
        )
        bindings: dict[int, list[int]] = {}
        for workflow_id, notification_id in await self._storage.query(
            "SELECT workflow_id, notification_id FROM t_workflow_notification "
            "ORDER BY notification_id"
        ):
            bindings.setdefault(workflow_id, []).append(notification_id)
        by_id = {}
        for wid, name, xml, group, comment, lastcommit in rows:
            old = self._by_id.get(wid)
            by_id[wid] = Workflow(
                wid, name, xml or "", group or "", comment or "", lastcommit or "",
                tuple(bindings.get(wid, ())),
                # an unchanged text keeps its parsed definition
                old._definition if old is not None and old.xml == xml else None,
            )
        self._by_id = by_id
        self._by_name = {w.name: w for w in by_id.values()}

    # -- lookups --------------------------------------------------------------------------
    def get(self, workflow_id: int) -> Workflow:
        try:
            return self._by_id[workflow_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown Workflow ID : {workflow_id}") from None

    def get_by_name(self, name: str) -> Workflow:
        try:
            return self._by_name[name]
        except KeyError:
            raise ApiError("UKNOWN_OBJECT", f"Unknown Workflow name : {name}") from None

    def find(self, workflow_id: int) -> Workflow | None:
        return self._by_id.get(workflow_id)

    def find_by_name(self, name: str) -> Workflow | None:
        return self._by_name.get(name)

    def exists(self, workflow_id: int) -> bool:
        return workflow_id in self._by_id

    def ids(self) -> list[int]:
        return list(self._by_id)

    def name_of(self, workflow_id: int) -> str:
        """The workflow's name, "" if it no longer exists (status of a stale schedule)."""
        workflow = self.find(workflow_id)
        return workflow.name if workflow else ""

    def all(self) -> list[Workflow]:
        """Every workflow, sorted by name (``workflows list``)."""
        return [self._by_name[n] for n in sorted(self._by_name)]

    # -- mutations (the caller reloads) ---------------------------------------------------
    async def create(self, name: str, content: bytes, group: str, comment: str) -> int:
        """Insert a checked definition, subscribed to every ``subscribe_all`` notification."""
        xml = _validated(name, content)

        def insert(tx: Tx) -> int:
            workflow_id = tx.execute(
                "INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, "
                "workflow_comment) VALUES (%s, %s, %s, %s)",
                (name, xml, group, comment),
            ).lastrowid
            tx.execute(
                "INSERT INTO t_workflow_notification (workflow_id, notification_id) "
                "SELECT %s, notification_id FROM t_notification "
                "WHERE notification_subscribe_all <> 0",
                (workflow_id,),
            )
            return workflow_id

        try:
            return await self._storage.transaction(insert)
        except DuplicateEntry:
            raise ApiError("WORKFLOW_ALREADY_EXISTS", "Workflow name already exists") from None

    async def edit(
        self, workflow_id: int, name: str, content: bytes, group: str, comment: str
    ) -> None:
        """Replace a definition entirely (a duplicate name is the storage's SQL error)."""
        xml = _validated(name, content)
        result = await self._storage.execute(
            "UPDATE t_workflow SET workflow_name = %s, workflow_xml = %s, workflow_group = %s, "
            "workflow_comment = %s WHERE workflow_id = %s",
            (name, xml, group, comment, workflow_id),
        )
        if not result.rowcount:
            raise ApiError("UNKNOWN_WORKFLOW", "Workflow not found")

    async def delete(self, workflow_id: int) -> None:
        """Delete a workflow with its notification bindings, schedules and user rights."""

        def delete(tx: Tx) -> int:
            deleted = tx.execute("DELETE FROM t_workflow WHERE workflow_id = %s",
                                 (workflow_id,)).rowcount
            if deleted:
                tx.execute(
                    "DELETE FROM t_workflow_schedule_parameters WHERE workflow_schedule_id IN "
                    "(SELECT workflow_schedule_id FROM t_workflow_schedule "
                    "WHERE workflow_id = %s)",
                    (workflow_id,),
                )
                for table in ("t_workflow_schedule", "t_workflow_notification", "t_user_right"):
                    tx.execute(f"DELETE FROM {table} WHERE workflow_id = %s", (workflow_id,))
            return deleted

        if not await self._storage.transaction(delete):
            raise ApiError("UNKNOWN_WORKFLOW", "Workflow not found")

    async def subscribe(self, workflow_id: int, notification_id: int) -> None:
        self.get(workflow_id)
        if not await self._storage.query_one(
            "SELECT 1 FROM t_notification WHERE notification_id = %s", (notification_id,)
        ):
            raise ApiError("UNKNOWN_NOTIFICATION", "Notification ID not found")
        await self._storage.execute(
            "INSERT INTO t_workflow_notification (workflow_id, notification_id) VALUES (%s, %s)",
            (workflow_id, notification_id),
        )

    async def unsubscribe(self, workflow_id: int, notification_id: int) -> None:
        result = await self._storage.execute(
            "DELETE FROM t_workflow_notification WHERE workflow_id = %s AND notification_id = %s",
            (workflow_id, notification_id),
        )
        if not result.rowcount:
            raise ApiError("UNKNOWN_NOTIFICATION",
                           "Workflow was not subscribed to this notification")

    async def clear_notifications(self, workflow_id: int) -> None:
        """Unsubscribe from everything; an unknown workflow is fine (errata 15)."""
        await self._storage.execute(
            "DELETE FROM t_workflow_notification WHERE workflow_id = %s", (workflow_id,)
        )
