#!/usr/bin/env python3
"""evqueue e-mail notification plugin (the original's plugin contract, ops.md §6.2).

argv: instance id, number of errors, API socket path. stdin: JSON with ``instance`` (the
instance XML), ``pluginconf`` (smtp_host, smtp_port, from) and ``notificationconf`` (to, when =
ON_SUCCESS | ON_ERROR | ON_BOTH, subject with {id} {name} {status} {errors}). Standard library
only, so it runs with any python3. Exit 0 when sent or not wanted; errors on stderr, exit 1.
"""

import json
import smtplib
import sys
import xml.etree.ElementTree as ET
from email.message import EmailMessage


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: notify_email.py INSTANCE_ID ERRORS SOCKET (JSON on stdin)", file=sys.stderr)
        return 1
    instance_id, errors = sys.argv[1], int(sys.argv[2])
    data = json.load(sys.stdin)
    plugin, conf = data.get("pluginconf") or {}, data.get("notificationconf") or {}
    when = conf.get("when", "ON_ERROR")
    if (when == "ON_ERROR" and not errors) or (when == "ON_SUCCESS" and errors):
        return 0
    recipients = [a.strip() for a in conf.get("to", "").split(",") if a.strip()]
    if not recipients:
        print("no recipient configured ('to')", file=sys.stderr)
        return 1
    root = ET.fromstring(data["instance"])
    status = "failed" if errors else "succeeded"
    fields = {"id": instance_id, "name": root.get("name", ""), "status": status,
              "errors": errors}
    msg = EmailMessage()
    msg["Subject"] = conf.get("subject", "[evQueue] {name} #{id} {status}").format(**fields)
    msg["From"] = plugin.get("from", "evqueue@localhost")
    msg["To"] = ", ".join(recipients)
    lines = [f"Workflow {fields['name']}, instance {instance_id}: {status} "
             f"({errors} error(s)).", f"Started {root.get('start_time', '')}, ended "
             f"{root.get('end_time', '')}.", ""]
    for task in root.iter("task"):
        lines.append(f"- {task.get('name') or task.get('path')}: {task.get('status')} "
                     f"retval={task.get('retval', '')}")
    msg.set_content("\n".join(lines) + "\n")
    try:
        with smtplib.SMTP(plugin.get("smtp_host", "localhost"),
                          int(plugin.get("smtp_port", 25)), timeout=10) as smtp:
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as e:
        print(f"could not send the e-mail: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
