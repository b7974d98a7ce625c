"""Users, profiles and per-workflow rights (ops.md §7, protocol.md §2.4).

Users are cached in memory and reloaded after every change. A session keeps the ``User``
captured at authentication (like the original), so rights changes apply to new connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evqueue.protocol.errors import ApiError
from evqueue.storage.base import Storage

RIGHTS = ("edit", "read", "exec", "kill")


@dataclass(frozen=True, slots=True)
class Rights:
    edit: bool = False
    read: bool = False
    exec: bool = False
    kill: bool = False


@dataclass(slots=True)
class User:
    id: int
    name: str
    password: str  # lowercase hex SHA-1 of the clear password
    profile: str  # ADMIN | USER
    preferences: str = ""
    rights: dict[int, Rights] = field(default_factory=dict)
    #: (module, type, object id) -> access
    module_rights: dict[tuple[str, str, int], bool] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.profile == "ADMIN"

    def can(self, workflow_id: int, right: str) -> bool:
        if self.is_admin:
            return True
        r = self.rights.get(workflow_id)
        return r is not None and getattr(r, right)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError("INSUFFICIENT_RIGHTS", "insufficient rights")

    def require(self, workflow_id: int, *rights: str) -> None:
        if not all(self.can(workflow_id, r) for r in rights):
            raise ApiError("INSUFFICIENT_RIGHTS", "insufficient rights")

    def require_any(self, workflow_id: int, *rights: str) -> None:
        if not any(self.can(workflow_id, r) for r in rights):
            raise ApiError("INSUFFICIENT_RIGHTS", "insufficient rights")

    def can_module(self, module: str, type_: str, object_id: int) -> bool:
        return self.is_admin or self.module_rights.get((module, type_, object_id), False)


#: The session user when ``core.auth.enable = no`` (protocol.md §2.3).
ANONYMOUS = User(id=0, name="anonymous", password="", profile="ADMIN")


class Users:
    """The in-memory user cache, by id and by login."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.by_id: dict[int, User] = {}
        self.by_name: dict[str, User] = {}

    async def reload(self) -> None:
        rows = await self._storage.query(
            "SELECT user_id, user_login, user_password, user_profile, user_preferences FROM t_user"
        )
        users = {r[0]: User(r[0], r[1], r[2], r[3], r[4] or "") for r in rows}
        for uid, wid, edit, read, exe, kill in await self._storage.query(
            "SELECT user_id, workflow_id, user_right_edit, user_right_read, user_right_exec, "
            "user_right_kill FROM t_user_right"
        ):
            if uid in users:
                users[uid].rights[wid] = Rights(bool(edit), bool(read), bool(exe), bool(kill))
        for uid, module, type_, obj, access in await self._storage.query(
            "SELECT user_id, module_name, user_module_type, user_module_object, "
            "user_module_access FROM t_user_module"
        ):
            if uid in users:
                users[uid].module_rights[(module, type_, obj)] = bool(access)
        self.by_id = users
        self.by_name = {u.name: u for u in users.values()}

    def lookup(self, login: str) -> User | None:
        return self.by_name.get(login)

    def get(self, user_id: int) -> User:
        try:
            return self.by_id[user_id]
        except KeyError:
            raise ApiError("UNKNOWN_OBJECT", f"Unknown User ID : {user_id}") from None

    def get_by_name(self, name: str) -> User:
        try:
            return self.by_name[name]
        except KeyError:
            raise ApiError("UKNOWN_OBJECT", f"Unknown User name : {name}") from None
