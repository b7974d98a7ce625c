"""Typed views of the server's answers, built from the response elements.

Parsing is lenient on purpose (a missing attribute becomes a default): a client must keep
working against servers that add or omit attributes; ``document`` keeps the full XML.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: Task statuses that will not change any more (progress = these / all tasks).
FINISHED_TASK_STATUSES = frozenset({"TERMINATED", "ABORTED", "SKIPPED"})


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _time(value: str | None) -> datetime | None:
    """Server local time ``YYYY-MM-DD HH:MM:SS``; empty or unparsable gives None."""
    try:
        return datetime.strptime(value, TIME_FORMAT) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Greeting:
    """The ``<ready>`` document a server sends once the session is authenticated."""

    node: str
    profile: str
    version: str
    time: datetime | None
    modules: dict[str, str]

    @classmethod
    def from_element(cls, elem: etree._Element) -> Greeting:
        return cls(
            node=elem.get("node", ""),
            profile=elem.get("profile", ""),
            version=elem.get("version", ""),
            time=_time(elem.get("time")),
            modules={m.get("name", ""): m.get("version", "") for m in elem.iter("module")},
        )


@dataclass(frozen=True)
class Ping:
    """``ping`` answer."""

    node: str
    version: str
    uptime: int
    git_support: bool

    @classmethod
    def from_response(cls, resp: etree._Element) -> Ping:
        return cls(
            node=resp.get("node", ""),
            version=resp.get("version", ""),
            uptime=_int(resp.get("uptime")),
            git_support=resp.get("git-support") == "enabled",
        )


@dataclass(frozen=True)
class Instance:
    """A workflow instance document (``instance query``), or the shallow root element of one
    (``status query type=workflows``). ``node`` is the node that answered."""

    id: int
    name: str
    status: str
    node: str
    start_time: datetime | None
    end_time: datetime | None
    errors: int | None
    comment: str
    host: str
    user: str
    running_tasks: int
    queued_tasks: int
    retrying_tasks: int
    error_tasks: int
    document: etree._Element = field(repr=False, compare=False)

    @classmethod
    def from_element(cls, wf: etree._Element, node: str) -> Instance:
        errors = wf.get("errors")
        return cls(
            id=_int(wf.get("id")),
            name=wf.get("name", ""),
            status=wf.get("status", ""),
            node=node,
            start_time=_time(wf.get("start_time")),
            end_time=_time(wf.get("end_time")),
            errors=_int(errors) if errors else None,
            comment=wf.get("comment", ""),
            host=wf.get("host", ""),
            user=wf.get("user", ""),
            running_tasks=_int(wf.get("running_tasks")),
            queued_tasks=_int(wf.get("queued_tasks")),
            retrying_tasks=_int(wf.get("retrying_tasks")),
            error_tasks=_int(wf.get("error_tasks")),
            document=wf,
        )

    @property
    def terminated(self) -> bool:
        return self.status == "TERMINATED"

    def task_counts(self) -> Counter[str]:
        """Tasks by status; tasks not reached yet count as ``PENDING``. Looped jobs are
        expanded as the instance runs, so the total may grow."""
        return Counter(t.get("status") or "PENDING" for t in self.document.iter("task"))

    def progress(self) -> tuple[int, int]:
        """``(finished tasks, known tasks)``."""
        counts = self.task_counts()
        done = sum(n for status, n in counts.items() if status in FINISHED_TASK_STATUSES)
        return done, sum(counts.values())


@dataclass(frozen=True)
class InstanceRow:
    """One row of ``instances list``. ``server`` is the URL it was read from (federation)."""

    id: int
    name: str
    node: str
    host: str
    start_time: datetime | None
    end_time: datetime | None
    errors: int
    status: str
    schedule_id: int | None
    comment: str
    tags: tuple[str, ...]
    server: str = ""

    @classmethod
    def from_element(cls, wf: etree._Element, server: str = "") -> InstanceRow:
        schedule = wf.get("schedule_id")
        return cls(
            id=_int(wf.get("id")),
            name=wf.get("name", ""),
            node=wf.get("node_name", ""),
            host=wf.get("host", ""),
            start_time=_time(wf.get("start_time")),
            end_time=_time(wf.get("end_time")),
            errors=_int(wf.get("errors")),
            status=wf.get("status", ""),
            schedule_id=_int(schedule) if schedule else None,
            comment=wf.get("comment", ""),
            tags=tuple(t.get("label", "") for t in wf.iterfind("tags/tag")),
            server=server,
        )


@dataclass(frozen=True)
class Queue:
    """A queue definition (``queuepool list``); ``scheduler`` may be ``default``."""

    id: int
    name: str
    concurrency: int
    scheduler: str
    dynamic: bool

    @classmethod
    def from_element(cls, elem: etree._Element) -> Queue:
        return cls(
            id=_int(elem.get("id")),
            name=elem.get("name", ""),
            concurrency=_int(elem.get("concurrency")),
            scheduler=elem.get("scheduler", ""),
            dynamic=elem.get("dynamic") == "yes",
        )


@dataclass(frozen=True)
class QueueStatistics:
    """Live state of a queue on one node (``statistics query type=queue``)."""

    node: str
    name: str
    concurrency: int
    size: int
    running_tasks: int
    scheduler: str

    @classmethod
    def from_element(cls, elem: etree._Element, node: str) -> QueueStatistics:
        return cls(
            node=node,
            name=elem.get("name", ""),
            concurrency=_int(elem.get("concurrency")),
            size=_int(elem.get("size")),
            running_tasks=_int(elem.get("running_tasks")),
            scheduler=elem.get("scheduler", ""),
        )


@dataclass(frozen=True)
class Statistics:
    """Global counters (``statistics query type=global``). A federation sums them: then
    ``node`` is ``"*"`` and ``parts`` holds each node's own statistics."""

    node: str
    counters: dict[str, int]
    parts: tuple[Statistics, ...] = ()

    @classmethod
    def from_response(cls, resp: etree._Element) -> Statistics:
        stats = resp.find("statistics")
        items = stats.attrib.items() if stats is not None else ()
        return cls(resp.get("node", ""), {k: _int(v) for k, v in items})

    @classmethod
    def combine(cls, parts: list[Statistics]) -> Statistics:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(part.counters)
        return cls("*", dict(total), tuple(parts))

    def __getitem__(self, name: str) -> int:
        return self.counters[name]


@dataclass(frozen=True)
class Schedule:
    """A workflow schedule (``workflow_schedules list``)."""

    id: int
    workflow_id: int
    workflow_name: str
    workflow_group: str
    node: str
    schedule: str
    onfailure: str
    user: str
    host: str
    active: bool
    comment: str
    parameters: dict[str, str]

    @classmethod
    def from_element(cls, elem: etree._Element) -> Schedule:
        return cls(
            id=_int(elem.get("id")),
            workflow_id=_int(elem.get("workflow_id")),
            workflow_name=elem.get("workflow_name", ""),
            workflow_group=elem.get("workflow_group", ""),
            node=elem.get("node", ""),
            schedule=elem.get("schedule", ""),
            onfailure=elem.get("onfailure", ""),
            user=elem.get("user", ""),
            host=elem.get("host", ""),
            active=elem.get("active") == "1",
            comment=elem.get("comment", ""),
            parameters={p.get("name", ""): p.get("value", "") for p in elem.iter("parameter")},
        )


@dataclass(frozen=True)
class Workflow:
    """A workflow definition summary (``workflows list``)."""

    id: int
    name: str
    group: str
    comment: str

    @classmethod
    def from_element(cls, elem: etree._Element) -> Workflow:
        return cls(
            id=_int(elem.get("id")),
            name=elem.get("name", ""),
            group=elem.get("group", ""),
            comment=elem.get("comment", ""),
        )
