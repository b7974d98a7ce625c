"""The "storage" module's groups (protocol.md §3.16, errata 14, 19 and 20): ``storage``
(variables), ``launcher``/``launchers`` and ``display``/``displays``.

Rights: variable writes and every launcher/display definition change are ADMIN; reading
variables and displays is open to any user; a launcher is read and launched with the
``storage``/``launcher`` module right (ADMIN always has it), without the workflow's exec right.
None of these actions is written to the API audit log, like the original.
"""

from __future__ import annotations

from lxml import etree

from evqueue.api import instance as instance_api
from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.api.workflow import reload_modules
from evqueue.engine.storage_module import Address, Display, Launcher
from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import sanitize_xml_text

_WRITES = frozenset({"set", "append", "inc", "dec", "add", "unset"})
_READS = frozenset({"get", "head", "tail", "list"})


def _address(call: Call) -> Address:
    """``id``, or ``path`` and ``name``, or a ``path`` ending with the name (``a/b/c``)."""
    p = call.params
    variable_id = p.int("id", 0)
    if variable_id:
        return Address(id=variable_id)
    path = p.str("path", None)
    name = p.str("name", None)
    if name is None:
        if path is None:
            raise ApiError("MISSING_PARAMETER",
                           "You must provied either « id », « path » and/or « name »")
        path, _, name = path.rpartition("/")
    return Address(path=path or "", name=name)


@handler("storage")
async def storage(call: Call) -> None:
    action = call.action
    if action in _WRITES:
        call.user.require_admin()
        await _write(call, action)
    elif action in _READS:
        await _read(call, action)
    else:
        raise unknown_command()


async def _write(call: Call, action: str) -> None:
    p = call.params
    variables = call.server.variables
    address = _address(call)
    if action == "set":
        variable_id = await variables.set(address, p.str("type", None),
                                          p.str("structure", None), p.str("value"))
    elif action == "append":
        value, key = p.str("value"), p.str("key", None)
        variable_id, _ = await variables.update(address, lambda v: v.appended(value, key))
    elif action == "unset":
        call.server.events.publish("VARIABLE_UNSET", await variables.unset(address))
        return
    else:
        delta = p.int("value") if action == "add" else {"inc": 1, "dec": -1}[action]
        variable_id, total = await variables.update(address, lambda v: v.added(delta))
        call.response.set("value", str(total))
    call.server.events.publish("VARIABLE_SET", variable_id)


async def _read(call: Call, action: str) -> None:
    variables = call.server.variables
    if action == "list":
        p = call.params
        path = p.str("path")
        recursive = p.bool("recursive", False)
        for v in await variables.list(path, recursive):
            attributes = {"id": str(v.id), "name": v.name, "value": v.text}
            if recursive:
                attributes["path"] = v.path
            etree.SubElement(call.response, "var", attributes)
        return
    v = await variables.get(_address(call))
    if action == "get":
        call.response.attrib.update({"id": str(v.id), "path": v.path, "type": v.type,
                                     "structure": v.structure, "name": v.name, "value": v.text})
    else:
        call.response.set("value", sanitize_xml_text(v.element(last=action == "tail")))


# -- launchers ------------------------------------------------------------------------------
def _launcher(call: Call, launcher_id: int) -> Launcher:
    p = call.params
    return Launcher(launcher_id, p.str("name"), p.str("group", ""), p.str("description", ""),
                    p.int("workflow_id"), p.str("user"), p.str("host"), p.str("parameters"))


@handler("launcher")
async def launcher(call: Call) -> None:
    action = call.action
    server = call.server
    launchers = server.launchers
    p = call.params
    if action in ("get", "launch"):
        launcher_id = p.int("id")
        if not call.user.can_module("storage", "launcher", launcher_id):
            raise ApiError("INSUFFICIENT_RIGHTS", "insufficient rights")
        item = launchers.get(launcher_id)
        if action == "get":
            call.response.attrib.update({
                "name": item.name, "group": item.group, "description": item.description,
                "workflow_id": str(item.workflow_id), "user": item.user, "host": item.host,
                "parameters": item.parameters})
        else:
            await instance_api.launch(call, server.workflows.get(item.workflow_id))
        return
    call.user.require_admin()
    if action in ("grant", "revoke"):
        user_id = p.int("user_id")
        change = launchers.grant if action == "grant" else launchers.revoke
        await change(user_id, p.int("launcher_id"))
        await reload_modules(call, "users")
        server.events.publish("USER_MODIFIED", user_id)
        return
    if action == "create":
        launcher_id = await launchers.create(_launcher(call, 0))
        call.response.set("launcher-id", str(launcher_id))
        modules: tuple[str, ...] = ("launchers",)
    elif action == "edit":
        launcher_id = p.int("id")
        await launchers.edit(_launcher(call, launcher_id))
        modules = ("launchers",)
    elif action == "delete":
        launcher_id = p.int("id")
        await launchers.delete(launcher_id)
        modules = ("launchers", "users")  # the users' rights on it went with it
    else:
        raise unknown_command()
    await reload_modules(call, *modules)
    event = {"create": "LAUNCHER_CREATED", "edit": "LAUNCHER_MODIFIED",
             "delete": "LAUNCHER_REMOVED"}
    server.events.publish(event[action], launcher_id)


@handler("launchers")
async def launchers(call: Call) -> None:
    if call.action != "list":
        raise unknown_command()
    for item in call.server.launchers.all():
        if call.user.can_module("storage", "launcher", item.id):
            etree.SubElement(call.response, "launcher", id=str(item.id), name=item.name,
                             group=item.group, description=item.description)


# -- displays -------------------------------------------------------------------------------
def _display(call: Call, display_id: int) -> Display:
    p = call.params
    return Display(display_id, p.str("name"), p.str("group", ""), p.str("path"), p.str("order"),
                   p.str("item_title"), p.str("item_content"))


@handler("display")
async def display(call: Call) -> None:
    action = call.action
    server = call.server
    displays = server.displays
    p = call.params
    if action == "get":
        d = displays.get(p.int("id"))
        call.response.attrib.update({
            "name": d.name, "group": d.group, "path": d.path, "order": d.order,
            "item_title": d.item_title, "item_content": d.item_content})
        return
    call.user.require_admin()
    if action == "create":
        display_id = await displays.create(_display(call, 0))
        call.response.set("display-id", str(display_id))
    elif action == "edit":
        display_id = p.int("id")
        await displays.edit(_display(call, display_id))
    elif action == "delete":
        display_id = p.int("id")
        await displays.delete(display_id)
    else:
        raise unknown_command()
    await reload_modules(call, "displays")
    event = {"create": "DISPLAY_CREATED", "edit": "DISPLAY_MODIFIED", "delete": "DISPLAY_REMOVED"}
    server.events.publish(event[action], display_id)


@handler("displays")
async def displays(call: Call) -> None:
    action = call.action
    if action == "list":
        for d in call.server.displays.all():
            etree.SubElement(call.response, "display", id=str(d.id), name=d.name, group=d.group)
    elif action == "listgroups":
        for group in call.server.displays.groups():
            etree.SubElement(call.response, "group", name=group)
    else:
        raise unknown_command()
