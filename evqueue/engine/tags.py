"""Instance tags (protocol.md §3.11, ops.md §8.1): the cache of ``t_tag`` and its mutations.

Tags are looked up by the ``instance tag`` action and by automatic tags at instance end, so
they are cached like the other definitions and reloaded after every change. Mutations leave
the reload (and its cluster broadcast) to the API caller, except :meth:`Tags.ensure`, which
runs inside the engine and has no caller to do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Tx

if TYPE_CHECKING:
    from evqueue.server import Server


@dataclass(frozen=True, slots=True)
class Tag:
    id: int
    label: str


def _check_label(label: str) -> None:
    if not label:
        raise ApiError("INVALID_PARAMETER", "Invalid tag label")


class Tags:
    """Every tag, by id."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._storage = server.storage
        self._by_id: dict[int, Tag] = {}

    async def reload(self) -> None:
        rows = await self._storage.query("SELECT tag_id, tag_label FROM t_tag")
        self._by_id = {tag_id: Tag(tag_id, label) for tag_id, label in rows}

    def get(self, tag_id: int) -> Tag:
        try:
            return self._by_id[tag_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown Tag ID : {tag_id}") from None

    def find(self, tag_id: int) -> Tag | None:
        return self._by_id.get(tag_id)

    def exists(self, tag_id: int) -> bool:
        return tag_id in self._by_id

    def all(self) -> list[Tag]:
        """Sorted by label (``tags list``)."""
        return sorted(self._by_id.values(), key=lambda t: (t.label, t.id))

    async def create(self, label: str) -> tuple[int, bool]:
        """``(id, created)``: creating an existing label answers its id (idempotent).

        The label is looked up in the database, whose collation decides equality (MariaDB's
        is case-insensitive), in the same transaction as the insert.
        """
        _check_label(label)

        def create(tx: Tx) -> tuple[int, bool]:
            row = tx.query("SELECT tag_id FROM t_tag WHERE tag_label = %s", (label,))
            if row:
                return row[0][0], False
            return tx.execute("INSERT INTO t_tag (tag_label) VALUES (%s)", (label,)).lastrowid, True

        return await self._storage.transaction(create)

    async def ensure(self, label: str) -> int:
        """The id of ``label``, created if needed (automatic tags, workflow.md §4.15)."""
        tag_id, created = await self.create(label)
        if created:
            await self.reload()
            self._server.cluster.notify_reload("tags")
            self._server.events.publish("TAG_CREATED")
        return tag_id

    async def edit(self, tag_id: int, label: str) -> None:
        _check_label(label)
        result = await self._storage.execute(
            "UPDATE t_tag SET tag_label = %s WHERE tag_id = %s", (label, tag_id))
        if not result.rowcount:
            raise ApiError(None, "Tag not found")

    async def delete(self, tag_id: int) -> None:
        """Delete a tag and untag every instance carrying it."""

        def delete(tx: Tx) -> int:
            deleted = tx.execute("DELETE FROM t_tag WHERE tag_id = %s", (tag_id,)).rowcount
            if deleted:
                tx.execute("DELETE FROM t_workflow_instance_tag WHERE tag_id = %s", (tag_id,))
            return deleted

        if not await self._storage.transaction(delete):
            raise ApiError("UNKNOWN_TAG", "Tag not found")
