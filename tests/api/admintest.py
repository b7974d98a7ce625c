"""Helpers of the tests of the administrative query groups (users, tags, notifications, logs,
storage module...): importing this module registers their handlers."""

from __future__ import annotations

import io
import zipfile

from apitest import Api

import evqueue.api.datastore
import evqueue.api.filesystem
import evqueue.api.git
import evqueue.api.logs
import evqueue.api.notification
import evqueue.api.storage_module
import evqueue.api.tag
import evqueue.api.user  # noqa: F401  (the imports register the handlers)

SIMPLE_WORKFLOW = ('<workflow><subjobs><job><tasks><task path="/bin/true" queue="default"/>'
                   '</tasks></job></subjobs></workflow>')
WORKFLOW_WITH_PARAMETER = (
    '<workflow><parameters><parameter name="p"/></parameters><subjobs><job><tasks>'
    '<task path="/bin/true" queue="default"/></tasks></job></subjobs></workflow>')


async def add_workflow(api: Api, name: str, content: str = SIMPLE_WORKFLOW) -> int:
    """A workflow written straight to the database (these tests are not about workflows)."""
    workflow_id = (await api.server.storage.execute(
        "INSERT INTO t_workflow (workflow_name, workflow_xml, workflow_group, workflow_comment) "
        "VALUES (%s, %s, '', '')", (name, content))).lastrowid
    await api.server.reload("workflows")
    return workflow_id


def user_events(api: Api) -> list[tuple[str, int]]:
    """Events published so far, without the audit log's ``LOG_API``."""
    return [e for e in api.events if e[0] != "LOG_API"]


def ok_text(body: str = "", **attributes: str) -> str:
    """A serialised OK answer of node ``localhost`` (attributes sorted like the writer)."""
    attrs = {"node": "localhost", "status": "OK", **attributes}
    head = "<response" + "".join(f' {k}="{v}"' for k, v in sorted(attrs.items()))
    return f"{head}>{body}</response>" if body else f"{head}/>"


def plugin_zip(manifest: str | None = None, files: dict[str, bytes] | None = None,
               name: str = "mail", binary: str = "mail.sh", scope: str = "") -> bytes:
    """A notification plugin archive (ops.md §6.1)."""
    if manifest is None:
        scope_tag = f"<scope>{scope}</scope>" if scope else ""
        manifest = (f'<plugin type="notification"><name>{name}</name>'
                    f'<description>Send {name}</description><binary>{binary}</binary>'
                    f'{scope_tag}<configuration/></plugin>')
    if files is None:
        files = {binary: b"#!/bin/sh\nexit 0\n"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.xml", manifest)
        for path, content in files.items():
            archive.writestr(path, content)
    return buffer.getvalue()
