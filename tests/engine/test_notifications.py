"""Notification plugins installed over the API run at the end of instances (ops.md §6.2)."""

from __future__ import annotations

import base64
import glob
import io
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import zipfile
from xml.etree import ElementTree

from evqtest import create_workflow, free_ports, one_task, wait_terminated

from evqueue.plugins import email as email_plugin
from evqueue.plugins.email import notify_email, plugin_zip

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
        # the stderr file was read into the database, then removed
        assert not glob.glob(os.path.join(daemon.root, "logs", "notif_*"))


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


SLOW = """#!/bin/sh
echo $$ > "pid.$1"
exec sleep 30
"""


def _zip_of(name: str, script: str) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.xml", f"<plugin><name>{name}</name><description>test plugin"
                   f"</description><binary>{name}.sh</binary></plugin>")
        info = zipfile.ZipInfo(f"{name}.sh")
        info.external_attr = 0o755 << 16
        z.writestr(info, script)
    return base64.b64encode(buf.getvalue()).decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timeout_kills_the_plugin_and_extra_calls_are_dropped(make_daemon):
    d = make_daemon(**{"notifications.tasks.timeout": "1",
                       "notifications.tasks.concurrency": "1"})
    with d.client() as c:
        c.query(f'<notification_type action="register" zip="{_zip_of("slow", SLOW)}" />')
        type_id = c.query('<notification_types action="list" />')[0].get("id")
        for name in ("first", "second"):
            c.query(f'<notification action="create" type_id="{type_id}" name="{name}" '
                    'parameters="" subscribe_all="yes" />')
        # a new node or a wiped directory: the executable is written again when needed
        os.unlink(os.path.join(d.root, "plugins", type_id))
        create_workflow(c, "w", one_task("/bin/true"))
        t0 = time.monotonic()
        iid = int(c.query('<instance action="launch" name="w" />').get("workflow-instance-id"))
        doc = wait_terminated(c, iid)
        assert doc.get("errors") == "0" and time.monotonic() - t0 < 1  # not held by plugins
        pid = int(_wait_file(os.path.join(d.root, "plugins", f"pid.{iid}")))
        assert _alive(pid)
        for _ in range(60):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid)  # SIGKILLed after notifications.tasks.timeout
        time.sleep(0.2)
        warnings = [e.get("message") for e in
                    c.query('<logs action="list" filter_level="LOG_WARNING" />')]
        assert any("timed out" in m for m in warnings)
        assert any("Maximum concurrency reached for notifications calls" in m
                   for m in warnings)
        assert len(c.query('<logsnotifications action="list" />')) == 0  # timeouts: log only


def _run_email_plugin(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    script = os.path.join(os.path.dirname(email_plugin.__file__), "notify_email.py")
    return subprocess.run([sys.executable, script, *args], input=stdin, capture_output=True,
                          text=True, timeout=10)


def test_email_plugin_reports_bad_input_in_one_line():
    instance = '<workflow id="7" name="w" errors="1"/>'
    cases = [
        (["7", "1"], "{}", "usage"),
        (["7", "x", "/s"], "{}", "bad input"),
        (["7", "1", "/s"], "not json", "bad input"),
        (["7", "1", "/s"], json.dumps({"instance": "<oops"}), "bad input"),
        (["7", "1", "/s"], json.dumps({"instance": instance, "notificationconf": {}}),
         "no recipient"),
        (["7", "1", "/s"], json.dumps({"instance": instance,
                                        "notificationconf": {"to": "a@b", "when": "SOMETIMES"}}),
         "'when' must be one of"),
        (["7", "1", "/s"], json.dumps({"instance": instance, "pluginconf": {"smtp_port": "x"},
                                        "notificationconf": {"to": "a@b"}}),
         "invalid smtp_port"),
        (["7", "1", "/s"], json.dumps({"instance": instance,
                                        "pluginconf": {"smtp_host": "127.0.0.1",
                                                       "smtp_port": free_ports(1)[0]},
                                        "notificationconf": {"to": "a@b"}}),
         "could not send the e-mail"),
    ]
    for args, stdin, error in cases:
        done = _run_email_plugin(args, stdin)
        assert done.returncode == 1, (args, stdin, done.stderr)
        assert error in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    # not wanted (ON_ERROR and no error): nothing to send, success
    ok = json.dumps({"instance": instance, "notificationconf": {"to": "a@b"}})
    assert _run_email_plugin(["7", "0", "/s"], ok).returncode == 0


def test_email_subject_keeps_unknown_placeholders():
    root = ElementTree.fromstring('<workflow name="nightly"><subjobs><job><tasks>'
                                  '<task path="/bin/x" status="TERMINATED" retval="2"/>'
                                  '</tasks></job></subjobs></workflow>')
    msg = notify_email.build_message("12", 1, root, {}, {"to": "a@b, c@d",
                                                         "subject": "{name} {nope} #{id}"})
    assert msg["Subject"] == "nightly {nope} #12" and msg["To"] == "a@b, c@d"
    assert "- /bin/x: TERMINATED retval=2" in msg.get_content()
