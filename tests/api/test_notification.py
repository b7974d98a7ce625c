"""``notification``, ``notifications``, ``notification_type``, ``notification_types``: plugin
registration from real zip archives, binaries on disk, configurations, workflow bindings,
errata 2, 3, 4, 9, 10 and 18, events, rights and cluster broadcasts."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admintest import add_workflow, ok_text, plugin_zip, user_events
from apitest import Api, Peer, b64, drop_mysql, mysql_database, new_server, text

BINARY = b"#!/bin/sh\nexit 0\n"
MANIFEST = ('<plugin type="notification"><name>mail</name><description>Send mail</description>'
            '<binary>mail.sh</binary><configuration/></plugin>')


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def napi(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A server whose plugin directory is in ``tmp_path``, on SQLite then MariaDB."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    values = {"notifications.tasks.directory": str(plugins)}
    database = None
    if request.param == "sqlite":
        values |= {"core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db")}
    else:
        database = mysql_database()
        values |= {"core.storage": "mysql", "mysql.host": "127.0.0.1", "mysql.user": "root",
                   "mysql.database": database}
    server = await new_server(values)
    yield Api(server)
    await server.cluster.close()
    await server.storage.close()
    if database is not None:
        drop_mysql(database)


def plugin_file(api: Api, type_id: int) -> Path:
    return Path(api.server.config["notifications.tasks.directory"]) / str(type_id)


async def register(api: Api, **kw: str) -> None:
    answer = await api.ok(f'<notification_type action="register" zip="{b64(plugin_zip(**kw))}"/>')
    assert text(answer) == ok_text()  # no id comes back (errata 18)


async def test_register(napi: Api) -> None:
    api = napi
    await register(api)
    path = plugin_file(api, 1)
    assert path.read_bytes() == BINARY
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert text(await api.ok('<notification_types action="list"/>')) == ok_text(
        '<notification_type binary="mail" description="Send mail" id="1" name="mail" '
        'scope="WORKFLOW"/>')
    assert text(await api.ok('<notification_type action="get" id="1"/>')) == ok_text(
        '<notification_type description="Send mail" name="mail" scope="WORKFLOW"/>' + MANIFEST)
    assert user_events(api) == [("NOTIFICATION_TYPE_CREATED", 0)]
    assert await api.log_api() == []


async def test_register_again_updates_the_type(napi: Api) -> None:
    api = napi
    await register(api)
    await register(api, name="sms", scope="ELOGS")
    await api.ok(f'<notification_type action="set_conf" id="1" content="{b64("{}")}"/>')
    manifest = MANIFEST.replace("Send mail", "Mail v2")
    await register(api, manifest=manifest, files={"mail.sh": b"v2"})
    assert plugin_file(api, 1).read_bytes() == b"v2"
    assert plugin_file(api, 2).read_bytes() == BINARY
    assert text(await api.ok('<notification_types action="list"/>')) == ok_text(
        '<notification_type binary="mail" description="Mail v2" id="1" name="mail" '
        'scope="WORKFLOW"/><notification_type binary="sms" description="Send sms" id="2" '
        'name="sms" scope="ELOGS"/>')
    assert (await api.ok('<notification_type action="get_conf" id="1"/>'))[0].get(
        "content") == b64("{}")


def _zip_without_manifest() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mail.sh", BINARY)
    return buffer.getvalue()


@pytest.mark.parametrize(("archive", "error"), [
    (b"hello", (None, "Unable to open Zip archive")),
    (b"", (None, "Unable to open Zip archive")),
    (_zip_without_manifest(), (None, "File not found : manifest.xml")),
    (plugin_zip(files={}), (None, "File not found : mail.sh")),
    (plugin_zip(binary="bin/missing", files={"mail.sh": BINARY}),
     (None, "File not found : bin/missing")),
    (plugin_zip(manifest="<plugin><description>d</description><binary>b</binary></plugin>"),
     ("INVALID_PARAMETER", "Missing 'name' tag in manifest")),
    (plugin_zip(manifest="<plugin><name>n</name><binary>b</binary></plugin>"),
     ("INVALID_PARAMETER", "Missing 'description' tag in manifest")),
    (plugin_zip(manifest="<plugin><name>n</name><description>d</description></plugin>"),
     ("INVALID_PARAMETER", "Missing 'binary' tag in manifest")),
    (plugin_zip(manifest="<other><name>n</name><description>d</description>"
                         "<binary>mail.sh</binary></other>"),
     ("INVALID_PARAMETER", "Missing 'name' tag in manifest")),
    (plugin_zip(scope="CRON"),
     ("INVALID_PARAMETER", "Invalid scope, should be 'WORKFLOW' or 'ELOGS'")),
])
async def test_register_errors(napi: Api, archive: bytes, error: tuple[str | None, str]) -> None:
    assert await napi.ko(f'<notification_type action="register" zip="{b64(archive)}"/>') == error
    assert napi.server.notifications.types() == []
    assert os.listdir(plugin_file(napi, 1).parent) == []
    assert napi.events == []


async def test_register_manifest_that_is_not_xml(napi: Api) -> None:
    """errata 2: the original crashed."""
    archive = plugin_zip(manifest="not xml at all")
    code, error = await napi.ko(f'<notification_type action="register" zip="{b64(archive)}"/>')
    assert code == "INVALID_PARAMETER"
    assert error.startswith("Invalid manifest : ")


async def test_register_parameter_errors(napi: Api) -> None:
    assert await napi.ko('<notification_type action="register" zip="!!!"/>') == (
        "INVALID_PARAMETER", "Invalid base64 sequence")
    assert await napi.ko('<notification_type action="register"/>') == (
        "MISSING_PARAMETER", "Missing 'zip' attribute")


async def test_conf(napi: Api) -> None:
    api = napi
    await register(api)
    get = '<notification_type action="get_conf" id="1"/>'
    assert text(await api.ok(get)) == ok_text('<conf content=""/>')
    # errata 10: canonical base64 (the original wrote eyJhIjoxfT==)
    await api.ok('<notification_type action="set_conf" id="1" content="eyJhIjoxfT=="/>')
    assert text(await api.ok(get)) == ok_text('<conf content="eyJhIjoxfQ=="/>')
    await api.ok('<notification_type action="set_conf" id="1" content="!!!"/>')  # errata 9
    assert text(await api.ok(get)) == ok_text('<conf content=""/>')
    await api.ok(f'<notification_type action="set_conf" id="1" content="{b64("[1]")}"/>')
    await api.ok('<notification_type action="set_conf" id="1"/>')
    assert text(await api.ok(get)) == ok_text('<conf content=""/>')
    unknown = ("UNKNOWN_NOTIFICATION_TYPE", "Unable to find notification type")
    assert await api.ko('<notification_type action="get_conf" id="9"/>') == unknown
    assert await api.ko('<notification_type action="set_conf" id="9" content=""/>') == unknown


async def test_unknown_type(napi: Api) -> None:
    unknown = ("UNKNOWN_OBJECT", "Unknown NotificationType ID : 99")
    assert await napi.ko('<notification_type action="get" id="99"/>') == unknown
    assert await napi.ko('<notification_type action="unregister" id="99"/>') == unknown
    assert await napi.ko('<notification_type action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await napi.ko('<notification_types action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")


def create(type_id: int, name: str, parameters: str = "{}", extra: str = "") -> str:
    return (f'<notification action="create" type_id="{type_id}" name="{name}" '
            f'parameters="{b64(parameters)}" {extra}/>')


async def test_notification_actions(napi: Api) -> None:
    api = napi
    await register(api)
    await register(api, name="sms", scope="ELOGS")
    assert text(await api.ok(create(1, "to-ops", '{"to":"ops"}'))) == ok_text()
    to_ops = b64('{"to":"ops"}')
    await api.ok(create(2, "alert", extra='subscribe_all="no"'))
    await api.ok(create(1, "a-first"))
    assert text(await api.ok('<notification action="get" id="1"/>')) == ok_text(
        f'<notification name="to-ops" parameters="{to_ops}" subscribe_all="no" type_id="1"/>')
    every = ('<notification id="3" name="a-first" scope="WORKFLOW" type_id="1"/>'
             '<notification id="2" name="alert" scope="ELOGS" type_id="2"/>'
             '<notification id="1" name="to-ops" scope="WORKFLOW" type_id="1"/>')
    assert text(await api.ok('<notifications action="list"/>')) == ok_text(every)
    assert text(await api.ok('<notifications action="list" scope="*"/>')) == ok_text(every)
    assert text(await api.ok('<notifications action="list" scope="ELOGS"/>')) == ok_text(
        '<notification id="2" name="alert" scope="ELOGS" type_id="2"/>')

    await api.ok('<notification action="edit" id="1" type_id="1" name="to-dev" '
                 f'parameters="{b64("[]")}" subscribe_all="no"/>')
    n = api.server.notifications.get(1)
    assert (n.name, n.parameters, n.subscribe_all) == ("to-dev", "[]", False)
    await api.ok('<notification action="delete" id="3"/>')
    assert [n.id for n in api.server.notifications.all()] == [2, 1]
    assert user_events(api)[2:] == [
        ("NOTIFICATION_CREATED", 0), ("NOTIFICATION_CREATED", 0), ("NOTIFICATION_CREATED", 0),
        ("NOTIFICATION_MODIFIED", 0), ("NOTIFICATION_REMOVED", 0)]
    assert await api.log_api() == []


@pytest.mark.parametrize(("query", "error"), [
    (create(1, ""), ("INVALID_PARAMETER", "Name cannot be empty")),
    (create(9, "n"), ("UNKNOWN_NOTIFICATION_TYPE", "Unknown notification type ID")),
    ('<notification action="create" type_id="1" name="n"/>',
     ("MISSING_PARAMETER", "Missing 'parameters' attribute")),
    ('<notification action="create" name="n" parameters=""/>',
     ("MISSING_PARAMETER", "Missing 'type_id' attribute")),
    (create(1, "n", extra='subscribe_all="true"'),
     ("INVALID_BOOLEAN", "Attribute 'subscribe_all' has invalid boolean value")),
    # errata 3: the type is checked before anything is written
    ('<notification action="edit" id="1" type_id="99" name="n1e" parameters=""/>',
     ("UNKNOWN_NOTIFICATION_TYPE", "Unknown notification type ID")),
    ('<notification action="edit" id="9" type_id="1" name="x" parameters=""/>',
     ("UNKNOWN_NOTIFICATION", "Unable to find notification")),
    ('<notification action="edit" id="1" type_id="1" name="" parameters=""/>',
     ("INVALID_PARAMETER", "Name cannot be empty")),
    ('<notification action="delete" id="9"/>',
     ("UNKNOWN_NOTIFICATION", "Unable to find notification")),
    ('<notification action="get" id="9"/>', ("UNKNOWN_OBJECT", "Unknown Notification ID : 9")),
    ('<notification action="nope"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
    ('<notifications action="get"/>', ("UNKNOWN_COMMAND", "Unknown command or action")),
])
async def test_notification_errors(napi: Api, query: str, error: tuple[str, str]) -> None:
    await register(napi)
    await napi.ok(create(1, "n1", '{"a":1}'))
    before = user_events(napi)
    assert await napi.ko(query) == error
    assert user_events(napi) == before
    n = napi.server.notifications.get(1)
    assert (n.type_id, n.name, n.parameters) == (1, "n1", '{"a":1}')
    assert [n.id for n in napi.server.notifications.all()] == [1]


async def test_parameters_are_lenient(napi: Api) -> None:
    """errata 9: invalid base64 is stored as empty parameters."""
    await register(napi)
    await napi.ok('<notification action="create" type_id="1" name="n" parameters="!!!"/>')
    assert (await napi.ok('<notification action="get" id="1"/>'))[0].get("parameters") == ""
    latin1 = b64("é".encode("latin-1"))
    assert await napi.ko('<notification action="create" type_id="1" name="n" '
                         f'parameters="{latin1}"/>') == (
        "INVALID_PARAMETER", "Parameters are not valid UTF-8")


async def test_subscribe_all(napi: Api) -> None:
    api = napi
    await register(api)
    wf1 = await add_workflow(api, "wf1")
    wf2 = await add_workflow(api, "wf2")
    await api.ok(create(1, "n", extra='subscribe_all="yes"'))
    workflows = api.server.workflows
    assert workflows.get(wf1).notifications == workflows.get(wf2).notifications == (1,)
    assert text(await api.ok('<notification action="get" id="1"/>')) == ok_text(
        f'<notification name="n" parameters="{b64("{}")}" subscribe_all="yes" type_id="1"/>')
    wf3 = await add_workflow(api, "wf3")
    await api.ok(f'<workflow action="unsubscribe_notification" id="{wf2}" notification_id="1"/>')
    await api.ok('<notification action="edit" id="1" type_id="1" name="n" parameters="" '
                 'subscribe_all="1"/>')
    assert [workflows.get(w).notifications for w in (wf1, wf2, wf3)] == [(1,), (1,), (1,)]
    assert await api.server.storage.query(
        "SELECT COUNT(*) FROM t_workflow_notification") == [(3,)]
    await api.ok('<notification action="delete" id="1"/>')
    assert [workflows.get(w).notifications for w in (wf1, wf2, wf3)] == [(), (), ()]


async def test_unregister(napi: Api) -> None:
    """errata 4: bindings go whatever the scope of the type."""
    api = napi
    await register(api)
    await register(api, name="sms", scope="ELOGS")
    wf = await add_workflow(api, "wf")
    await api.ok(create(1, "keep"))
    await api.ok(create(2, "elogs"))
    for notification_id in (1, 2):
        await api.ok(f'<workflow action="subscribe_notification" id="{wf}" '
                     f'notification_id="{notification_id}"/>')
    assert api.server.workflows.get(wf).notifications == (1, 2)
    api.events.clear()
    await api.ok('<notification_type action="unregister" id="2"/>')
    assert api.server.workflows.get(wf).notifications == (1,)
    assert [n.id for n in api.server.notifications.all()] == [1]
    assert [t.name for t in api.server.notifications.types()] == ["mail"]
    assert not plugin_file(api, 2).exists()
    assert plugin_file(api, 1).exists()
    assert await api.server.storage.query(
        "SELECT workflow_id, notification_id FROM t_workflow_notification") == [(wf, 1)]
    assert user_events(api) == [("NOTIFICATION_TYPE_REMOVED", 0), ("WORKFLOW_MODIFIED", 0)]
    await api.ok('<notification_type action="unregister" id="1"/>')
    assert api.server.notifications.all() == []
    assert os.listdir(plugin_file(api, 1).parent) == []


async def test_sync_binaries(napi: Api) -> None:
    api = napi
    await register(api)
    await register(api, name="sms")
    plugin_file(api, 1).unlink()
    plugin_file(api, 2).write_bytes(b"tampered")
    await api.server.notifications.sync_binaries()
    for type_id in (1, 2):
        assert plugin_file(api, type_id).read_bytes() == BINARY
        assert stat.S_IMODE(plugin_file(api, type_id).stat().st_mode) == 0o755


async def test_bound_notifications_of_a_workflow(napi: Api) -> None:
    """The data the plugin runner uses at instance end: WORKFLOW-scope bindings only."""
    api = napi
    await register(api)
    await register(api, name="sms", scope="ELOGS")
    wf = await add_workflow(api, "wf")
    await api.ok(create(1, "mail", '{"to":"x"}'))
    await api.ok(create(2, "sms"))
    for notification_id in (1, 2):
        await api.ok(f'<workflow action="subscribe_notification" id="{wf}" '
                     f'notification_id="{notification_id}"/>')
    notifications = api.server.notifications
    [(notification, type_)] = notifications.for_workflow(wf)
    assert (notification.id, notification.parameters, type_.name) == (1, '{"to":"x"}', "mail")
    assert notifications.binary_path(type_.id) == str(plugin_file(api, 1))
    assert notifications.for_workflow(999) == []


async def test_user_profile(napi: Api) -> None:
    api = napi
    await register(api)
    await api.ok(create(1, "n"))
    bob = await api.add_user("bob")
    assert text(await api.ok('<notifications action="list"/>', bob)) == ok_text(
        '<notification id="1" name="n" scope="WORKFLOW" type_id="1"/>')
    for query in ('<notification action="get" id="1"/>', create(1, "m"),
                  '<notification action="edit" id="1" type_id="1" name="m" parameters=""/>',
                  '<notification action="delete" id="1"/>', '<notification action="nope"/>',
                  '<notification_types action="list"/>',
                  '<notification_type action="get" id="1"/>',
                  f'<notification_type action="register" zip="{b64(plugin_zip())}"/>',
                  '<notification_type action="unregister" id="1"/>',
                  '<notification_type action="get_conf" id="1"/>',
                  '<notification_type action="set_conf" id="1" content=""/>'):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights"), query
    assert [n.name for n in api.server.notifications.all()] == ["n"]


async def test_changes_are_broadcast(tmp_path: Path) -> None:
    """Reloads, and binary syncs after (un)registering, reach the other nodes."""
    short = tempfile.mkdtemp(prefix="evq")  # unix socket paths are limited to 108 bytes
    peer = Peer(os.path.join(short, "peer.sock"))
    await peer.start()
    (tmp_path / "plugins").mkdir()
    server = await new_server({
        "core.storage": "sqlite", "sqlite.path": str(tmp_path / "e.db"),
        "notifications.tasks.directory": str(tmp_path / "plugins"),
        "cluster.nodes": f"unix://{peer.path}"})
    try:
        api = Api(server)
        await api.ok(f'<notification_type action="register" zip="{b64(plugin_zip())}"/>')
        await api.ok(create(1, "n"))
        await api.ok('<notification_type action="unregister" id="1"/>')
        await server.cluster.close()  # waits for the broadcasts in flight
    finally:
        await server.storage.close()
        await peer.close()
        shutil.rmtree(short, ignore_errors=True)
    reload = '<control action="reload" module="{}" notify="no"/>'
    sync = '<control action="syncnotifications" notify="no"/>'
    assert sorted(peer.queries) == sorted([
        reload.format("notifications"), sync,
        reload.format("notifications"), reload.format("workflows"),
        reload.format("notifications"), reload.format("workflows"), sync])
