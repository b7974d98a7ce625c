"""The client library and ``evqueue-api`` against the real daemon (skipped while it cannot
start; see the ``live`` fixture)."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner
from lxml import etree

from evqueue.client import AsyncClient, Client, EvqError, Federation
from evqueue.client.cli import main

WORKFLOW = b"""<workflow>
  <parameters><parameter name="greeting" /></parameters>
  <subjobs>
    <job name="first">
      <tasks>
        <task type="BINARY" path="/bin/echo" queue="default" output-method="TEXT">
          <input name="message"><value select="evqGetWorkflowParameter('greeting')" /></input>
        </task>
      </tasks>
    </job>
  </subjobs>
</workflow>"""


def create_workflow(client: Client, name: str = "client_wf") -> None:
    client.query(etree.Element(
        "workflow", action="create", name=name, content=base64.b64encode(WORKFLOW).decode()
    ))


@pytest.mark.parametrize("kind", ["unix", "tcp", "ws"])
def test_greeting_and_ping(live, kind: str) -> None:
    url = {"unix": live.url, "tcp": f"tcp://127.0.0.1:{live.tcp_port}",
           "ws": f"ws://127.0.0.1:{live.ws_port}"}[kind]
    with Client(url, "admin", "admin") as c:
        assert c.connect().profile == "ADMIN"
        assert c.ping().version == "3.3"
        with pytest.raises(EvqError) as err:
            c.query('<nope action="x" />')
        assert err.value.code == "UNKNOWN_COMMAND"
    with pytest.raises(EvqError) as err, Client(url, "admin", "bad") as c:
        c.ping()
    assert err.value.code == "AUTH_ERROR"


def test_launch_wait_and_list(live) -> None:
    with live.client() as c:
        create_workflow(c)
        iid = c.launch("client_wf", {"greeting": "hello"}, comment="from the client")
        seen = []
        final = c.wait(iid, timeout=30, progress=seen.append)
        assert final.terminated and final.errors == 0 and final.comment == "from the client"
        assert seen[-1].terminated and final.progress() == (1, 1)
        output = final.document.find(".//task/output")
        assert output is not None and output.text.strip() == "hello"
        total, rows = c.instances(workflow="client_wf")
        assert total >= 1 and rows[0].id == iid
        with pytest.raises(EvqError) as err:
            c.launch("client_wf", {})
        assert err.value.code == "INVALID_WORKFLOW_PARAMETERS"
        assert c.launch("client_wf", {"greeting": "x"}, mode="synchronous", timeout=30) > iid
        assert any(q.name == "default" for q in c.queues())


async def test_async_client_and_federation(live) -> None:
    async with AsyncClient(live.url, "admin", "admin") as c:
        assert (await c.statistics())["api_queries"] >= 0
    with Federation([live.url, f"tcp://127.0.0.1:{live.tcp_port}"], "admin", "admin") as fed:
        assert len(fed.ping()) == 2 and fed.unreachable == {}
        stats = fed.statistics()
        assert len(stats.parts) == 2


def test_cli_original_syntax(live, tmp_path) -> None:
    env = {"HOME": str(tmp_path), "EVQUEUE_SERVERS": None}
    base = ["--connect", live.url, "--user", "admin", "--password", "admin"]
    result = CliRunner().invoke(main, [*base, "--statistics", "--query", "--type", "global"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert etree.fromstring(result.stdout).find("statistics").get("current_api_connections")
    content = base64.b64encode(WORKFLOW).decode()
    result = CliRunner().invoke(main, [*base, "--workflow", "--create", "--name", "cli_wf",
                                       "--content"], input=content, env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*base, "launch", "cli_wf", "greeting=hi", "--wait"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "TERMINATED with 0 errors" in result.stdout
    result = CliRunner().invoke(main, [*base, "--queue", "--get", "--id", "999"], env=env)
    assert result.exit_code == 255 and "Error executing command" in result.stderr
