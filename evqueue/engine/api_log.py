"""API audit log (ops.md §5.2): one ``t_log_api`` row per successful mutating action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evqueue.storage.base import now

if TYPE_CHECKING:
    from evqueue.api.dispatch import Call

OBJECT_TYPES = ("Workflow", "WorkflowSchedule", "RetrySchedule", "User", "Tag", "Queue",
                "Channel", "ChannelGroup", "Alert")


def log_api(call: Call, object_type: str, object_id: int) -> None:
    """Record ``call`` (group, action, acting user) on an object; no-op when disabled."""
    server = call.server
    if not server.config["loggerapi.enable"]:
        return
    server.storage.write(
        "INSERT INTO t_log_api (node_name, user_id, log_api_object_id, log_api_object_type, "
        "log_api_group, log_api_action, log_api_timestamp) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (server.node, call.user.id, object_id, object_type, call.group, call.query.get("action"),
         now()),
    )
    server.events.publish("LOG_API")
