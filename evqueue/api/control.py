"""``control`` (protocol.md §3.2): reload, retry, syncnotifications, shutdown — ADMIN only."""

from __future__ import annotations

from evqueue.api.dispatch import Call, handler, unknown_command
from evqueue.protocol.errors import ApiError


@handler("control")
async def control(call: Call) -> None:
    call.user.require_admin()
    server = call.server
    action = call.action
    if action == "reload":
        module = call.params.str("module", "all")
        notify = call.params.bool("notify", True)
        if module == "all":
            await server.reload_all()
            modules = list(server.reloaders)
        elif module in server.reloaders:
            await server.reload(module)
            modules = [module]
        else:
            raise ApiError("INVALID_MODULE", f"Invalid module : {module}")
        if notify:
            for m in modules:
                server.cluster.notify_reload(m)
    elif action == "retry":
        server.retry_now()
    elif action == "syncnotifications":
        notify = call.params.bool("notify", True)
        await server.notifications.sync_binaries()
        if notify:
            server.cluster.notify("<control action='syncnotifications' notify='no' />")
    elif action == "shutdown":
        server.request_shutdown()
    else:
        raise unknown_command()
