"""The optional "storage" module (ops.md §8.4, protocol.md §3.16, errata 14, 19 and 20):
typed variables, launchers and displays, in the main database.

Variables are data written by clients and tasks at any time, so they are read from the
database on every query (no cache to keep coherent across a cluster); read-modify-write
actions run in one transaction. Launchers and displays are definitions: cached, and reloaded
(``control reload module=launchers|displays``) after every change.

Values are JSON text checked against the variable's type (``INT``, ``STRING``, ``BOOLEAN``)
and structure (``NONE`` = one value, ``ARRAY``, ``MAP``), stored compact with sorted keys
as the original's JSON library wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evqueue.protocol.errors import ApiError
from evqueue.storage.base import DuplicateEntry, Result, Row, Tx

if TYPE_CHECKING:
    from evqueue.server import Server

#: variable type → the word of the original's type-mismatch message
TYPES = {"INT": "Integer", "STRING": "String", "BOOLEAN": "Boolean"}
STRUCTURES = ("NONE", "ARRAY", "MAP")
ORDERS = ("ASC", "DESC")
#: launcher parameters are a JSON document of at most this many characters
LAUNCHER_PARAMETERS_MAX = 255


def _invalid(message: str) -> ApiError:
    return ApiError("INVALID_PARAMETER", message)


def _type_error(message: str) -> ApiError:
    return ApiError("TYPE_ERROR", message)


def dump_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise _invalid("Invalid json : invalid Unicode string") from None
    return text


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _invalid("Invalid json") from None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _check_scalar(value: Any, type_: str) -> None:
    if type_ == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif type_ == "STRING":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, bool)
    if not ok:
        raise _invalid(f"Invalid json : expecting {TYPES[type_]} based on given type "
                       f"for « {dump_json(value)} »")


def parse_value(text: str, type_: str, structure: str) -> Any:
    """The JSON ``text`` of a whole value, checked against type and structure."""
    value = _load_json(text)
    if structure == "NONE":
        _check_scalar(value, type_)
    elif structure == "ARRAY":
        if not isinstance(value, list):
            raise _invalid("Invalid json : expecting Array based on given structure")
        for item in value:
            _check_scalar(item, type_)
    else:
        if not isinstance(value, dict):
            raise _invalid("Invalid json : expecting Map based on given structure")
        for item in value.values():
            _check_scalar(item, type_)
    return value


@dataclass(frozen=True, slots=True)
class Address:
    """A variable named by ``id`` (non-zero) or by ``path`` and ``name``."""

    id: int = 0
    path: str = ""
    name: str = ""

    def __str__(self) -> str:
        if self.id:
            return str(self.id)
        return f"{self.path}/{self.name}" if self.path else self.name

    def check(self) -> None:
        """Rules for a new variable's path and name."""
        path, name = self.path, self.name
        if len(path) > 255 or path.startswith("/") or path.endswith("/") or "//" in path:
            raise _invalid(f"Invalid path « {path} »")
        if not name or len(name) > 64 or "/" in name:
            raise _invalid(f"Invalid name « {name} »")

    def where(self) -> tuple[str, tuple[object, ...]]:
        if self.id:
            return "storage_id = %s", (self.id,)
        return "storage_path = %s AND storage_name = %s", (self.path, self.name)


@dataclass(frozen=True, slots=True)
class Variable:
    id: int
    path: str
    name: str
    type: str
    structure: str
    text: str  # the stored JSON value

    def value(self) -> Any:
        return _load_json(self.text)

    def element(self, last: bool) -> str:
        """First or last item of an ARRAY (``head``/``tail``), strings unquoted."""
        if self.structure != "ARRAY":
            raise _type_error("Tail can only be used on array")
        items = self.value()
        if not items:
            raise _type_error("Array is empty")
        item = items[-1] if last else items[0]
        return item if isinstance(item, str) else dump_json(item)

    def appended(self, text: str, key: str | None) -> Any:
        """The value with one item added (``append``; a MAP needs a ``key``)."""
        if self.structure == "ARRAY":
            item = _load_json(text)
            _check_scalar(item, self.type)
            return [*self.value(), item]
        if self.structure == "MAP" and key is not None:
            item = _load_json(text)
            _check_scalar(item, self.type)
            return {**self.value(), key: item}
        raise _type_error("Append can only be used on array")

    def added(self, delta: int) -> int:
        """The value plus ``delta`` (``inc``, ``dec``, ``add``)."""
        if self.structure != "NONE":
            raise _type_error("Add can only be used on unstructured variables")
        if self.type != "INT":
            raise _type_error("Add can only be used on integer variables")
        return self.value() + delta


_COLUMNS = ("storage_id, storage_path, storage_name, storage_type, storage_structure, "
            "storage_value")


def _variable(row: Row) -> Variable:
    vid, path, name, type_, structure, text = row
    return Variable(vid, path, name, type_, structure, text or "")


def _not_found(address: Address) -> ApiError:
    return ApiError(None, f"Variable not found : « {address} »")


def _find(tx: Tx, address: Address) -> Variable | None:
    where, params = address.where()
    rows = tx.query(f"SELECT {_COLUMNS} FROM t_storage WHERE {where}", params)
    return _variable(rows[0]) if rows else None


class Variables:
    """Typed variables in ``t_storage``."""

    def __init__(self, server: Server) -> None:
        self._storage = server.storage

    async def get(self, address: Address) -> Variable:
        where, params = address.where()
        row = await self._storage.query_one(f"SELECT {_COLUMNS} FROM t_storage WHERE {where}",
                                            params)
        if row is None:
            raise _not_found(address)
        return _variable(row)

    async def list(self, path: str, recursive: bool) -> list[Variable]:
        """The variables of ``path``, or of ``path`` and everything under it."""
        sql = f"SELECT {_COLUMNS} FROM t_storage"
        params: tuple[object, ...] = (path,)
        if not recursive:
            sql += " WHERE storage_path = %s"
        elif path:
            prefix = path + "/"
            sql += " WHERE storage_path = %s OR SUBSTR(storage_path, 1, %s) = %s"
            params = (path, len(prefix), prefix)
        else:
            params = ()
        rows = await self._storage.query(sql + " ORDER BY storage_path, storage_name", params)
        return [_variable(r) for r in rows]

    async def set(self, address: Address, type_: str | None, structure: str | None,
                  text: str) -> int:
        """Create or replace a variable; type and structure default to the existing one's."""
        if type_ is not None and type_ not in TYPES:
            raise _invalid(f"Invalid type « {type_} »")
        if structure is not None and structure not in STRUCTURES:
            raise _invalid(f"Invalid structure « {structure} »")
        if not address.id:
            address.check()

        def set_(tx: Tx) -> int:
            existing = _find(tx, address)
            if existing is None and address.id:
                raise _not_found(address)
            new_type = type_ or (existing.type if existing else None)
            new_structure = structure or (existing.structure if existing else None)
            if new_type is None:
                raise _invalid("Type must be set before value")
            if new_structure is None:
                raise _invalid("Structure must be set before value")
            stored = dump_json(parse_value(text, new_type, new_structure))
            if existing is None:
                return tx.execute(
                    "INSERT INTO t_storage (storage_path, storage_name, storage_type, "
                    "storage_structure, storage_value) VALUES (%s, %s, %s, %s, %s)",
                    (address.path, address.name, new_type, new_structure, stored)).lastrowid
            tx.execute(
                "UPDATE t_storage SET storage_type = %s, storage_structure = %s, "
                "storage_value = %s WHERE storage_id = %s",
                (new_type, new_structure, stored, existing.id))
            return existing.id

        return await self._storage.transaction(set_)

    async def update(self, address: Address, change: Callable[[Variable], Any]) -> tuple[int, Any]:
        """Replace an existing variable's value by ``change(variable)``, atomically;
        ``(id, new value)``."""

        def update(tx: Tx) -> tuple[int, Any]:
            variable = _find(tx, address)
            if variable is None:
                raise _not_found(address)
            value = change(variable)
            tx.execute("UPDATE t_storage SET storage_value = %s WHERE storage_id = %s",
                       (dump_json(value), variable.id))
            return variable.id, value

        return await self._storage.transaction(update)

    async def unset(self, address: Address) -> int:
        def unset(tx: Tx) -> int:
            variable = _find(tx, address)
            if variable is None:
                raise _not_found(address)
            tx.execute("DELETE FROM t_storage WHERE storage_id = %s", (variable.id,))
            return variable.id

        return await self._storage.transaction(unset)


# -- launchers ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Launcher:
    """A pre-filled launch form; ``user``/``host`` are storage paths the UI reads to offer
    choices, ``parameters`` (JSON) pre-fills the workflow parameters."""

    id: int  # ignored by create
    name: str
    group: str
    description: str
    workflow_id: int
    user: str
    host: str
    parameters: str

    def row(self) -> tuple[object, ...]:
        return (self.name, self.group, self.description, self.workflow_id, self.user,
                self.host, self.parameters)


def _launcher_not_found() -> ApiError:
    return ApiError("UNKNOWN_LAUNCHER", "Launcher not found")


class Launchers:
    """Every launcher, by id. Access of USER profiles is a module right (``storage``,
    ``launcher``, id) kept with the users."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._storage = server.storage
        self._by_id: dict[int, Launcher] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT launcher_id, launcher_name, launcher_group, launcher_description, "
            "workflow_id, launcher_user, launcher_host, launcher_parameters FROM t_launcher")
        self._by_id = {
            r[0]: Launcher(r[0], r[1], r[2] or "", r[3] or "", r[4], r[5] or "", r[6] or "",
                           r[7] or "")
            for r in rows
        }

    def get(self, launcher_id: int) -> Launcher:
        try:
            return self._by_id[launcher_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown Launcher ID : {launcher_id}") from None

    def all(self) -> list[Launcher]:
        """Sorted by name (``launchers list``)."""
        return sorted(self._by_id.values(), key=lambda launcher: launcher.name)

    def _check(self, launcher: Launcher) -> None:
        parameters = launcher.parameters
        if len(parameters) > LAUNCHER_PARAMETERS_MAX or not _is_json(parameters):
            raise _invalid("Invalid json in parameters")
        self._server.workflows.get(launcher.workflow_id)

    async def create(self, launcher: Launcher) -> int:
        self._check(launcher)
        result = await self._storage.execute(
            "INSERT INTO t_launcher (launcher_name, launcher_group, launcher_description, "
            "workflow_id, launcher_user, launcher_host, launcher_parameters) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)", launcher.row())
        return result.lastrowid

    async def edit(self, launcher: Launcher) -> None:
        self._check(launcher)
        result = await self._storage.execute(
            "UPDATE t_launcher SET launcher_name = %s, launcher_group = %s, "
            "launcher_description = %s, workflow_id = %s, launcher_user = %s, "
            "launcher_host = %s, launcher_parameters = %s WHERE launcher_id = %s",
            (*launcher.row(), launcher.id))
        if not result.rowcount:
            raise _launcher_not_found()

    async def delete(self, launcher_id: int) -> None:
        """Delete a launcher and the users' rights on it."""

        def delete(tx: Tx) -> int:
            deleted = tx.execute("DELETE FROM t_launcher WHERE launcher_id = %s",
                                 (launcher_id,)).rowcount
            tx.execute(
                "DELETE FROM t_user_module WHERE module_name = 'storage' AND "
                "user_module_type = 'launcher' AND user_module_object = %s", (launcher_id,))
            return deleted

        if not await self._storage.transaction(delete):
            raise _launcher_not_found()

    async def grant(self, user_id: int, launcher_id: int) -> None:
        """Give a user access to a launcher (idempotent)."""
        self._server.users.get(user_id)
        self.get(launcher_id)

        def grant(tx: Tx) -> None:
            _revoke(tx, user_id, launcher_id)
            tx.execute(
                "INSERT INTO t_user_module (user_id, module_name, user_module_type, "
                "user_module_object, user_module_access) VALUES (%s, 'storage', 'launcher', "
                "%s, 1)", (user_id, launcher_id))

        await self._storage.transaction(grant)

    async def revoke(self, user_id: int, launcher_id: int) -> None:
        self._server.users.get(user_id)
        self.get(launcher_id)
        if not await self._storage.transaction(lambda tx: _revoke(tx, user_id, launcher_id)):
            raise ApiError("ALREADY_NO_RIGHTS", "No right found on that workflow")


def _revoke(tx: Tx, user_id: int, launcher_id: int) -> int:
    return tx.execute(
        "DELETE FROM t_user_module WHERE user_id = %s AND module_name = 'storage' AND "
        "user_module_type = 'launcher' AND user_module_object = %s",
        (user_id, launcher_id)).rowcount


# -- displays -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Display:
    """A dashboard: the variables under ``path`` rendered with title/content templates."""

    id: int
    name: str
    group: str
    path: str
    order: str  # ASC | DESC
    item_title: str
    item_content: str

    def row(self) -> tuple[object, ...]:
        return (self.name, self.group, self.path, self.order, self.item_title,
                self.item_content)


def _display_not_found() -> ApiError:
    return ApiError("UNKNOWN_DISPLAY", "Display not found")


class Displays:
    """Every display, by id."""

    def __init__(self, server: Server) -> None:
        self._storage = server.storage
        self._by_id: dict[int, Display] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT display_id, display_name, display_group, storage_path, display_order, "
            "display_item_title, display_item_content FROM t_display")
        self._by_id = {
            r[0]: Display(r[0], r[1], r[2] or "", r[3], r[4], r[5], r[6] or "") for r in rows
        }

    def get(self, display_id: int) -> Display:
        try:
            return self._by_id[display_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown Display ID : {display_id}") from None

    def all(self) -> list[Display]:
        """Sorted by name (``displays list``)."""
        return sorted(self._by_id.values(), key=lambda d: d.name)

    def groups(self) -> list[str]:
        return sorted({d.group for d in self._by_id.values()})

    async def create(self, d: Display) -> int:
        """Create ``d`` (its ``id`` is ignored)."""
        return (await self._write(
            d, "INSERT INTO t_display (display_name, display_group, storage_path, "
            "display_order, display_item_title, display_item_content) "
            "VALUES (%s, %s, %s, %s, %s, %s)", d.row())).lastrowid

    async def edit(self, d: Display) -> None:
        result = await self._write(
            d, "UPDATE t_display SET display_name = %s, display_group = %s, storage_path = %s, "
            "display_order = %s, display_item_title = %s, display_item_content = %s "
            "WHERE display_id = %s", (*d.row(), d.id))
        if not result.rowcount:
            raise _display_not_found()

    async def _write(self, d: Display, sql: str, params: tuple[object, ...]) -> Result:
        """Check and write a definition; a duplicate name has its own message (errata 14)."""
        if d.order not in ORDERS:
            raise _invalid("Order must be ASC or DESC")
        try:
            return await self._storage.execute(sql, params)
        except DuplicateEntry:
            raise _invalid(f"Display « {d.name} » already exists") from None

    async def delete(self, display_id: int) -> None:
        result = await self._storage.execute("DELETE FROM t_display WHERE display_id = %s",
                                             (display_id,))
        if not result.rowcount:
            raise _display_not_found()
