#!/usr/bin/env python3
"""evqueue e-mail notification plugin (the original's plugin contract, ops.md §6.2).

argv: instance id, number of errors, API socket path. stdin: JSON with ``instance`` (the
instance XML), ``pluginconf`` (smtp_host, smtp_port, from) and ``notificationconf`` (to, when =
ON_SUCCESS | ON_ERROR | ON_BOTH, subject with {id} {name} {status} {errors}). Standard library
only, so it runs with any python3. Exit 0 when sent or not wanted; errors on stderr, exit 1.
"""

import json
import re
import smtplib
import sys
import xml.etree.ElementTree as ET
from email.message import EmailMessage

WHEN = ("ON_SUCCESS", "ON_ERROR", "ON_BOTH")


class PluginError(Exception):
    """A bad argument or configuration, reported in one line on stderr."""


def _fill(template: str, fields: dict) -> str:
    """Replace the known {placeholders}; anything else is kept as written."""
    return re.sub(r"\{(\w+)\}", lambda m: str(fields.get(m[1], m[0])), template)


def _read_input(argv: list) -> tuple:
    if len(argv) != 4:
        raise PluginError("usage: notify_email.py INSTANCE_ID ERRORS SOCKET (JSON on stdin)")
    try:
        errors = int(argv[2])
        data = json.load(sys.stdin)
        root = ET.fromstring(data["instance"])
    except (ValueError, KeyError, TypeError, ET.ParseError) as e:
        raise PluginError(f"bad input from the engine: {e!r}") from None
    plugin, conf = data.get("pluginconf") or {}, data.get("notificationconf") or {}
    if not isinstance(plugin, dict) or not isinstance(conf, dict):
        raise PluginError("pluginconf and notificationconf must be JSON objects")
    return argv[1], errors, root, plugin, conf


def build_message(instance_id: str, errors: int, root: ET.Element, plugin: dict,
                  conf: dict) -> EmailMessage:
    recipients = [a.strip() for a in str(conf.get("to", "")).split(",") if a.strip()]
    if not recipients:
        raise PluginError("no recipient configured ('to')")
    status = "failed" if errors else "succeeded"
    fields = {"id": instance_id, "name": root.get("name", ""), "status": status,
              "errors": errors}
    msg = EmailMessage()
    msg["Subject"] = _fill(str(conf.get("subject") or "[evQueue] {name} #{id} {status}"),
                           fields)
    msg["From"] = str(plugin.get("from") or "evqueue@localhost")
    msg["To"] = ", ".join(recipients)
    lines = [f"Workflow {fields['name']}, instance {instance_id}: {status} "
             f"({errors} error(s)).", f"Started {root.get('start_time', '')}, ended "
             f"{root.get('end_time', '')}.", ""]
    for task in root.iter("task"):
        lines.append(f"- {task.get('name') or task.get('path')}: {task.get('status')} "
                     f"retval={task.get('retval', '')}")
    msg.set_content("\n".join(lines) + "\n")
    return msg


def main() -> int:
    try:
        instance_id, errors, root, plugin, conf = _read_input(sys.argv)
        when = conf.get("when") or "ON_ERROR"
        if when not in WHEN:
            raise PluginError(f"'when' must be one of {', '.join(WHEN)}, not {when!r}")
        if (when == "ON_ERROR" and not errors) or (when == "ON_SUCCESS" and errors):
            return 0
        msg = build_message(instance_id, errors, root, plugin, conf)
        try:
            port = int(plugin.get("smtp_port") or 25)
        except (TypeError, ValueError):
            raise PluginError(f"invalid smtp_port {plugin.get('smtp_port')!r}") from None
        host = str(plugin.get("smtp_host") or "localhost")
        try:
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as e:
            raise PluginError(f"could not send the e-mail through {host}:{port}: {e}") from None
    except PluginError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
