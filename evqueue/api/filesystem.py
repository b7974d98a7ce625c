"""``filesystem list`` (protocol.md §3.18, errata 22): the editor's task-path autocomplete.

Deviation (docs/deviations.md): restricted to ADMIN; the original let any user list any
directory the daemon can read. A relative ``path`` is taken under
``processmanager.tasks.directory``. Hidden entries are skipped; symbolic links are reported as
``file`` like the original's; entries are sorted by name (the original used readdir order);
undecodable bytes in names become U+FFFD.
"""

from __future__ import annotations

import asyncio
import os

from lxml import etree

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import sanitize_xml_text


def _entry_type(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "file"
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "unknown"


def _list(path: str) -> list[tuple[str, str]]:
    try:
        with os.scandir(path) as it:
            entries = [(sanitize_xml_text(e.name), _entry_type(e))
                       for e in it if not e.name.startswith(".")]
    except (OSError, ValueError):
        raise ApiError(None, f"Unable to open directory {path}") from None
    return sorted(entries)


@handler("filesystem")
async def filesystem(call: Call) -> None:
    call.user.require_admin()
    if call.action != "list":
        raise unknown_command()
    path = call.params.str("path")
    if not path.startswith("/"):
        tasks = os.path.abspath(call.server.config["processmanager.tasks.directory"])
        path = os.path.join(tasks, path)
    for name, type_ in await asyncio.to_thread(_list, path):
        etree.SubElement(call.response, "entry", name=name, type=type_)
