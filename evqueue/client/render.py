"""Text output of ``evqueue-api``: the original's XML forms, tables and the wait progress line."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from lxml import etree

from evqueue.client.model import TIME_FORMAT, Instance
from evqueue.protocol.xmlout import serialize


def raw_xml(elem: etree._Element) -> str:
    """``--noformat``: the response as the server serialises it, on one line."""
    return serialize(elem).decode().rstrip()


def pretty_xml(elem: etree._Element) -> str:
    """Default output: one element per line, children indented (Zabbix parses this)."""
    elem = copy.deepcopy(elem)
    for node in elem.iter():
        # Whitespace between elements is layout from the server; drop it so the output is
        # re-indented consistently. Text of leaf elements (task outputs) is kept as is.
        if len(node) and node.text is not None and not node.text.strip():
            node.text = None
        if node is not elem and node.tail is not None and not node.tail.strip():
            node.tail = None
    return etree.tostring(elem, pretty_print=True, encoding="unicode").rstrip("\n")


def xpath_value(elem: etree._Element, expression: str) -> str | None:
    """``--xpath``: the string value of the first result, context = the response root;
    None for an empty node-set. An invalid expression is a ValueError."""
    try:
        result = elem.xpath(expression)
    except etree.XPathError as e:
        raise ValueError(f"Invalid XPath expression {expression!r}: {e}") from None
    if isinstance(result, list):
        if not result:
            return None
        result = result[0]
        if isinstance(result, etree._Element):
            return "".join(result.itertext())
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else repr(result)
    return str(result)


def when(value: datetime | None) -> str:
    return value.strftime(TIME_FORMAT) if value else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, headers first."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def progress_text(instance: Instance, elapsed: float) -> str:
    counts = instance.task_counts()
    done, total = instance.progress()
    parts = [f"{done}/{total} tasks done"]
    for status, label in (("EXECUTING", "running"), ("QUEUED", "queued"),
                          ("WAITING", "waiting")):
        if counts.get(status):
            parts.append(f"{counts[status]} {label}")
    errors = instance.errors if instance.errors is not None else instance.error_tasks
    if errors:
        parts.append(f"{errors} error{'s' if errors > 1 else ''}")
    return (
        f"instance {instance.id} ({instance.name}) {instance.status}: "
        f"{', '.join(parts)} [{int(elapsed)}s]"
    )


class ProgressLine:
    """Live progress of a waited instance: one rewritten line on a terminal, else one line
    each time the counts change (logs stay readable)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._start = time.monotonic()
        self._last = ""

    def __call__(self, instance: Instance) -> None:
        text = progress_text(instance, time.monotonic() - self._start)
        if self._tty:
            self._stream.write(f"\r\x1b[K{text}")
        else:
            counts = text.rsplit(" [", 1)[0]
            if counts == self._last:
                return
            self._last = counts
            self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
