"""Notification plugins installed over the API run at the end of instances (ops.md §6.2)."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import zipfile

from evqtest import create_workflow, one_task, wait_terminated

PLUGIN = """#!/bin/sh
# writes what the engine gave it next to itself
printf '%s\\n' "$@" > "args.$1"
cat > "stdin.$1"
echo "failing on purpose" >&2
exit {code}
"""


def _zip(code: int) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.xml", "<plugin><name>record</name><description>records its "
                   "input</description><binary>record.sh</binary></plugin>")
        info = zipfile.ZipInfo("record.sh")
        info.external_attr = 0o755 << 16
        z.writestr(info, PLUGIN.format(code=code))
    return base64.b64encode(buf.getvalue()).decode()


def _wait_file(path: str) -> str:
    for _ in range(100):
        if os.path.exists(path) and os.path.getsize(path):
            time.sleep(0.1)
            with open(path) as f:
                return f.read()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_plugin_runs_with_the_original_arguments_and_json(daemon):
    with daemon.client() as c:
        c.query(f'<notification_type action="register" zip="{_zip(3)}" />')
        type_id = c.query('<notification_types action="list" />')[0].get("id")
        params = base64.b64encode(json.dumps({"to": "ops@example.com"}).encode()).decode()
        c.query(f'<notification action="create" type_id="{type_id}" name="n1" '
                f'parameters="{params}" subscribe_all="yes" />')
        c.query('<control action="syncnotifications" notify="no" />')
        create_workflow(c, "w", one_task("/bin/false"))
        iid = int(c.query('<instance action="launch" name="w" />').get("workflow-instance-id"))
        wait_terminated(c, iid)
        plugins = os.path.join(daemon.root, "plugins")
        args = _wait_file(os.path.join(plugins, f"args.{iid}")).splitlines()
        assert args == [str(iid), "1", daemon.socket]
        payload = json.loads(_wait_file(os.path.join(plugins, f"stdin.{iid}")))
        assert payload["notificationconf"] == {"to": "ops@example.com"}
        assert 'status="TERMINATED"' in payload["instance"]
        for _ in range(100):
            logs = c.query('<logsnotifications action="list" />')
            if len(logs):
                break
            time.sleep(0.05)
        assert "failing on purpose" in logs[0].get("message")
