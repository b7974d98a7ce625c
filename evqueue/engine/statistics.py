"""Per-node counters read by monitoring (ops.md §10, errata 12); reset at restart."""

from __future__ import annotations

from dataclasses import dataclass, fields

#: Gauges and subscription counts survive ``statistics reset``.
_NOT_RESET = frozenset(
    {"current_api_connections", "current_ws_connections", "ws_subscriptions",
     "workflow_instance_executing", "waiting_threads"}
)


@dataclass
class Statistics:
    """Attribute names are the wire names (the Zabbix template reads them)."""

    accepted_api_connections: int = 0
    accepted_ws_connections: int = 0
    current_api_connections: int = 0
    current_ws_connections: int = 0
    api_queries: int = 0
    ws_queries: int = 0
    ws_events: int = 0
    ws_subscriptions: int = 0
    api_exceptions: int = 0
    workflow_queries: int = 0
    workflow_status_queries: int = 0
    workflow_cancel_queries: int = 0
    statistics_queries: int = 0
    workflow_exceptions: int = 0
    workflow_instance_launched: int = 0
    workflow_instance_executing: int = 0
    workflow_instance_errors: int = 0
    waiting_threads: int = 0

    def reset(self) -> None:
        for f in fields(self):
            if f.name not in _NOT_RESET:
                setattr(self, f.name, 0)

    def as_attributes(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
