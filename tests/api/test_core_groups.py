"""ping, status, control, statistics and instance groups on a real daemon: answers, error
texts (errata 11, 12, 22) and the USER-profile rights matrix (protocol.md §3.20)."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from evqtest import create_workflow, one_task, wait_retrying, wait_terminated
from lxml import etree

from evqueue.client import EvqError

QUICK = one_task("/bin/true")
SLOW = one_task("/bin/sleep", "10", queue="two")


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


def grant(admin, wid: int, rights: set[str]) -> None:
    r = {k: "yes" if k in rights else "no" for k in ("read", "exec", "edit", "kill")}
    admin.query(f'<user action="grant" name="bob" workflow_id="{wid}" read="{r["read"]}" '
                f'exec="{r["exec"]}" edit="{r["edit"]}" kill="{r["kill"]}" />')


def running(client, iid: int) -> str:
    """Wait until the first task of instance ``iid`` executes; returns its pid."""
    for _ in range(200):
        task = client.query(f'<instance action="query" id="{iid}" />').find(".//task")
        if task.get("status") == "EXECUTING":
            return task.get("pid")
        time.sleep(0.02)
    raise AssertionError(f"task of instance {iid} never started")


def test_admin_only_actions_refuse_a_user(env):
    _, _, bob, _ = env
    for q in ('<status action="query" type="scheduler" />',
              '<status action="query" type="configuration" />',
              '<control action="reload" />', '<control action="reload" module="bogus" />',
              '<control action="retry" />', '<control action="syncnotifications" />',
              '<control action="shutdown" />', '<control action="nope" />',
              '<statistics action="reset" type="global" />',
              '<statistics action="reset" type="queue" />'):
        assert code(bob, q) == "INSUFFICIENT_RIGHTS", q
    for q in ("<ping/>", '<ping action="anything" />',
              '<statistics action="query" type="global" />',
              '<statistics action="query" type="queue" />',
              '<status action="query" type="workflows" />', '<instances action="list" />'):
        assert code(bob, q) is None, q
    assert code(bob, '<status action="nope" />') == "UNKNOWN_COMMAND"
    assert code(bob, '<statistics action="nope" type="global" />') == "UNKNOWN_COMMAND"
    assert bob.query("<ping/>").get("status") == "OK"  # the daemon is still up


#: instance actions and the rights they need: ``a+b`` all of them, ``a|b`` any of them
INSTANCE_ACTIONS = (
    ('<instance action="launch" name="wf" />', "exec"),
    ('<instance action="query" id="{T}" />', "read"),
    ('<instance action="query" id="{R}" />', "read"),
    ('<instance action="wait" id="{R}" timeout="1" />', "read"),
    ('<instance action="cancel" id="{R}" />', "kill"),
    ('<instance action="killtask" id="{R}" pid="999999" />', "kill"),
    ('<instance action="retrytask" id="{R}" evqid="999" />', "exec"),
    ('<instance action="skiptask" id="{R}" evqid="999" />', "kill"),
    ('<instance action="tag" id="{T}" tag_id="{tag}" />', "exec|edit"),
    ('<instance action="untag" id="{T}" tag_id="{tag}" />', "exec|edit"),
    ('<instance action="debugresume" id="{T}" />', "read+exec"),
    ('<instance action="delete" id="{T}" />', "admin"),
    ('<instance action="migrate" id="{T}" />', "admin"),
)


def allowed(need: str, rights: set[str]) -> bool:
    if "|" in need:
        return bool(rights & set(need.split("|")))
    return set(need.split("+")) <= rights


def test_instance_rights_matrix(env):
    """Each action without, then with, the workflow right it needs; rights are captured at
    login, like the original, so bob logs in again after every grant."""
    daemon, admin, _, wid = env
    admin.query('<queue action="create" name="two" concurrency="2" scheduler="fifo" '
                'dynamic="no" />')
    slow = create_workflow(admin, "slow", SLOW)
    t = int(admin.query('<instance action="launch" name="wf" />').get("workflow-instance-id"))
    wait_terminated(admin, t)
    r = int(admin.query('<instance action="launch" name="slow" />').get("workflow-instance-id"))
    pid = running(admin, r)
    tag = admin.query('<tag action="create" label="x" />').get("tag-id")
    for rights in (set(), {"read"}, {"exec"}, {"kill"}, {"edit"},
                   {"read", "exec", "kill", "edit"}):
        for w in (wid, slow):
            grant(admin, w, rights)
        with daemon.client("bob", "pw") as bob:
            for template, need in INSTANCE_ACTIONS:
                q = template.format(T=t, R=r, tag=tag)
                got = code(bob, q)
                if allowed(need, rights):
                    assert got != "INSUFFICIENT_RIGHTS", (rights, q)
                else:
                    assert got == "INSUFFICIENT_RIGHTS", (rights, q, got)
            readable = "read" in rights
            listed = bob.query('<instances action="list" />')
            assert (int(listed.get("rows")) > 0) == readable, rights
            # the unfiltered number of live instances: the slow one, once the quick ones bob
            # launched (launch, debugresume) have ended
            deadline = time.monotonic() + 10
            while (status := bob.query('<status action="query" type="workflows" />')) \
                    .get("count") != "1" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status.get("count") == "1"
            assert len(status) == (1 if readable else 0), rights
    admin.query(f'<instance action="killtask" id="{r}" pid="{pid}" />')
    doc = wait_terminated(admin, r)
    assert doc.find(".//task").get("retval") != "0"


def test_instance_error_texts(env):
    _, admin, _, _ = env
    t = int(admin.query('<instance action="launch" name="wf" />').get("workflow-instance-id"))
    wait_terminated(admin, t)
    tag = admin.query('<tag action="create" label="x" />').get("tag-id")
    cases = [
        ('<instance action="query" id="999" />', "UNKNOWN_INSTANCE",
         "Unknown workflow instance"),
        ('<instance action="wait" id="999" />', "UNKNOWN_INSTANCE", "Unknown instance ID"),
        (f'<instance action="wait" id="{t}" />', "UNKNOWN_INSTANCE", "Unknown instance ID"),
        ('<instance action="cancel" id="999" />', "UNKNOWN_INSTANCE",
         "Unknown workflow instance"),
        ('<instance action="killtask" id="999" pid="1" />', "UNKNOWN_INSTANCE",
         "Unknown workflow instance"),
        ('<instance action="delete" id="999" />', "UNKNOWN_INSTANCE", "Instance ID not found"),
        (f'<instance action="tag" id="{t}" tag_id="999" />', "UNKNOWN_TAG", "Unknown Tag"),
        (f'<instance action="tag" id="999" tag_id="{tag}" />', "UNKNOWN_INSTANCE",
         "Instance ID not found"),
        (f'<instance action="untag" id="{t}" tag_id="{tag}" />', "UNKNOWN_TAG_OR_INSTANCE",
         "Instance ID or tag ID not found"),
        ('<instance action="launch" name="wf" mode="bogus" />', "INVALID_PARAMETER",
         "mode must be 'synchronous' or 'asynchronous'"),
        ('<instance action="launch" name="nope" />', "UKNOWN_OBJECT",
         "Unknown Workflow name : nope"),
        ('<instance action="launch" />', "MISSING_PARAMETER", "Missing 'name' attribute"),
        ('<instance action="query" />', "MISSING_PARAMETER", "Missing 'id' attribute"),
        ('<instance action="query" id="x" />', "INVALID_INTEGER", None),
        ('<instance action="nope" id="1" />', "UNKNOWN_COMMAND", "Unknown command or action"),
        ('<instance id="1" />', "MISSING_PARAMETER", "Missing 'action' attribute"),
        ('<instance action="migrate" id="999" />', None,
         "Workflow ID not found or already belongs to this node"),
        ('<instance action="debugresume" id="999" />', None,
         "Unable to find instance to resume, or instance is not terminated"),
    ]
    for q, c, message in cases:
        r = admin.query_raw(q)
        assert r.get("status") == "KO" and r.get("error-code") == c, q
        assert message is None or r.get("error") == message, (q, r.get("error"))
    admin.query(f'<instance action="tag" id="{t}" tag_id="{tag}" />')
    r = admin.query_raw(f'<instance action="tag" id="{t}" tag_id="{tag}" />')
    assert (r.get("error-code"), r.get("error")) == ("INSTANCE_ALREADY_TAGGED",
                                                     "Instance is already tagged")
    admin.query(f'<instance action="untag" id="{t}" tag_id="{tag}" />')


def test_stored_instances_that_cannot_be_read(env):
    """Rows written by another node or damaged in the database (errata 22)."""
    daemon, admin, _, _ = env
    admin.query('<queue action="create" name="two" concurrency="2" scheduler="fifo" '
                'dynamic="no" />')
    create_workflow(admin, "slow", SLOW)
    iid = int(admin.query('<instance action="launch" name="slow" />')
              .get("workflow-instance-id"))
    pid = running(admin, iid)
    live = admin.query(f'<instance action="query" id="{iid}" />')[0]
    savepoint = etree.tostring(live, encoding="unicode")
    db = sqlite3.connect(os.path.join(daemon.root, "evqueue.db"), isolation_level=None)
    try:
        insert = ("INSERT INTO t_workflow_instance (workflow_instance_id, node_name, workflow_id, "
                  "workflow_instance_status, workflow_instance_savepoint) VALUES (?, ?, 1, ?, ?)")
        db.execute(insert, (5001, "elsewhere", "EXECUTING", savepoint))
        db.execute(insert, (5002, "localhost", "TERMINATED", None))
        db.execute(insert, (5003, "localhost", "TERMINATED", "not xml"))
    finally:
        db.close()
    r = admin.query_raw('<instance action="query" id="5001" />')
    assert (r.get("error-code"), r.get("error")) == (
        "WRONG_NODE",
        "Workflow instance is still running on another node, query the corresponding node")
    r = admin.query_raw('<instance action="query" id="5002" />')
    assert (r.get("error-code"), r.get("error")) == ("INVALID_XML", "Invalid workflow XML")
    r = admin.query_raw('<instance action="query" id="5003" />')
    assert (r.get("error-code"), r.get("error")) == (None, "Invalid XML document")
    # the dead node's instance is adopted: its executing task cannot be followed here
    admin.query('<instance action="migrate" id="5001" />')
    doc = wait_terminated(admin, 5001)
    task = doc.find(".//task")
    assert task.get("retval") == "-1"
    assert doc.get("errors") == "1"
    r = admin.query_raw('<instance action="migrate" id="5001" />')
    assert r.get("error") == "Workflow ID not found or already belongs to this node"
    admin.query(f'<instance action="killtask" id="{iid}" pid="{pid}" />')
    wait_terminated(admin, iid)


def test_status_statistics_control(env):
    _, admin, _, _ = env
    r = admin.query_raw('<status action="query" type="nope" />')
    assert (r.get("error-code"), r.get("error")) == ("UNKNOWN_TYPE", "Unknown type")
    assert code(admin, '<status action="nope" type="workflows" />') == "UNKNOWN_COMMAND"
    assert code(admin, '<status action="query" />') == "MISSING_PARAMETER"
    r = admin.query_raw('<statistics action="query" type="nope" />')
    assert r.get("error") == "Unknown statistics type" and r.get("error-code") == "UNKNOWN_TYPE"
    r = admin.query_raw('<statistics action="reset" type="queue" />')
    assert r.get("error") == "Unknown statistics type for this action"
    assert r.get("error-code") == "UNKNOWN_TYPE"
    assert code(admin, '<statistics action="nope" type="global" />') == "UNKNOWN_COMMAND"
    r = admin.query_raw('<control action="reload" module="bogus" />')
    assert (r.get("error-code"), r.get("error")) == ("INVALID_MODULE", "Invalid module : bogus")
    assert code(admin, '<control action="nope" />') == "UNKNOWN_COMMAND"
    for module in ("all", "queuepool", "workflows", "scheduler", "retry_schedules", "users",
                   "tags", "notifications"):
        admin.query(f'<control action="reload" module="{module}" notify="no" />')
    admin.query('<control action="reload" />')
    admin.query('<control action="syncnotifications" notify="no" />')
    conf = admin.query('<status action="query" type="configuration" />')[0]
    entries = {e.get("name"): e.get("value") for e in conf}
    assert entries["mysql.password"] == "****" and entries["cluster.node.name"] == "localhost"
    assert list(entries) == sorted(entries)
    assert admin.query('<status action="query" type="scheduler" />')[0].tag == "status"
    ping = admin.query('<ping action="whatever" />')
    assert ping.get("version") == "3.3" and ping.get("git-support") == "disabled"
    assert int(ping.get("uptime")) >= 0


def test_statistics_counters_and_reset(env):
    _, admin, _, _ = env
    admin.query('<statistics action="reset" type="global" />')
    admin.query_raw('<instance action="launch" name="nope" />')  # unknown: not counted
    admin.query_raw('<instance action="launch" name="wf" mode="bad" />')  # failed: counted
    iid = int(admin.query('<instance action="launch" name="wf" />')
              .get("workflow-instance-id"))
    wait_terminated(admin, iid)  # instance query x n
    admin.query_raw('<instance action="cancel" id="999" />')
    stats = admin.query('<statistics action="query" type="global" />')[0]
    assert stats.get("workflow_queries") == "2"
    assert int(stats.get("workflow_status_queries")) >= 1
    assert stats.get("workflow_cancel_queries") == "1"
    assert stats.get("workflow_instance_launched") == "1"
    assert stats.get("statistics_queries") == "1"
    assert stats.get("api_exceptions") == "0"  # KO answers are not connection failures
    current = stats.get("current_api_connections")
    assert current == "1"
    admin.query('<statistics action="reset" type="global" />')
    stats = admin.query('<statistics action="query" type="global" />')[0]
    assert stats.get("current_api_connections") == current  # gauges survive a reset
    assert stats.get("workflow_queries") == "0" and stats.get("api_queries") == "1"


def test_control_retry_runs_pending_retries_now(env):
    _, admin, _, _ = env
    create_workflow(admin, "retry", one_task("/bin/false", extra='retry_delay="100" '
                                             'retry_times="1"'))
    iid = int(admin.query('<instance action="launch" name="retry" />')
              .get("workflow-instance-id"))
    wait_retrying(admin, iid)
    admin.query('<control action="retry" />')
    doc = wait_terminated(admin, iid, timeout=10)
    assert len(doc.find(".//task").findall("output")) == 2


def test_status_workflows_limit(env):
    _, admin, _, _ = env
    admin.query('<queue action="create" name="two" concurrency="2" scheduler="fifo" '
                'dynamic="no" />')
    create_workflow(admin, "slow", SLOW)
    ids = [int(admin.query('<instance action="launch" name="slow" />')
               .get("workflow-instance-id")) for _ in range(2)]
    pids = [running(admin, i) for i in ids]
    r = admin.query('<status action="query" type="workflows" limit="1" />')
    assert r.get("count") == "2" and len(r) == 1 and not len(r[0])
    assert r[0].get("status") == "EXECUTING" and int(r[0].get("id")) in ids
    assert len(admin.query('<status action="query" type="workflows" />')) == 2
    queue = admin.query('<statistics action="query" type="queue" />')[0].find(
        "queue[@name='two']")
    assert queue.get("running_tasks") == "2" and queue.get("concurrency") == "2"
    stats = admin.query('<statistics action="query" type="global" />')[0]
    assert stats.get("workflow_instance_executing") == "2"
    for i, pid in zip(ids, pids, strict=True):
        admin.query(f'<instance action="killtask" id="{i}" pid="{pid}" />')
        wait_terminated(admin, i)
    stats = admin.query('<statistics action="query" type="global" />')[0]
    assert stats.get("workflow_instance_executing") == "0"


def test_xpathfilter(env):
    _, admin, _, _ = env
    r = admin.query('<queuepool action="list" xpathfilter="queue/@name" />')
    assert r.text == "default"
    r = admin.query('<queuepool action="list" xpathfilter="count(queue)" />')
    assert r.text == "1"
    r = admin.query_raw('<queuepool action="list" xpathfilter="(((" />')
    assert r.get("status") == "KO" and r.get("error-code") == "UNEXPECTED_EXCEPTION"
    assert admin.query("<ping/>").get("status") == "OK"  # the connection stays usable
