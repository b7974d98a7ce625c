"""Global retry schedules (protocol.md §3.8, workflow.md §4.11.3): the cache of ``t_schedule``
that instances import at launch, and its checked mutations (the caller reloads)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from evqueue.engine.definitions import parse_retry_schedule
from evqueue.engine.workflows import parse_stored, stored_text
from evqueue.protocol.errors import ApiError

if TYPE_CHECKING:
    from evqueue.server import Server

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(slots=True)
class RetrySchedule:
    id: int
    name: str
    xml: str  # the stored ``<schedule>`` text

    def document(self) -> etree._Element:
        return parse_stored(self.xml)


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ApiError("INVALID_PARAMETER", "Invalid retry schedule name")


def _validated(name: str, content: bytes) -> str:
    check_name(name)
    return stored_text(content, parse_retry_schedule(content).root)


def _not_found() -> ApiError:
    return ApiError("UNKNOWN_RETRY_SCHEDULE", "Retry schedule not found")


class RetrySchedules:
    """Every retry schedule, by id and by name."""

    def __init__(self, server: Server) -> None:
        self._storage = server.storage
        self._by_id: dict[int, RetrySchedule] = {}
        self._by_name: dict[str, RetrySchedule] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT schedule_id, schedule_name, schedule_xml FROM t_schedule")
        by_id = {sid: RetrySchedule(sid, name, xml or "") for sid, name, xml in rows}
        self._by_id = by_id
        self._by_name = {s.name: s for s in by_id.values()}

    def get(self, schedule_id: int) -> RetrySchedule:
        try:
            return self._by_id[schedule_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown RetrySchedule ID : {schedule_id}") from None

    def get_by_name(self, name: str) -> RetrySchedule:
        try:
            return self._by_name[name]
        except KeyError:
            raise ApiError("UKNOWN_OBJECT", f"Unknown RetrySchedule name : {name}") from None

    def all(self) -> list[RetrySchedule]:
        """Sorted by name (``retry_schedules list``)."""
        return [self._by_name[n] for n in sorted(self._by_name)]

    async def create(self, name: str, content: bytes) -> int:
        xml = _validated(name, content)
        result = await self._storage.execute(
            "INSERT INTO t_schedule (schedule_name, schedule_xml) VALUES (%s, %s)", (name, xml))
        return result.lastrowid

    async def edit(self, schedule_id: int, name: str, content: bytes) -> None:
        xml = _validated(name, content)
        result = await self._storage.execute(
            "UPDATE t_schedule SET schedule_name = %s, schedule_xml = %s WHERE schedule_id = %s",
            (name, xml, schedule_id),
        )
        if not result.rowcount:
            raise _not_found()

    async def delete(self, schedule_id: int) -> None:
        result = await self._storage.execute(
            "DELETE FROM t_schedule WHERE schedule_id = %s", (schedule_id,))
        if not result.rowcount:
            raise _not_found()
