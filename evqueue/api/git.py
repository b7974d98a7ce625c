"""``git`` (protocol.md §3.17, errata 21, ops.md §8.2): there is no git support.

The React front-end calls ``git list_workflows`` unconditionally, so the group must exist and
answer like an original engine without ``git.repository``: a USER gets
``INSUFFICIENT_RIGHTS``; an ADMIN gets a KO without code for every query, whatever (or
without any) ``action``. Deviation (docs/deviations.md): a configured ``git.repository`` is
ignored.
"""

from __future__ import annotations

from evqueue.api.dispatch import Call, handler
from evqueue.protocol.errors import ApiError


@handler("git")
async def git(call: Call) -> None:
    call.user.require_admin()
    raise ApiError(None, "No git repository is configured, this feature is disabled")
