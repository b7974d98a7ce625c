"""Notification plugins installed over the API run at the end of instances (ops.md §6.2)."""

from __future__ import annotations

import base64
import io
import json
import os
import socketserver
import threading
import time
import zipfile

from evqtest import create_workflow, one_task, wait_terminated

from evqueue.plugins.email import plugin_zip

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


class _SmtpSink(socketserver.StreamRequestHandler):
    """A minimal SMTP server that keeps the messages it receives."""

    messages: list[bytes]

    def handle(self) -> None:
        self.wfile.write(b"220 sink ready\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.messages.append(data)
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_builtin_email_plugin_sends_through_smtp(daemon):
    messages: list[bytes] = []
    handler = type("Sink", (_SmtpSink,), {"messages": messages})
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    try:
        with daemon.client() as c:
            zipped = base64.b64encode(plugin_zip()).decode()
            c.query(f'<notification_type action="register" zip="{zipped}" />')
            type_id = c.query('<notification_types action="list" />')[0].get("id")
            conf = json.dumps({"smtp_host": "127.0.0.1", "smtp_port": smtp.server_address[1],
                               "from": "evq@localhost"})
            c.query(f'<notification_type action="set_conf" id="{type_id}" '
                    f'content="{base64.b64encode(conf.encode()).decode()}" />')
            params = base64.b64encode(json.dumps({"to": "ops@example.com",
                                                  "when": "ON_ERROR"}).encode()).decode()
            c.query(f'<notification action="create" type_id="{type_id}" name="mail" '
                    f'parameters="{params}" subscribe_all="yes" />')
            c.query('<control action="syncnotifications" notify="no" />')
            create_workflow(c, "ok", one_task("/bin/true"))
            create_workflow(c, "ko", one_task("/bin/false"))
            wait_terminated(c, int(c.query('<instance action="launch" name="ok" />')
                                   .get("workflow-instance-id")))
            ko = int(c.query('<instance action="launch" name="ko" />').get("workflow-instance-id"))
            wait_terminated(c, ko)
            for _ in range(100):
                if messages:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
        assert len(messages) == 1  # ON_ERROR: only the failed instance
        text = messages[0].decode()
        assert f"Subject: [evQueue] ko #{ko} failed" in text and "ops@example.com" in text
    finally:
        smtp.shutdown()
