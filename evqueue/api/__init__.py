"""The API layer: one module per query group, registered with ``dispatch.handler``.

Importing this package registers every group (see README, Architecture).
"""

from evqueue.api import (  # noqa: F401  (imported for their handler registrations)
    control,
    datastore,
    filesystem,
    git,
    instance,
    logs,
    notification,
    ping,
    processmanager,
    queue,
    retry_schedule,
    statistics,
    status,
    storage_module,
    tag,
    user,
    workflow,
    workflow_schedule,
)
