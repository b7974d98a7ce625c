"""``evqueue-api`` with the original's syntax replays the golden queries: every golden request
that the original tool can express (a root element with attributes) is sent through the CLI,
and its ``--noformat`` output must match the golden answer."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from lxml import etree
from test_golden import canon

from evqueue.client.cli import main

GOLDEN = json.loads((Path(__file__).parents[1] / "data" / "golden" / "index.json").read_text())
#: answers that depend on the connection or the machine, not on the engine's state
NOT_COMPARED = {"22-status-configuration.xml", "23-statistics-global.xml",
                "09-instance-query-first-poll.xml", "10-status-workflows-during-run.xml",
                "16-instance-wait.xml", "19-instances-list-filtered.xml"}


def _cli_args(request: etree._Element) -> list[str] | None:
    if len(request) or request.get("action") is None:
        return None
    args = [f"--{request.tag}", f"--{request.get('action')}"]
    for name, value in request.attrib.items():
        if name != "action":
            args += [f"--{name.replace('_', '-')}", value]
    return args


def test_cli_replays_golden_queries(daemon, tmp_path):
    runner = CliRunner()
    base = ["--connect", daemon.url, "--user", "admin", "--password", "admin", "--noformat"]
    env = {"HOME": str(tmp_path), "EVQUEUE_SERVERS": None}
    replayed = 0
    with daemon.client() as client:
        for t in GOLDEN["transcripts"]:
            kinds = [e["kind"] for e in t["exchange"]]
            if kinds != ["REQUEST", "RESPONSE"]:
                continue  # greetings, closes and malformed input are not queries
            request_text, expected = (e["data"] for e in t["exchange"])
            try:
                request = etree.fromstring(request_text.encode())
            except etree.XMLSyntaxError:
                continue
            args = _cli_args(request)
            if args is None:  # <parameter> children: the original tool cannot send them
                client.query_raw(request_text)
                continue
            if request.tag == "instance" and request.get("action") == "query":
                _wait_terminated(client, request.get("id"))
            result = runner.invoke(main, [*base, "--", *args], env=env)
            exp = etree.fromstring(expected.encode())
            replayed += 1
            if t["file"] in NOT_COMPARED:  # timing races or setup-specific answers
                assert result.exit_code in (0, 255), (t["file"], result.output)
            elif exp.get("status") == "KO":
                assert result.exit_code == 255, (t["file"], result.output)
                assert exp.get("error") in result.stderr
            else:
                assert result.exit_code == 0, (t["file"], result.output)
                got = etree.fromstring(result.stdout.encode())
                assert canon(got) == canon(exp), t["file"]
    assert replayed >= 35


def _wait_terminated(client, instance_id: str) -> None:
    for _ in range(200):
        doc = client.query_raw(f'<instance action="query" id="{instance_id}" />')
        if doc.get("status") != "OK" or doc[0].get("status") == "TERMINATED":
            return
        time.sleep(0.05)
