"""End-to-end scenarios of workflow.md §9 on a real daemon with real task processes."""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import tempfile
import time
from xml.sax.saxutils import escape

import pytest
from evqtest import Daemon, create_workflow, wait_terminated

WF = "<workflow>{params}<subjobs>{jobs}</subjobs></workflow>"


@pytest.fixture(scope="module")
def env():
    root = tempfile.mkdtemp(prefix="evqs")
    d = Daemon(root, **{"datastore.dom.maxsize": "2K"})
    d.start()
    c = d.client()
    c.query('<queue action="create" name="q1" concurrency="2" scheduler="default" '
            'dynamic="no" />')
    c.query('<queue action="create" name="dq" concurrency="1" scheduler="default" '
            'dynamic="yes" />')
    yield d, c
    c.close()
    d.stop()
    d.kill_forker()
    shutil.rmtree(root, ignore_errors=True)


_n = iter(range(1, 10**6))


def run(env, jobs: str, params: str = "", parameters: dict[str, str] | None = None,
        **attrs: str):
    """Create a workflow, launch it, wait for the end; returns the instance document."""
    d, c = env
    name = f"wf{next(_n)}"
    create_workflow(c, name, WF.format(params=params, jobs=jobs))
    children = "".join(f'<parameter name="{k}" value="{v}" />'
                       for k, v in (parameters or {}).items())
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    r = c.query(f'<instance action="launch" name="{name}"{extra}>{children}</instance>')
    return wait_terminated(c, int(r.get("workflow-instance-id")))


def task(path: str, inner: str = "", **attrs: str) -> str:
    a = "".join(f' {k.replace("_", "-") if k in ("output_method", "parameters_mode", "merge_stderr") else k}="{v}"'  # noqa: E501
                for k, v in attrs.items())
    return f'<task path="{path}" queue="q1"{a}>{inner}</task>'


def job(*tasks: str, subjobs: str = "", **attrs: str) -> str:
    a = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    sub = f"<subjobs>{subjobs}</subjobs>" if subjobs else ""
    return f"<job{a}><tasks>{''.join(tasks)}</tasks>{sub}</job>"


def sh(script: str, **attrs: str) -> str:
    return task("/bin/sh", f"<input>-c</input><input>{escape(script)}</input>", **attrs)


def test_failure_blocks_subjobs(env):
    doc = run(env, job(task("/bin/false"), subjobs=job(task("/bin/true"), name="never")))
    t = doc.find("subjobs/job/tasks/task")
    assert (t.get("status"), t.get("retval")) == ("TERMINATED", "1")
    assert doc.find("subjobs/job").get("error_tasks") == "1" and doc.get("errors") == "1"
    never = doc.find("subjobs/job/subjobs/job")
    assert never.get("evqid") is None and never.get("status") is None


def test_exit_codes(env):
    doc = run(env, job(sh("exit 3"), sh("exit 130"), sh("exit 255"), sh("kill -9 $$"),
                       task("/nonexistent/bin")))
    retvals = [t.get("retval") for t in doc.iter("task")]
    assert retvals == ["3", "-126", "-1", "-1", "-1"]
    missing = list(doc.iter("task"))[-1]
    assert "Could not execute process: '/nonexistent/bin'" in missing.find("stderr").text


def test_output_channels(env):
    script = ("echo out line; echo err line >&2; printf '%%40\\nlog line\\n%%%%literal percent"
              "\\n%%75\\n' >&3")
    doc = run(env, job(sh(script)))
    t = doc.find(".//task")
    assert t.find("output").text == "out line\n"
    assert t.find("stderr").text == "err line\n"
    assert t.find("log").text == "log line\n%literal percent\n"
    assert t.get("progression") == "100"


def test_invalid_xml_output(env):
    doc = run(env, job(sh("echo not xml", output_method="XML"),
                       sh("echo not xml; exit 2", output_method="XML")))
    a, b = doc.iter("task")
    assert (a.get("status"), a.get("error"), a.get("retval")) == (
        "ABORTED", "Invalid XML returned", "0")
    assert a.find("output").get("method") == "text"
    assert (b.get("status"), b.get("retval")) == ("TERMINATED", "2")
    assert doc.get("errors") == "2"


def test_unknown_queue_and_bad_mode(env):
    doc = run(env, job('<task path="/bin/true" queue="nope"/>',
                       task("/bin/true", parameters_mode="FOO")))
    a, b = doc.iter("task")
    assert (a.get("status"), a.get("error")) == ("ABORTED", "Unknown queue name")
    assert a.get("execution_time") is None
    assert b.get("error") == "Task execution : Unkown parameters mode FOO"
    assert doc.get("errors") == "2"


def test_cmdline_env_stdin_wd(env):
    params = '<parameters><parameter name="p"/></parameters>'
    jobs = job(
        task("/bin/sh", '<input>-c</input><input>echo "$0|$1"</input><input>A</input>'
             '<input>B <value select="evqGetWorkflowParameter(\'p\')"/> end</input>'),
        task("/usr/bin/env", '<input name="X">1</input><input name="X">2</input>'
             "<input>anon</input>", parameters_mode="ENV"),
        task("/bin/cat", '<stdin>hello <value select="evqGetWorkflowParameter(\'p\')"/></stdin>'),
        task("/bin/cat", '<stdin><copy select="/workflow/parameters"/></stdin>'),
        task("/bin/pwd", wd="/tmp"),
    )
    doc = run(env, jobs, params, {"p": "PV"})
    cmd, envt, stdin_text, stdin_xml, pwd = doc.iter("task")
    assert cmd.find("output").text == "A|B PV end\n"
    env_lines = envt.find("output").text.splitlines()
    assert "X=2" in env_lines and "DEFAULT_PARAMETER_NAME=anon" in env_lines
    assert "EVQUEUE_ENV=true" in env_lines
    assert stdin_text.find("output").text == "hello PV"
    assert stdin_text.find("stdin").get("mode") == "text"
    assert stdin_xml.find("output").text == (
        '<stdin mode="xml"><parameters><parameter name="p">PV</parameter></parameters></stdin>')
    assert pwd.find("output").text == "/tmp\n"


def test_conditions_and_loops(env):
    emit = ('<task path="/bin/echo" queue="q1" name="items" output-method="XML">'
            "<input>&lt;l&gt;&lt;i&gt;a&lt;/i&gt;&lt;i&gt;b&lt;/i&gt;&lt;i&gt;10&lt;/i&gt;"
            "&lt;/l&gt;</input></task>")
    jobs = job(emit, subjobs=(
        job(task("/bin/true"), name="no", condition="1 = 2")
        + job(task("/bin/true"), name="yes", condition="1 = 1")
        + job(task("/bin/true"), name="empty", loop="evqGetOutput('items')/l/none")
        + job(task("/bin/echo", '<input><value select="."/></input>'), name="each",
              loop="evqGetOutput('items')/l/i", iteration_condition=". != 'b'")))
    doc = run(env, jobs)
    subs = doc.findall("subjobs/job/subjobs/job")
    assert [j.get("name") for j in subs] == ["no", "yes", "each", "each", "each"]
    no, yes = subs[0], subs[1]
    assert (no.get("status"), no.get("details"), no.get("condition")) == (
        "SKIPPED", "Condition evaluates to false", "1 = 2")
    assert yes.get("condition") is None and yes.get("details") == "Condition evaluates to true"
    each = subs[2:]
    assert [j.get("status") for j in each] == [None, "SKIPPED", None]
    assert each[1].get("condition") == ". != 'b'"
    outs = [j.find(".//output").text for j in each if j.get("status") is None]
    assert outs == ["a\n", "10\n"]
    assert doc.get("errors") == "0"


def test_non_boolean_condition_aborts_the_job(env):
    jobs = job(task("/bin/true"), name="bad", condition="'x'") + job(task("/bin/true"),
                                                                   name="after")
    doc = run(env, jobs)
    bad, after = doc.findall("subjobs/job")
    assert bad.get("status") == "ABORTED" and bad.get("error_tasks") == "1"
    assert bad.get("error").startswith("Error evaluating condition : XPath expression error in")
    assert after.get("evqid") is None  # never started
    assert doc.get("errors") == "1"


def test_retries(env):
    d, c = env
    c.query('<retry_schedule action="create" name="rs" content="{}" />'.format(
        base64.b64encode(b'<schedule><level retry_delay="1" retry_times="1"/>'
                         b'<level retry_delay="1" retry_times="2"/></schedule>').decode()))
    counter = os.path.join(d.root, "attempts")
    jobs = job(
        sh(f"echo x >> {counter}; test $(wc -l < {counter}) -ge 3", retry_delay="1",
           retry_times="3"),
        sh("exit 4", retry_delay="1", retry_times="2", retry_retval="5"),
        sh("exit 1", retry_schedule="rs"),
    )
    doc = run(env, jobs)
    ok, mismatch, sched = doc.iter("task")
    assert (ok.get("retval"), ok.get("retry_times"), len(ok.findall("output"))) == ("0", "1", 3)
    assert len(mismatch.findall("output")) == 1
    assert len(sched.findall("output")) == 4
    assert (sched.get("retry_schedule_level"), sched.get("retry_delay"),
            sched.get("retry_times")) == ("3", "0", "0")
    assert doc.get("errors") == "2"


def test_evqwait(env):
    waiter = ('<task path="/bin/true" queue="q1" name="w" condition="evqWait(evqGetCurrentJob()'
              "/tasks/task[@name='first']/@status = 'TERMINATED')\"/>")
    first = '<task path="/bin/sleep" queue="q1" name="first"><input>0.3</input></task>'
    doc = run(env, job(first, waiter))
    w = doc.find(".//task[@name='w']")
    assert w.get("status") == "TERMINATED" and w.get("retval") == "0"
    never = ('<task path="/bin/true" queue="q1" condition="evqWait(1 = 2)"/>')
    doc = run(env, job(never))
    t = doc.find(".//task")
    assert t.get("status") == "WAITING" and doc.get("errors") == "0"


def test_cancel_and_killtask(env):
    d, c = env
    name = f"wf{next(_n)}"
    create_workflow(c, name, WF.format(params="", jobs=job(
        task("/bin/sleep", "<input>30</input>"), task("/bin/sleep", "<input>0.5</input>"),
        '<task path="/bin/true" queue="q1"/>')))
    iid = int(c.query(f'<instance action="launch" name="{name}" />').get("workflow-instance-id"))
    for _ in range(100):
        doc = c.query(f'<instance action="query" id="{iid}" />')[0]
        tasks = list(doc.iter("task"))
        if tasks[0].get("status") == "EXECUTING" and tasks[2].get("status") == "QUEUED":
            break
        time.sleep(0.05)
    c.query(f'<instance action="cancel" id="{iid}" />')
    c.query(f'<instance action="killtask" id="{iid}" pid="{tasks[0].get("pid")}" />')
    doc = wait_terminated(c, iid)
    killed, short, queued = doc.iter("task")
    assert killed.get("retval") == "-1"
    assert "received SIGTERM" in killed.find("stderr").text
    assert short.get("retval") == "0"
    assert (queued.get("status"), queued.get("error")) == (
        "ABORTED", "Task execution : Aborted on user request")


def test_dynamic_queue(env):
    jobs = job(*(f'<task path="/bin/sleep" queue="dq" queue_host="{h}"><input>0.5</input></task>'
                 for h in ("a", "a", "b")),
               '<task path="/bin/sleep" queue="dq"><input>0.5</input></task>')
    d, c = env
    name = f"wf{next(_n)}"
    create_workflow(c, name, WF.format(params="", jobs=jobs))
    iid = int(c.query(f'<instance action="launch" name="{name}" />').get("workflow-instance-id"))
    time.sleep(0.2)
    queues = {q.get("name"): q for q in
              c.query('<statistics action="query" type="queue" />')[0]}
    assert queues["dq@a"].get("running_tasks") == "1" and queues["dq@a"].get("size") == "1"
    assert queues["dq@b"].get("running_tasks") == "1"
    assert queues["dq"].get("running_tasks") == "1"
    wait_terminated(c, iid)


def test_large_output_goes_to_the_datastore(env):
    d, c = env
    doc = run(env, job(sh("head -c 12000000 /dev/zero | tr '\\0' x")))
    out = doc.find(".//output")
    ds = out.get("datastore-id")
    assert ds and not out.text
    r = c.query(f'<datastore action="get" id="{ds}" />')
    data = gzip.decompress(base64.b64decode(r.text)) if r.get("gzip") == "yes" else r.text
    assert len(data) == 12000000


def test_custom_attributes_tags_and_debugresume(env):
    d, c = env
    wf = ('<workflow><custom-attributes><custom-attribute name="ca" '
          "select=\"evqGetJob('j')/tasks/task/output\"/></custom-attributes>"
          '<automatic-tags><automatic-tag name="yes_tag" condition="1 = 1"/>'
          '<automatic-tag name="no_tag" condition="1 = 2"/></automatic-tags><subjobs>'
          + job(task("/bin/echo", "<input>hello</input>"), name="j")
          + job(task("/bin/false")) + "</subjobs></workflow>")
    name = f"wf{next(_n)}"
    create_workflow(c, name, wf)
    iid = int(c.query(f'<instance action="launch" name="{name}" />').get("workflow-instance-id"))
    wait_terminated(c, iid)
    time.sleep(0.3)
    found = c.query('<instances action="list" customattribute_ca="hello&#10;" />')
    assert [w.get("id") for w in found] == [str(iid)]
    labels = [t.get("label") for t in found.iter("tag")]
    assert labels == ["yes_tag"]
    r = c.query(f'<instance action="debugresume" id="{iid}" />')
    new = int(r.get("workflow-instance-id"))
    doc = wait_terminated(c, new)
    false_task = doc.findall(".//task")[1]
    assert len(false_task.findall("output")) == 2 and doc.get("errors") == "1"


def test_script_tasks(env):
    params = '<parameters><parameter name="p"/></parameters>'
    script = ('<task type="SCRIPT" name="s" queue="q1" parameters-mode="ENV"><input name="E">ev'
              '</input><stdin>in</stdin><script>#!/bin/sh\necho "$E '
              '<value select="evqGetWorkflowParameter(\'p\')"/> $(cat)"</script></task>')
    noshebang = ('<task type="SCRIPT" name="n" queue="q1"><script>echo hi</script></task>')
    doc = run(env, job(script, noshebang), params, {"p": "PV"})
    s, n = doc.iter("task")
    assert s.find("output").text == "ev PV in\n"
    assert n.get("retval") == "-1" and "Exec format error" in n.find("stderr").text


def _launch_and_wait_for(env, jobs: str, evqid_status: tuple[str, str]) -> tuple[int, str]:
    """Launch, then wait until the task named ``evqid_status[0]`` has that status; returns
    (instance id, the task's evqid)."""
    d, c = env
    name = f"wf{next(_n)}"
    create_workflow(c, name, WF.format(params="", jobs=jobs))
    iid = int(c.query(f'<instance action="launch" name="{name}" />').get("workflow-instance-id"))
    task_name, status = evqid_status
    for _ in range(100):
        t = c.query(f'<instance action="query" id="{iid}" />').find(
            f".//task[@name='{task_name}']")
        if t is not None and t.get("status") == status:
            return iid, t.get("evqid")
        time.sleep(0.05)
    raise AssertionError(f"task {task_name} never {status}")


def test_skip_and_retry_a_failed_task(env):
    d, c = env
    counter = os.path.join(d.root, "flaky")
    jobs = job(
        sh("exit 1", name="bad"), sh("sleep 1", name="slow"),
        subjobs=job(task("/bin/echo", "<input>after</input>"), name="next"))
    iid, evqid = _launch_and_wait_for(env, jobs, ("bad", "TERMINATED"))
    c.query(f'<instance action="skiptask" id="{iid}" evqid="{evqid}" />')
    doc = wait_terminated(c, iid)
    assert doc.find(".//task[@name='bad']").get("status") == "SKIPPED"
    assert doc.find(".//job[@name='next']//output").text == "after\n"
    assert doc.get("errors") == "0"
    flaky = sh(f"test -e {counter} || {{ touch {counter}; exit 1; }}", name="flaky")
    jobs = job(flaky, sh("sleep 1", name="slow"),
               subjobs=job(task("/bin/echo", "<input>after</input>"), name="next"))
    iid, evqid = _launch_and_wait_for(env, jobs, ("flaky", "TERMINATED"))
    c.query(f'<instance action="retrytask" id="{iid}" evqid="{evqid}" />')
    doc = wait_terminated(c, iid)
    assert len(doc.find(".//task[@name='flaky']").findall("output")) == 2
    assert doc.find(".//job[@name='next']//output").text == "after\n"
    assert doc.get("errors") == "0"
    r = c.query_raw(f'<instance action="retrytask" id="{iid}" evqid="{evqid}" />')
    assert r.get("error-code") == "UNKNOWN_INSTANCE"  # terminated: use debugresume
