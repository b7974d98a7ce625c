"""``evqueue-api``: the original's syntax and output, settings files, human commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakeserver import FakeServer, ko, response
from lxml import etree

from evqueue.client.cli import main, split_legacy
from evqueue.client.settings import SYSTEM_FILE

STATS = response("fake", body='<statistics current_api_connections="2" '
                 'workflow_instance_executing="0"><queue name="q"/></statistics>')


@pytest.fixture(autouse=True)
def _no_system_settings() -> None:
    if Path(SYSTEM_FILE).exists():
        pytest.skip(f"{SYSTEM_FILE} exists on this machine")


@pytest.fixture
def run(tmp_path: Path):
    def invoke(*args: str, input: str | None = None, servers: str | None = None) -> Result:
        env = {"HOME": str(tmp_path), "EVQUEUE_SERVERS": servers}
        return CliRunner().invoke(main, list(args), input=input, env=env)

    return invoke


def login(server: FakeServer, kind: str = "tcp") -> list[str]:
    return ["--connect", server.url(kind), "--user", "admin", "--password", "admin"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ping", "--ping"], ([], ["--ping", "--ping"])),
        (["--connect", "x", "--noformat", "--a", "--b"], (["--connect", "x", "--noformat"],
                                                          ["--a", "--b"])),
        (["--user=u", "--", "--a", "--b"], (["--user=u"], ["--a", "--b"])),
        (["launch", "wf"], None),
        (["--connect", "x", "status"], None),
        (["--help"], None),
        ([], None),
    ],
)
def test_split_legacy(args: list[str], expected: object) -> None:
    assert split_legacy(args) == expected


def test_legacy_query_pretty_printed(run, fake: FakeServer) -> None:
    fake.answers[("statistics", "query")] = lambda q: STATS
    result = run(*login(fake, "unix"), "--statistics", "--query", "--type", "global")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        '<response node="fake" status="OK">\n'
        '  <statistics current_api_connections="2" workflow_instance_executing="0">\n'
        '    <queue name="q"/>\n'
        "  </statistics>\n"
        "</response>\n"
    )
    assert fake.attrs("statistics") == [{"action": "query", "type": "global"}]


def test_legacy_noformat_and_xpath(run, fake: FakeServer) -> None:
    fake.answers[("statistics", "query")] = lambda q: STATS
    query = ["--statistics", "--query", "--type", "global"]
    result = run(*login(fake), "--noformat", *query)
    assert result.exit_code == 0 and result.stdout.count("\n") == 1
    assert etree.fromstring(result.stdout).find("statistics/queue") is not None
    result = run(*login(fake), "--xpath", "statistics/@current_api_connections", *query)
    assert (result.exit_code, result.stdout) == (0, "2\n")
    result = run(*login(fake), "--xpath", "count(statistics/queue) > 0", *query)
    assert result.stdout == "true\n"
    result = run(*login(fake), "--xpath", "/response/nothing", *query)
    assert (result.exit_code, result.stdout) == (0, "")
    result = run(*login(fake), "--xpath", "statistics[", *query)
    assert result.exit_code == 255 and "Invalid XPath expression" in result.stderr


def test_legacy_ko_exits_255(run, fake: FakeServer) -> None:
    result = run(*login(fake), "--queue", "--frobnicate")
    assert result.exit_code == 255 and result.stdout == ""
    assert result.stderr == (
        "Error executing command : Unknown command or action (UNKNOWN_COMMAND)\n"
    )
    fake.answers[("tag", "edit")] = lambda q: ko("fake", "Tag not found")
    result = run(*login(fake), "--tag", "--edit", "--id", "1")
    assert (result.exit_code, result.stderr) == (255, "Error executing command : Tag not found\n")


def test_legacy_parameters_and_stdin(run, fake: FakeServer) -> None:
    fake.handler = lambda q: response("fake")
    result = run(*login(fake, "ws"), "--", "--workflow", "--create", "--name", "wf",
                 "--content", input="PHdvcmtmbG93Lz4=\nPC93Pg==\n")
    assert result.exit_code == 0, result.output
    result = run(*login(fake), "--workflow_schedule", "--create", "--workflow-id", "3",
                 "--comment", "--not-an-option")
    assert result.exit_code == 0, result.output
    first, second = fake.queries
    assert (first.tag, dict(first.attrib)) == ("workflow", {
        "action": "create", "content": "PHdvcmtmbG93Lz4=\nPC93Pg==\n", "name": "wf"})
    assert list(second.attrib.items()) == [
        ("action", "create"), ("comment", "--not-an-option"), ("workflow_id", "3")]


@pytest.mark.parametrize("args", [["--ping"], ["--ping", "--ping", "value"], ["--1x", "--y"]])
def test_legacy_usage_errors(run, fake: FakeServer, args: list[str]) -> None:
    result = run(*login(fake), *args)
    assert result.exit_code == 2 and fake.queries == []


def test_settings_files(run, fake: FakeServer, tmp_path: Path) -> None:
    fake.answers[("statistics", "query")] = lambda q: STATS
    conf = tmp_path / ".evqueue.api.conf"
    conf.write_text(f"# mine\napi.connect = {fake.tcp_url}\napi.user = admin\n"
                    "api.password = '{EVQ_TEST_PW}'\napi.noformat = yes\n")
    query = ["--statistics", "--query", "--type", "global"]
    result = CliRunner().invoke(main, query, env={"HOME": str(tmp_path), "EVQ_TEST_PW": "admin",
                                                  "EVQUEUE_SERVERS": None})
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    result = CliRunner().invoke(main, ["--xpath", "name(*)", "--password", "admin", *query],
                                env={"HOME": str(tmp_path), "EVQUEUE_SERVERS": None})
    assert result.stdout == "statistics\n"
    conf.write_text("api.color = blue\n")
    result = run(*query)
    assert result.exit_code == 255 and "Unknown configuration entry : api.color" in result.stderr
    conf.write_text("api.noformat = maybe\n")
    assert run(*query).exit_code == 255


def test_servers_from_the_environment(run, make_fake, closed_url: str) -> None:
    a, b = make_fake("a"), make_fake("b")
    result = run("--user", "admin", "--password", "admin", "--xpath", "string(@node)",
                 "--ping", "--ping", servers=f"{a.tcp_url},{closed_url},{b.unix_url}")
    assert result.exit_code == 0 and result.stdout in ("a\n", "b\n")
    result = run("--connect", closed_url, "--ping", "--ping", servers=a.tcp_url)
    assert result.exit_code == 255 and result.stderr.startswith("Connection error : ")


def test_bad_url(run) -> None:
    result = run("--connect", "localhost:5000", "--ping", "--ping")
    assert result.exit_code == 255 and "invalid server URL" in result.stderr


RUNNING = ('<workflow id="7" name="wf" status="EXECUTING"><subjobs><job><tasks>'
           '<task status="TERMINATED"/><task status="EXECUTING"/></tasks></job></subjobs>'
           "</workflow>")
FAILED = ('<workflow id="7" name="wf" status="TERMINATED" errors="1"><subjobs><job><tasks>'
          '<task status="TERMINATED" retval="1"/><task status="TERMINATED"/></tasks></job>'
          "</subjobs></workflow>")


def test_launch_and_wait_with_progress(run, fake: FakeServer) -> None:
    states = iter([RUNNING, FAILED])
    fake.answers[("instance", "launch")] = lambda q: response("fake", workflow_instance_id="7")
    fake.answers[("instance", "query")] = lambda q: response("fake", body=next(states))
    fake.answers[("instance", "wait")] = lambda q: response("fake")
    result = run(*login(fake), "launch", "wf", "a=1", "b=x=y", "--comment", "hi", "--wait")
    assert result.exit_code == 1, result.output
    assert result.stdout == "Launched instance 7\nInstance 7 TERMINATED with 1 error\n"
    assert "instance 7 (wf) EXECUTING: 1/2 tasks done, 1 running" in result.stderr
    assert "instance 7 (wf) TERMINATED: 2/2 tasks done, 1 error" in result.stderr
    launch = fake.queries[0]
    assert launch.get("comment") == "hi"
    assert [(p.get("name"), p.get("value")) for p in launch] == [("a", "1"), ("b", "x=y")]


def test_launch_usage(run, fake: FakeServer) -> None:
    result = run(*login(fake), "launch", "wf", "novalue")
    assert result.exit_code == 2 and "NAME=VALUE" in result.output and fake.queries == []


def test_wait_and_cancel_commands(run, fake: FakeServer) -> None:
    fake.answers[("instance", None)] = lambda q: response(
        "fake", body=FAILED.replace('errors="1"', 'errors="0"')
    ) if q.get("action") == "query" else response("fake")
    result = run(*login(fake), "wait", "7", "--quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "Instance 7 TERMINATED with 0 errors\n", "")
    assert run(*login(fake), "cancel", "7").stdout == "Cancelled instance 7\n"


def test_status_command(run, fake: FakeServer) -> None:
    fake.answers[("status", "query")] = lambda q: response("fake", body=RUNNING.replace(
        "<workflow ", '<workflow running_tasks="1" start_time="2024-01-01 10:00:00" '))
    result = run(*login(fake), "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "VERSION", "UPTIME"]
    assert lines[1].split() == ["fake", "3.3", "00:00:12"]
    assert lines[4].split() == ["7", "wf", "fake", "EXECUTING", "2024-01-01", "10:00:00", "1",
                                "0", "0"]


def test_instances_command(run, fake: FakeServer) -> None:
    fake.answers[("instances", "list")] = lambda q: response("fake", rows="40", body=(
        '<workflow id="3" name="wf" node_name="fake" status="TERMINATED" errors="2" '
        'start_time="2024-01-01 10:00:00" end_time="2024-01-01 10:00:05" comment="c"><tags/>'
        "</workflow>"))
    result = run(*login(fake), "instances", "--failed", "--workflow", "wf", "--limit", "5")
    assert result.exit_code == 0, result.output
    header, row, footer = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "WORKFLOW", "NODE", "STATUS"]
    assert row.split() == ["3", "wf", "fake", "TERMINATED", "2024-01-01", "10:00:00",
                           "2024-01-01", "10:00:05", "2", "c"]
    assert footer == "(1 of 40 instances)"
    assert fake.attrs("instances") == [{"action": "list", "limit": "5", "offset": "0",
                                        "filter_workflow": "wf", "filter_error": "yes"}]


def test_queues_and_schedules_commands(run, fake: FakeServer) -> None:
    fake.answers[("statistics", "query")] = lambda q: response("fake", body=(
        '<statistics><queue name="q1" concurrency="2" size="5" running_tasks="2" '
        'scheduler="prio"/></statistics>'))
    fake.answers[("workflow_schedules", "list")] = lambda q: response("fake", body=(
        '<workflow_schedule id="1" workflow_name="wf" node="any" schedule="0;30;3;;;" '
        'active="1" comment="nightly"/>'))
    result = run(*login(fake), "queues")
    assert result.stdout.splitlines()[1].split() == ["fake", "q1", "2", "prio", "5", "2"]
    result = run(*login(fake), "schedules")
    assert result.stdout.splitlines()[1].split() == ["1", "wf", "any", "0;30;3;;;", "yes",
                                                     "nightly"]


def test_help(run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "launch" in result.stdout and "--<group> --<action>" in result.stdout
    assert "__legacy__" not in result.stdout
