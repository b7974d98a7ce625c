"""ping, status, control, statistics and instance groups on a real daemon: answers, error
texts (errata 11, 22) and the USER-profile rights matrix (protocol.md §3.20)."""

from __future__ import annotations

import pytest
from evqtest import create_workflow, one_task, wait_terminated

from evqueue.client import EvqError

QUICK = one_task("/bin/true")


@pytest.fixture
def env(daemon):
    admin = daemon.client()
    wid = create_workflow(admin, "wf", QUICK)
    admin.query('<user action="create" name="bob" password="pw" profile="USER" />')
    bob = daemon.client("bob", "pw")
    yield daemon, admin, bob, wid
    admin.close()
    bob.close()


def code(client, query: str) -> str | None:
    try:
        client.query(query)
    except EvqError as e:
        return e.code
    return None


def grant(admin, wid: int, **rights: str) -> None:
    r = {k: rights.get(k, "no") for k in ("read", "exec", "edit", "kill")}
    admin.query(f'<user action="grant" name="bob" workflow_id="{wid}" read="{r["read"]}" '
                f'exec="{r["exec"]}" edit="{r["edit"]}" kill="{r["kill"]}" />')


def test_admin_only_actions_refuse_a_user(env):
    _, _, bob, _ = env
    for q in ('<status action="query" type="scheduler" />',
              '<status action="query" type="configuration" />',
              '<control action="reload" />', '<control action="retry" />',
              '<statistics action="reset" type="global" />',
              '<instance action="delete" id="1" />', '<instance action="migrate" id="1" />'):
        assert code(bob, q) == "INSUFFICIENT_RIGHTS", q
    for q in ("<ping/>", '<statistics action="query" type="global" />',
              '<statistics action="query" type="queue" />',
              '<status action="query" type="workflows" />', '<instances action="list" />'):
        assert code(bob, q) is None, q


def test_workflow_rights_on_instances(env):
    daemon, admin, _, wid = env
    assert code(daemon.client("bob", "pw"), '<instance action="launch" name="wf" />') == \
        "INSUFFICIENT_RIGHTS"
    grant(admin, wid, exec="yes")
    bob = daemon.client("bob", "pw")  # rights are captured at login, like the original
    iid = int(bob.query('<instance action="launch" name="wf" />').get("workflow-instance-id"))
    wait_terminated(admin, iid)
    assert code(bob, f'<instance action="query" id="{iid}" />') == "INSUFFICIENT_RIGHTS"
    assert bob.query('<instances action="list" />').get("rows") == "0"
    grant(admin, wid, exec="yes", read="yes")
    bob = daemon.client("bob", "pw")
    assert bob.query(f'<instance action="query" id="{iid}" />')[0].get("status") == \
        "TERMINATED"
    assert bob.query('<instances action="list" />').get("rows") == "1"
    assert code(bob, f'<instance action="cancel" id="{iid}" />') == "UNKNOWN_INSTANCE"


def test_instance_error_texts(env):
    _, admin, _, _ = env
    cases = {
        '<instance action="query" id="999" />': ("UNKNOWN_INSTANCE",
                                                 "Unknown workflow instance"),
        '<instance action="wait" id="999" />': ("UNKNOWN_INSTANCE", "Unknown instance ID"),
        '<instance action="cancel" id="999" />': ("UNKNOWN_INSTANCE",
                                                  "Unknown workflow instance"),
        '<instance action="delete" id="999" />': ("UNKNOWN_INSTANCE", "Instance ID not found"),
        '<instance action="launch" name="wf" mode="bogus" />': (
            "INVALID_PARAMETER", "mode must be 'synchronous' or 'asynchronous'"),
        '<instance action="query" />': ("MISSING_PARAMETER", "Missing 'id' attribute"),
        '<instance action="nope" id="1" />': ("UNKNOWN_COMMAND", "Unknown command or action"),
        '<instance action="migrate" id="999" />': (
            None, "Workflow ID not found or already belongs to this node"),
    }
    for q, (c, message) in cases.items():
        r = admin.query_raw(q)
        assert (r.get("error-code"), r.get("error")) == (c, message), q


def test_status_statistics_control(env):
    _, admin, _, _ = env
    assert code(admin, '<status action="query" type="nope" />') == "UNKNOWN_TYPE"
    r = admin.query_raw('<statistics action="query" type="nope" />')
    assert r.get("error") == "Unknown statistics type" and r.get("error-code") == "UNKNOWN_TYPE"
    r = admin.query_raw('<statistics action="reset" type="queue" />')
    assert r.get("error") == "Unknown statistics type for this action"
    r = admin.query_raw('<control action="reload" module="bogus" />')
    assert (r.get("error-code"), r.get("error")) == ("INVALID_MODULE", "Invalid module : bogus")
    for module in ("all", "queuepool", "workflows", "scheduler", "retry_schedules", "users",
                   "tags", "notifications"):
        admin.query(f'<control action="reload" module="{module}" notify="no" />')
    conf = admin.query('<status action="query" type="configuration" />')[0]
    entries = {e.get("name"): e.get("value") for e in conf}
    assert entries["mysql.password"] == "****" and entries["cluster.node.name"] == "localhost"
    stats = admin.query('<statistics action="query" type="global" />')[0]
    current = stats.get("current_api_connections")
    admin.query('<statistics action="reset" type="global" />')
    stats = admin.query('<statistics action="query" type="global" />')[0]
    assert stats.get("current_api_connections") == current  # gauges survive a reset
    assert stats.get("workflow_queries") == "0"
    ping = admin.query('<ping action="whatever" />')
    assert ping.get("version") == "3.3" and ping.get("git-support") == "disabled"


def test_xpathfilter(env):
    _, admin, _, _ = env
    r = admin.query('<queuepool action="list" xpathfilter="queue/@name" />')
    assert r.text == "default"
    r = admin.query('<queuepool action="list" xpathfilter="count(queue)" />')
    assert r.text == "1"
    r = admin.query_raw('<queuepool action="list" xpathfilter="(((" />')
    assert r.get("status") == "KO" and r.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert admin.query("<ping/>").get("status") == "OK"  # the connection stays usable


def test_statistics_follow_running_tasks(env):
    _, admin, _, _ = env
    create_workflow(admin, "sleepy", one_task("/bin/sleep", "1"))
    before = admin.query('<statistics action="query" type="global" />')[0]
    iid = int(admin.query('<instance action="launch" name="sleepy" />')
              .get("workflow-instance-id"))
    during = admin.query('<statistics action="query" type="global" />')[0]
    queue = admin.query('<statistics action="query" type="queue" />')[0].find(
        "queue[@name='default']")
    assert during.get("workflow_instance_executing") == "1"
    assert queue.get("running_tasks") == "1" and queue.get("concurrency") == "1"
    wait_terminated(admin, iid)
    after = admin.query('<statistics action="query" type="global" />')[0]
    assert after.get("workflow_instance_executing") == "0"
    assert int(after.get("workflow_instance_launched")) == \
        int(before.get("workflow_instance_launched")) + 1
    assert int(after.get("workflow_queries")) == int(before.get("workflow_queries")) + 1
