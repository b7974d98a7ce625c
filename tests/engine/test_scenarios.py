"""End-to-end scenarios of workflow.md §9 on one real daemon with real task processes.

Every workflow is created over the API (base64 content), launched, and judged on the document
``instance query`` returns. To keep the file fast, the scenarios that need no interaction are
all launched together when the module's daemon starts (``SCENARIOS``); each test then waits
for its own instance. Interactive ones (cancel, killtask, live queue edits) run on queues of
their own while the batch proceeds.
"""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

import pytest
from evqtest import Daemon, create_workflow, wait_terminated
from lxml import etree

from evqueue.client import Client

#: helper programs written to the daemon's tasks directory (used with relative paths)
SCRIPTS = {
    "args.sh": "for a in \"$@\"; do printf '<%s>' \"$a\"; done; echo\n",
    "envs.sh": "for v in \"$@\"; do eval \"printf '%s=%s\\n' $v \\\"\\${$v-unset}\\\"\"; done\n",
    # span.sh LOG NAME SECONDS: log start and end times (ns) around a sleep
    "span.sh": 'echo "$(date +%s.%N) + $2" >> "$1"; sleep "$3"\n'
               'echo "$(date +%s.%N) - $2" >> "$1"\n',
    "emit_xml.sh": "printf '%s' \"$1\"\n",
}
QUEUES = {  # name: (concurrency, scheduler, dynamic); "par" is every scenario's default
    "par": (500, "fifo", "no"), "dq": (1, "default", "yes"), "c2": (2, "fifo", "no"),
    "pf": (1, "fifo", "no"), "pp": (1, "prio", "no"), "sw": (1, "fifo", "no"),
    "live": (1, "fifo", "no"), "qc": (1, "fifo", "no"),
}
HYPHENATED = {"output_method", "parameters_mode", "merge_stderr", "use_agent",
              "iteration_condition"}
ITEMS = '<l><i n="5">a</i><i n="6">b</i><i n="7">10</i></l>'


# ------------------------------------------------------------------------- XML builders


def _attrs(attrs: dict[str, str]) -> str:
    return "".join(f" {k.replace('_', '-') if k in HYPHENATED else k}={quoteattr(v)}"
                   for k, v in attrs.items())


def task(path: str, *inputs: str, inner: str = "", queue: str = "par", **attrs: str) -> str:
    """A BINARY task; ``inputs`` are raw ``<input>`` contents (XML allowed)."""
    body = "".join(f"<input>{i}</input>" for i in inputs) + inner
    return f"<task path={quoteattr(path)} queue={quoteattr(queue)}{_attrs(attrs)}>{body}</task>"


def sh(script: str, queue: str = "par", **attrs: str) -> str:
    """A task running ``/bin/sh -c script``."""
    return task("/bin/sh", "-c", escape(script), queue=queue, **attrs)


def emit(name: str, xml: str = ITEMS, **attrs: str) -> str:
    """A task printing ``xml`` with output-method XML."""
    return task("emit_xml.sh", escape(xml), name=name, output_method="XML", **attrs)


def job(*tasks: str, subjobs: str = "", **attrs: str) -> str:
    sub = f"<subjobs>{subjobs}</subjobs>" if subjobs else ""
    return f"<job{_attrs(attrs)}><tasks>{''.join(tasks)}</tasks>{sub}</job>"


def workflow(*jobs: str, params: tuple[str, ...] = (), head: str = "") -> str:
    plist = "".join(f'<parameter name="{p}"/>' for p in params)
    ptext = f"<parameters>{plist}</parameters>" if params else ""
    return f"<workflow>{ptext}{head}<subjobs>{''.join(jobs)}</subjobs></workflow>"


# ------------------------------------------------------------------------- the batch


@dataclass
class Scenario:
    xml: str
    parameters: dict[str, str] = field(default_factory=dict)
    launch: dict[str, str] = field(default_factory=dict)


#: launched all at once when the module daemon starts; ``@ROOT@`` = the daemon's directory
SCENARIOS: dict[str, Scenario] = {}


def scenario(key: str, *jobs: str, params: tuple[str, ...] = (), head: str = "",
             parameters: dict[str, str] | None = None, **launch: str) -> None:
    SCENARIOS[key] = Scenario(workflow(*jobs, params=params, head=head), parameters or {},
                              launch)


class Env:
    """The module's daemon, a client on it, and helpers to launch and judge instances."""

    def __init__(self, daemon: Daemon, client: Client) -> None:
        self.d = daemon
        self.c = client
        self.root = daemon.root
        self.ids: dict[str, int] = {}
        self._n = 0

    def start_schedules(self) -> None:
        """Every-second schedules for §9.15: one failing with SUSPEND, one succeeding (and
        lasting longer than a second) with CONTINUE."""
        self.schedules: dict[str, str] = {}
        for name, body, onfailure in (("sched_fail", task("/bin/false"), "SUSPEND"),
                                      ("sched_ok", task("/bin/sleep", "1.2"), "CONTINUE")):
            wid = create_workflow(self.c, name, workflow(job(body)))
            self.schedules[name] = self.c.query(
                f'<workflow_schedule action="create" workflow_id="{wid}" node="localhost" '
                f'schedule=";;;;;" onfailure="{onfailure}" active="yes" />').get("schedule-id")
        self.schedules_since = time.monotonic()

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def launch(self, xml: str, parameters: dict[str, str] | None = None,
               **attrs: str) -> int:
        """Create a workflow from ``xml`` and launch it; returns the instance id."""
        self._n += 1
        name = f"wf{self._n}"
        create_workflow(self.c, name, xml.replace("@ROOT@", self.root))
        children = "".join(f"<parameter name={quoteattr(k)} value={quoteattr(v)} />"
                           for k, v in (parameters or {}).items())
        r = self.c.query(f'<instance action="launch" name="{name}"{_attrs(attrs)}>'
                         f"{children}</instance>")
        return int(r.get("workflow-instance-id"))

    def run(self, xml: str, parameters: dict[str, str] | None = None,
            **attrs: str) -> etree._Element:
        return self.wait(self.launch(xml, parameters, **attrs))

    def result(self, key: str) -> etree._Element:
        return self.wait(self.ids[key])

    def wait(self, iid: int, timeout: float = 30) -> etree._Element:
        """The terminated document, after checking what holds for every one of them."""
        doc = wait_terminated(self.c, iid, timeout)
        for node in doc.iter("workflow", "job"):
            for counter in ("running_tasks", "queued_tasks", "retrying_tasks"):
                assert node.get(counter) in (None, "0"), (counter, etree.tostring(node))
        for t in doc.iter("task"):
            assert t.get("tid") is None and t.get("pid") is None
            assert t.get("status") not in ("QUEUED", "EXECUTING")
        assert doc.get("errors") == str(sum(int(j.get("error_tasks", "0"))
                                            for j in doc.findall("subjobs/job")))
        return doc

    def query(self, iid: int) -> etree._Element:
        return self.c.query(f'<instance action="query" id="{iid}" />')[0]

    def until(self, iid: int, pred: Callable[[etree._Element], bool],
              timeout: float = 10) -> etree._Element:
        """Poll the instance until ``pred(doc)`` holds; returns that document."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.query(iid)
            if pred(doc):
                return doc
            assert time.monotonic() < deadline, etree.tostring(doc).decode()
            time.sleep(0.03)

    def queue_stats(self) -> dict[str, etree._Element]:
        return {q.get("name"): q
                for q in self.c.query('<statistics action="query" type="queue" />')[0]}

    def edit_queue(self, name: str, concurrency: int, scheduler: str = "fifo") -> None:
        qid = next(q.get("id") for q in self.c.query('<queuepool action="list" />')
                   if q.get("name") == name)
        self.c.query(f'<queue action="edit" id="{qid}" name="{name}" concurrency='
                     f'"{concurrency}" scheduler="{scheduler}" dynamic="no" />')


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = tempfile.mkdtemp(prefix="evqs")
    d = Daemon(root, **{"datastore.dom.maxsize": "64K"})
    for name, body in SCRIPTS.items():
        path = os.path.join(root, "tasks", name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
    os.environ["EVQ_TEST_WORDS"] = "one  two"  # inherited by the daemon
    try:
        d.start()
    finally:
        del os.environ["EVQ_TEST_WORDS"]
    c = d.client()
    for name, (concurrency, scheduler, dynamic) in QUEUES.items():
        c.query(f'<queue action="create" name="{name}" concurrency="{concurrency}" '
                f'scheduler="{scheduler}" dynamic="{dynamic}" />')
    for name, levels in (("rs", ((1, 1), (2, 2))), ("rs_short", ((1, 1),))):
        content = "<schedule>" + "".join(f'<level retry_delay="{delay}" retry_times="{n}"/>'
                                         for delay, n in levels) + "</schedule>"
        c.query(f'<retry_schedule action="create" name="{name}" '
                f'content="{base64.b64encode(content.encode()).decode()}" />')
    e = Env(d, c)
    for key, s in SCENARIOS.items():
        e.ids[key] = e.launch(s.xml, s.parameters, **s.launch)
    e.start_schedules()
    yield e
    c.close()
    d.stop()
    d.kill_forker()
    shutil.rmtree(root, ignore_errors=True)


def tasks_of(doc: etree._Element) -> dict[str, etree._Element]:
    return {t.get("name"): t for t in doc.iter("task") if t.get("name")}


def text(node: etree._Element | None) -> str:
    assert node is not None
    return node.text or ""


def out(t: etree._Element, index: int = -1) -> str:
    return text(t.findall("output")[index])


def stamp(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").timestamp()


# ------------------------------------------------------------------------- §9.1 sequencing

scenario(
    "sequencing",
    job(sh("sleep 0.4; touch @ROOT@/seq_marker", name="slow"),
        task("emit_items.sh", "a,b", name="emit_items", output_method="XML"),
        name="first",
        subjobs=job(sh("test -e @ROOT@/seq_marker && echo \"$1\"",
                       inner='<input>x</input><input><value select="."/></input>'),
                    name="second", loop="evqGetOutput('emit_items')/items/item")))


def test_1_sequencing(env: Env) -> None:
    doc = env.result("sequencing")
    first = doc.find("subjobs/job")
    assert [first.get("evqid")] + [t.get("evqid") for t in first.findall("tasks/task")] == [
        "2", "3", "4"]
    items = first.findall(".//output/items/item")
    assert [i.get("evqid") for i in items] == ["6", "8"]
    clones = first.findall("subjobs/job")
    assert [j.get("evqid") for j in clones] == ["5", "9"]
    assert [j.get("context-id") for j in clones] == ["6", "8"]
    assert [j.find("tasks/task").get("context-id") for j in clones] == ["6", "8"]
    assert [out(j.find("tasks/task")) for j in clones] == ["a\n", "b\n"]  # after the marker
    assert all(j.get("loop") is None for j in clones)
    assert doc.get("errors") == "0" and doc.get("status") == "TERMINATED"
    assert doc.get("running_tasks") == "0" and doc.get("queued_tasks") == "0"


# ------------------------------------------------------------------------- §9.2 failure

scenario("failure", job(task("/bin/false"), subjobs=job(task("/bin/true"), name="never")))


def test_2_failure_blocks_subjobs(env: Env) -> None:
    doc = env.result("failure")
    t = doc.find("subjobs/job/tasks/task")
    assert (t.get("status"), t.get("retval")) == ("TERMINATED", "1")
    assert doc.find("subjobs/job").get("error_tasks") == "1"
    assert doc.get("errors") == "1" and doc.get("error_tasks") == "1"
    never = doc.find("subjobs/job/subjobs/job")
    assert never.attrib == {"name": "never"}
    assert never.find("tasks/task").attrib == {"path": "/bin/true", "queue": "par"}


# ------------------------------------------------------------------------- §9.3 exit codes

scenario("exit_codes", job(sh("exit 3"), sh("exit 130"), sh("exit 255"), sh("kill -9 $$"),
                           sh("exit 127"), task("/nonexistent/bin")))


def test_3_exit_codes(env: Env) -> None:
    doc = env.result("exit_codes")
    tasks = list(doc.iter("task"))
    assert [t.get("retval") for t in tasks] == ["3", "-126", "-1", "-1", "127", "-1"]
    assert all(t.get("status") == "TERMINATED" for t in tasks)
    assert [t.find("output").get("retval") for t in tasks] == ["3", "-126", "-1", "-1", "127",
                                                              "-1"]
    assert text(tasks[-1].find("stderr")) == (
        "Could not execute process: '/nonexistent/bin', execv() got error 'No such file or "
        "directory'evq_monitor: Unable to execute command '/nonexistent/bin', execv() returned "
        "error\n")
    assert doc.get("errors") == "6"


# ------------------------------------------------------------------------- §9.4 outputs

scenario(
    "channels",
    job(sh("echo out line; echo err line >&2; "
           "printf '%%40\\nlog line\\n%%%%literal percent\\n%%75\\n' >&3", name="all"),
        sh("echo out; echo err >&2", name="merged", merge_stderr="yes"),
        sh("echo quiet", name="quiet"),
        sh("printf 'a\\001b\\033c\\td\\r\\n'", name="control"),
        sh("printf 'kept\\n\\\\close\\ndropped\\n' >&3", name="close")))


def test_4_output_channels(env: Env) -> None:
    t = tasks_of(env.result("channels"))
    assert out(t["all"]) == "out line\n"
    assert text(t["all"].find("stderr")) == "err line\n"
    assert text(t["all"].find("log")) == "log line\n%literal percent\n"
    assert t["all"].get("progression") == "100"
    # merge-stderr: the intended 2>&1 (workflow.md §6.3)
    assert out(t["merged"]) == "out\nerr\n" and not t["merged"].find("stderr").text
    # stderr and log are present (empty) for every collected task
    assert [c.tag for c in t["quiet"] if c.tag != "input"] == ["output", "stderr", "log"]
    assert not t["quiet"].find("log").text and not t["quiet"].find("stderr").text
    out_node = t["quiet"].find("output")
    assert set(out_node.attrib) == {"retval", "execution_time", "exit_time", "method"}
    assert out_node.get("execution_time") == t["quiet"].get("execution_time")
    assert out(t["control"]) == "a?b?c\td\r\n"  # control characters become '?'
    assert text(t["close"].find("log")) == "kept\n"  # "\\close" ends the log


def test_progress_while_running(env: Env) -> None:
    iid = env.launch(workflow(job(sh("echo %50 >&3; sleep 0.6", name="p"))))
    doc = env.until(iid, lambda d: d.find(".//task").get("progression") == "50")
    assert doc.find(".//task").get("status") == "EXECUTING"
    doc = env.wait(iid)
    assert doc.find(".//task").get("progression") == "100"
    assert not doc.find(".//task/log").text  # progress lines are not logged


# ------------------------------------------------------------------------- §9.5 invalid XML

scenario("invalid_xml", job(sh("echo not xml", output_method="XML", name="bad0"),
                            sh("echo not xml; exit 2", output_method="XML", name="bad2"),
                            emit("good", "<?xml version='1.0'?><!-- c --><r><x>1</x></r>"),
                            sh("echo text", output_method="TEXT", name="txt"),
                            sh("printf '<r/>'", retry_delay="1", retry_times="1",
                               output_method="XML", name="noretry"),
                            sh("echo '<!DOCTYPE r [<!ENTITY e \"x\">]><r>&e;</r>'",
                               output_method="XML", name="dtd")))


def test_5_invalid_xml(env: Env) -> None:
    doc = env.result("invalid_xml")
    t = tasks_of(doc)
    bad0, bad2 = t["bad0"], t["bad2"]
    assert (bad0.get("status"), bad0.get("error"), bad0.get("retval")) == (
        "ABORTED", "Invalid XML returned", "0")
    assert bad0.find("output").get("method") == "text" and out(bad0) == "not xml\n"
    assert (bad2.get("status"), bad2.get("retval"), bad2.get("error")) == ("TERMINATED", "2",
                                                                           None)
    assert bad2.find("output").get("method") == "text"
    good = t["good"].find("output")
    assert good.get("method") == "xml" and [c.tag for c in good] == ["r"]
    assert good.find("r/x").text == "1"
    assert t["txt"].find("output").get("method") == "text"
    assert t["noretry"].get("status") == "TERMINATED"
    assert len(t["noretry"].findall("output")) == 1
    assert t["dtd"].get("status") == "ABORTED"  # no entity expansion from task output
    assert doc.get("errors") == "3"


# ------------------------------------------------------------------------- §9.6 start errors

scenario(
    "start_errors",
    job(task("/bin/true", queue="nope", name="noqueue"),
        task("/bin/true", name="mode", parameters_mode="FOO"),
        task("/bin/true", name="method", output_method="HTML"),
        task("/bin/true", name="merge", merge_stderr="maybe"),
        task("/bin/true", name="agent", use_agent="maybe"),
        task("/bin/echo 'unbalanced", name="quote"),
        task("/bin/true", name="ok_flags", merge_stderr="1", use_agent="0")))


def test_6_unknown_queue_and_start_errors(env: Env) -> None:
    doc = env.result("start_errors")
    t = tasks_of(doc)
    assert (t["noqueue"].get("status"), t["noqueue"].get("error")) == ("ABORTED",
                                                                       "Unknown queue name")
    expected = {
        "mode": "Task execution : Unkown parameters mode FOO",
        "method": "Task execution : Unkown output method HTML",
        "merge": "Task execution : Attribute 'merge-stderr' has invalid boolean value",
        "agent": "Task execution : Attribute 'use-agent' has invalid boolean value",
        "quote": "Task execution : Error expanding task command line",
    }
    for name, error in expected.items():
        assert (t[name].get("status"), t[name].get("error")) == ("ABORTED", error), name
    for name in ("noqueue", *expected):
        assert t[name].get("execution_time") is None and len(t[name]) == 0, name
    assert t["ok_flags"].get("retval") == "0"
    assert doc.get("errors") == "6" and doc.find("subjobs/job").get("error_tasks") == "6"
    assert doc.get("running_tasks") == "0" and doc.get("queued_tasks") == "0"


# ------------------------------------------------------------------------- §9.7 invocation

scenario(
    "invocation",
    job(task("args.sh fixed1 'fixed two' $HOME", "A", "",
             inner='<input name="n">noname</input><input>B <value select='
                   '"evqGetWorkflowParameter(\'p\')"/> end</input>', name="cmdline"),
        task("envs.sh X Y DEFAULT_PARAMETER_NAME EVQUEUE_ENV EVQUEUE_IPC_QID p",
             inner='<input name="X">1</input><input name="X">2</input><input>anon1</input>'
                   '<input>anon2</input><input name="p"><value select='
                   '"evqGetWorkflowParameter(\'p\')"/></input>',
             parameters_mode="ENV", name="env"),
        task("/bin/cat", inner='<stdin>hello <value select="evqGetWorkflowParameter(\'p\')"/>'
                               "</stdin>", name="stdin_text"),
        task("/bin/cat", inner='<stdin><copy select="/workflow/parameters"/></stdin>',
             name="stdin_xml"),
        task("/bin/pwd", wd="/tmp", name="wd"),
        task("/bin/pwd", name="nowd"),
        task("/bin/true", wd="/nonexistent/dir", name="badwd"),
        task("args.sh", 'pre<copy select="/workflow/parameters"/>post', name="copy_text"),
        task("/bin/cat", name="nostdin"),
        task("args.sh", 'x<value select="/nothing"/>y', name="empty_value"),
        name="j"),
    params=("p",), parameters={"p": "PV"})


def test_7_cmdline_env_stdin_wd(env: Env) -> None:
    doc = env.result("invocation")
    t = tasks_of(doc)
    home = os.environ["HOME"]
    assert out(t["cmdline"]) == f"<fixed1><fixed two><{home}><A><><noname><B PV end>\n"
    assert t["cmdline"].get("path") == "args.sh fixed1 'fixed two' $HOME"  # kept unexpanded
    assert [i.get("mode") for i in t["cmdline"].iter("input")] == ["text"] * 4
    assert out(t["env"]).splitlines() == [
        "X=2", "Y=unset", "DEFAULT_PARAMETER_NAME=anon2", "EVQUEUE_ENV=true",
        "EVQUEUE_IPC_QID=0", "p=PV"]
    assert out(t["stdin_text"]) == "hello PV"
    assert t["stdin_text"].find("stdin").get("mode") == "text"
    assert out(t["stdin_xml"]) == (
        '<stdin mode="xml"><parameters><parameter name="p">PV</parameter></parameters></stdin>')
    assert out(t["wd"]) == "/tmp\n"
    assert out(t["nowd"]) == env.root + "\n"  # the daemon's working directory
    assert t["badwd"].get("retval") == "-1"
    assert text(t["badwd"].find("stderr")) == (
        "evq_monitor: Unable to change working directory to '/nonexistent/dir'\n")
    assert out(t["copy_text"]) == "<prePVpost>\n"
    assert t["copy_text"].find("input").get("mode") == "xml"
    assert out(t["nostdin"]) == ""
    assert out(t["empty_value"]) == "<xy>\n"  # an empty node-set leaves the <value> alone
    assert t["empty_value"].find("input/value").get("select") == "/nothing"
    assert doc.get("errors") == "1"


scenario(
    "path_words",
    job(task('args.sh "a  b" \'$HOME\' "$HOME" $EVQ_UNDEFINED_X x$EVQ_UNDEFINED_X ~ c\\ d',
             name="words"),
        task("args.sh $EVQ_TEST_WORDS", name="split"),
        task("args.sh '' \"\"", name="empties"),
        task("emit_items.sh", "z", name="relative"),
        task("./emit_items.sh", "y", name="dot")))


def test_path_word_expansion(env: Env) -> None:
    t = tasks_of(env.result("path_words"))
    home = os.environ["HOME"]
    assert out(t["words"]) == f"<a  b><$HOME><{home}><x><{home}><c d>\n"
    assert out(t["split"]) == "<one><two>\n"  # unquoted expansions are split into words
    assert out(t["empties"]) == "<><>\n"
    assert out(t["relative"]) == "<items><item>z</item></items>\n"  # tasks directory prefix
    assert out(t["dot"]) == "<items><item>y</item></items>\n"


# ------------------------------------------------------------------------- §9.8 conditions

scenario(
    "conditions",
    job(emit("emit"), name="first", subjobs=(
        job(task("/bin/true"), name="no", condition="1 = 2")
        + job(task("/bin/echo", '<value select="."/>'), name="each",
              loop="evqGetOutput('emit')/l/i", iteration_condition=". != 'b'")
        + job(task("/bin/true"), name="yes", condition="1 = 1")
        + job(task("/bin/true"), name="empty", loop="evqGetOutput('emit')/l/none")
        + job(task("/bin/echo", '<value select="."/>', name="tl",
                   loop="evqGetOutput('emit')/l/i/@n", iteration_condition=". != 6"),
              task("/bin/true", name="tno", condition="false()"),
              task("/bin/true", name="tyes", condition="evqGetOutput('emit')/l/i[2] = 'b'"),
              task("args.sh", "first",
                   inner='<input condition="1 = 2">skipped</input><input loop='
                         '"evqGetOutput(\'emit\')/l/i"><value select="."/></input>'
                         "<input>last</input>", name="inputs"),
              name="tasks")
        + job(task("/bin/true"), name="allskipped", subjobs=job(
            task("/bin/echo", "ran", name="afterskip"), name="afterskip"))
        .replace("<task ", '<task condition="1 = 2" ', 1))))


def test_8_conditions_and_loops(env: Env) -> None:
    doc = env.result("conditions")
    first = doc.find("subjobs/job")
    items = first.findall(".//output/l/i")
    subs = first.findall("subjobs/job")
    assert [j.get("name") for j in subs] == ["no", "yes", "tasks", "allskipped", "each", "each",
                                             "each"]
    no, yes, tasks, allskipped = subs[:4]
    assert (no.get("status"), no.get("details"), no.get("condition")) == (
        "SKIPPED", "Condition evaluates to false", "1 = 2")
    assert no.find("tasks/task").get("status") is None
    assert (yes.get("status"), yes.get("condition"), yes.get("details")) == (
        None, None, "Condition evaluates to true")
    each = subs[4:]
    assert [j.get("context-id") for j in each] == [i.get("evqid") for i in items]
    assert [j.get("status") for j in each] == [None, "SKIPPED", None]
    assert each[1].get("condition") == ". != 'b'"
    assert each[0].get("condition") is None and each[0].get("loop") is None
    assert each[0].get("iteration-condition") is None
    assert [out(j.find("tasks/task")) for j in (each[0], each[2])] == ["a\n", "10\n"]
    # task loop over attributes, with an iteration condition
    t = tasks.findall("tasks/task")
    assert [x.get("name") for x in t] == ["tno", "tyes", "inputs", "tl", "tl", "tl"]
    tl = t[3:]
    assert [x.get("context-id") for x in tl] == [f"{i.get('evqid')}/@n" for i in items]
    assert [x.get("status") for x in tl] == ["TERMINATED", "SKIPPED", "TERMINATED"]
    assert [out(tl[0]), out(tl[2])] == ["5\n", "7\n"]
    assert len({x.get("evqid") for x in tl}) == 3
    assert t[0].get("status") == "SKIPPED" and t[0].get("condition") == "false()"
    assert t[1].get("status") == "TERMINATED" and t[1].get("condition") is None
    inputs = t[2]
    assert out(inputs) == "<first><last><a><b><10>\n"
    skipped = inputs.findall("input")[1]
    assert (skipped.get("status"), skipped.get("details"), skipped.get("condition")) == (
        "SKIPPED", "Condition evaluates to false", "1 = 2")
    # a job whose tasks are all skipped starts its subjobs at once
    assert allskipped.find("tasks/task").get("status") == "SKIPPED"
    assert out(allskipped.find(".//task[@name='afterskip']")) == "ran\n"
    assert not first.findall(".//job[@name='empty']")  # an empty loop leaves no trace
    assert doc.get("errors") == "0"


# ------------------------------------------------------------------------- §9.9 eval errors

_ERR = "XPath expression error in '{}'. XPath returned error : {}"
_NOT_A_NODE = "Evaluation result is not a node"
scenario(
    "nonbool",
    job(task("/bin/true"), name="bad", condition="'x'"),
    job(task("/bin/true"), name="after"))
scenario(
    "task_errors",
    job(sh("sleep 0.2", name="before"),
        task("/bin/true", name="badcond", condition="count(//task)"),
        task("/bin/true", name="untouched"), name="j1"),
    job(task("/bin/true", name="badloop", loop="1 + 1"), name="j2"),
    job(task("/bin/true", '<value select="5-3"/>', name="badvalue"),
        task("/bin/true", name="untouched2"), name="j3"),
    job(task("/bin/true", '<copy select="\'lit\'"/>', name="badcopy"), name="j4"),
    job(task("/bin/true", name="badhost", host="{evqGetWorkflowParameter('h')}"), name="j5"),
    job(task("/bin/true", name="badqh", queue_host="{'x'}"), name="j6"),
    job(task("/bin/true", name="baduser", user="{1 + 1}", host="h"), name="j7"),
    job(task("/bin/true", name="waitinput",
             inner='<input condition="evqWait(1 = 2)">x</input>'), name="j8"),
    job(task("/bin/true", name="badjobloop"), name="j9", loop="count(//job)"),
    job(task("/bin/true", name="ok"), name="j10"),
    params=("h",), parameters={"h": "hostfromparam"})


def test_9_non_boolean_condition(env: Env) -> None:
    doc = env.result("nonbool")
    bad, after = doc.findall("subjobs/job")
    assert bad.get("status") == "ABORTED" and bad.get("error_tasks") == "1"
    assert bad.get("error") == "Error evaluating condition : " + _ERR.format(
        "'x'", "Expected boolean result (DOMXPath)")
    assert bad.get("condition") == "'x'"
    assert bad.find("tasks/task").get("status") is None
    assert after.get("evqid") is None and after.find("tasks/task").get("status") is None
    assert doc.get("errors") == "1"


def test_evaluation_errors(env: Env) -> None:
    doc = env.result("task_errors")
    # only the first job ran anything: an evaluation error stops later sibling jobs (Q16)
    jobs = doc.findall("subjobs/job")
    assert [j.get("name") for j in jobs][:2] == ["j1", "j2"]
    j1 = jobs[0]
    assert (j1.get("status"), j1.get("error_tasks"), j1.get("error")) == ("ABORTED", "1", None)
    t = tasks_of(doc)
    assert t["before"].get("status") == "TERMINATED"  # already enqueued: it ran
    assert t["badcond"].get("status") == "ABORTED"
    assert t["badcond"].get("error") == "Error evaluating condition : " + _ERR.format(
        "count(//task)", "Expected boolean result (DOMXPath)")
    assert "status" not in t["untouched"].attrib and "evqid" not in t["untouched"].attrib
    for j in jobs[1:]:
        assert j.get("evqid") is None, j.get("name")
    assert doc.get("errors") == "1" and doc.get("error_tasks") == "1"


@pytest.mark.parametrize("site", [
    ("badloop", "task", "Error evaluating loop : " + _NOT_A_NODE),
    ("badvalue", "input", "Error computing input value : " + _ERR.format(
        "5-3", "Invalid int or float at character 2 (XPath Parser)")),
    ("badcopy", "input", "Error computing input values from copy node : " + _NOT_A_NODE),
    ("badhost", "task", "Error computing dynamic host : " + _NOT_A_NODE),
    ("badqh", "task", "Error computing dynamic queue host : " + _NOT_A_NODE),
    ("baduser", "task", "Error computing dynamic user : " + _NOT_A_NODE),
    ("waitinput", "input", "Error evaluating condition : " + _ERR.format(
        "evqWait(1 = 2)", "evqWait() : Waiting for condition to become true in function "
        "evqWait() at character 1 (XPath Eval)")),
    ("badjobloop", "job", "Error evaluating loop : " + _NOT_A_NODE),
], ids=lambda s: s[0])
def test_evaluation_error_sites(env: Env, site: tuple[str, str, str]) -> None:
    """One job per site, each launched alone: the offending node gets the site's prefix."""
    name, where, error = site
    xml = SCENARIOS["task_errors"].xml
    tree = etree.fromstring(xml)
    subjobs = tree.find("subjobs")
    keep = next(j for j in subjobs if j.find(f"tasks/task[@name='{name}']") is not None)
    for j in list(subjobs):
        if j is not keep:
            subjobs.remove(j)
    doc = env.run(etree.tostring(tree, encoding="unicode"), {"h": "hostfromparam"})
    j = doc.find("subjobs/job")
    t = j.find("tasks/task")
    node = {"task": t, "input": t.find("input") if t is not None else None, "job": j}[where]
    assert node is not None
    assert (node.get("status"), node.get("error")) == ("ABORTED", error)
    if where == "input":
        assert t.get("status") is None  # the task keeps no status
    assert j.get("status") == "ABORTED" and j.get("error_tasks") == "1"
    assert (j.get("error") is not None) == (where == "job")
    assert doc.get("errors") == "1"


scenario(
    "loop_abort",
    job(emit("emit"), name="top", subjobs=(
        job(task("/bin/true"), name="each", loop="evqGetOutput('emit')/l/i",
            iteration_condition="'x'")
        + job(task("/bin/true"), name="later"))))
scenario(
    "task_loop_abort",
    job(emit("emit"), name="top", subjobs=job(
        task("/bin/echo", "<value select=\"substring('x', string-length(.))\"/>", name="tl",
             loop="evqGetOutput('emit')/l/i"), name="tasks")))


def test_loop_clone_errors(env: Env) -> None:
    """Clones are all created before the first is processed: those an error leaves behind
    stay in the document unprocessed."""
    doc = env.result("loop_abort")
    each = doc.findall(".//job[@name='each']")
    assert len(each) == 3
    assert (each[0].get("status"), each[0].get("error_tasks")) == ("ABORTED", "1")
    assert each[0].get("error").startswith("Error evaluating condition : ")
    for clone in each[1:]:
        assert [clone.get(a) for a in ("evqid", "status", "context-id")] == [None] * 3
        assert clone.get("condition") == "'x'"
    assert doc.find(".//job[@name='later']").get("evqid") is None  # never started
    assert doc.get("errors") == "1"
    doc = env.result("task_loop_abort")
    tl = doc.findall(".//task[@name='tl']")
    assert [t.get("status") for t in tl] == ["TERMINATED", "TERMINATED", None]
    assert [out(t) for t in tl[:2]] == ["\n", "\n"]  # queued before the error: they ran
    bad = tl[2].find("input")
    assert (bad.get("status"), bad.get("error")) == ("ABORTED", "Error computing input value : "
                                                     + _ERR.format(
        "substring('x', string-length(.))", "Unexpected exception (substring)"))
    assert doc.find(".//job[@name='tasks']").get("status") == "ABORTED"
    assert doc.get("errors") == "1"


scenario(
    "templates",
    job(task("/bin/true", name="t", queue_host="x{/workflow/parameters/parameter[@name='h']}y",
             user="{/workflow/parameters/parameter[@name='zz']}"),
        name="j"),
    params=("h",), parameters={"h": "hostfromparam"})


def test_templates(env: Env) -> None:
    t = env.result("templates").find(".//task")
    assert t.get("queue_host") == "xhostfromparamy"
    assert t.get("user") == "{/workflow/parameters/parameter[@name='zz']}"  # empty: unchanged
    assert t.get("retval") == "0"


# ------------------------------------------------------------------------- §9.10 retries

# ------------------------------------------------------------------------- §9.11 evqWait

_DONE = "evqWait(evqGetCurrentJob()/tasks/task[@name='{}']/@status = 'TERMINATED')"
scenario(
    "evqwait",
    job(sh("sleep 0.3; touch @ROOT@/wait_marker", name="qb"),
        sh("test -e @ROOT@/wait_marker", name="w", condition=_DONE.format("qb")),
        name="j", subjobs=job(task("/bin/true", name="sub"), name="sub")),
    job(task("/bin/true", name="forever", condition="evqWait(1 = 2)"), name="stuck",
        subjobs=job(task("/bin/true", name="neversub"))),
    job(task("/bin/echo", "late", name="late"), name="jw",
        condition="evqWait(count(//task[@name='qb'][@status='TERMINATED']) = 1)"))


def test_11_evqwait(env: Env) -> None:
    doc = env.result("evqwait")
    t = tasks_of(doc)
    w = t["w"]
    assert (w.get("status"), w.get("retval")) == ("TERMINATED", "0")  # ran after qb ended
    assert w.get("condition") is None and w.get("details") == "Condition evaluates to true"
    assert t["sub"].get("retval") == "0"  # the job's subjobs ran once w succeeded
    assert out(t["late"]) == "late\n"  # a waiting job too
    forever = t["forever"]
    assert (forever.get("status"), forever.get("details"), forever.get("condition")) == (
        "WAITING", "Waiting for condition to become true", "evqWait(1 = 2)")
    stuck = doc.find("subjobs/job[@name='stuck']")
    assert stuck.get("waiting_conditions") == "1"
    assert stuck.find(".//task[@name='neversub']").get("status") is None
    assert doc.get("waiting_conditions") == "1" and doc.get("errors") == "0"


def test_evqwait_alone_ends_the_instance(env: Env) -> None:
    doc = env.run(workflow(job(task("/bin/true", condition="evqWait(1 = 2)"))))
    assert doc.find(".//task").get("status") == "WAITING"
    assert (doc.get("errors"), doc.get("waiting_conditions")) == ("0", "1")


def test_waiting_condition_error_aborts_the_job(env: Env) -> None:
    cond = _DONE.format("a") + " and 'x'"  # waits, then fails once 'a' is done
    doc = env.run(workflow(job(sh("sleep 0.2", name="a"),
                               task("/bin/true", name="w", condition=cond), name="j",
                               subjobs=job(task("/bin/true", name="never")))))
    t = tasks_of(doc)
    assert t["w"].get("status") == "ABORTED"
    assert t["w"].get("error").startswith("Error evaluating condition : ")
    assert t["never"].get("status") is None
    j = doc.find("subjobs/job")
    assert (j.get("status"), j.get("error_tasks"), j.get("waiting_conditions")) == (
        "ABORTED", "1", "0")
    assert doc.get("errors") == "1"


def test_nothing_to_run_ends_at_once(env: Env) -> None:
    iid = env.launch(workflow(job(task("/bin/true"), condition="false()"),
                              job(task("/bin/true", condition="1 = 2"))), mode="synchronous")
    doc = env.query(iid)
    assert doc.get("status") == "TERMINATED"  # already when the launch answered
    assert doc.get("errors") == "0" and doc.get("running_tasks") is None
    assert [j.get("status") for j in doc.findall("subjobs/job")] == ["SKIPPED", None]


scenario(
    "context",
    job(emit("emit"), name="top", subjobs=job(
        task("/bin/echo", '<value select="."/>', name="each"), name="each",
        loop="evqGetOutput('emit')/l/i", subjobs=job(
            task("/bin/echo", '<value select="evqGetContext()"/>',
                 '<value select="name(evqGetContext())"/>',
                 '<value select="evqGetParentJob()/@name"/>',
                 '<value select="evqGetParentJob(1)/@name"/>',
                 '<value select="evqGetParentJob(\'top\')/@name"/>',
                 '<value select="evqGetParentJob()/evqGetContext()"/>',
                 '<value select="evqGetCurrentJob()/evqGetContext()/@name"/>',
                 '<value select="evqGetOutput(\'each\')"/>', name="ctx"),
            name="inner"))))


def test_context_functions_in_loop_clones(env: Env) -> None:
    doc = env.result("context")
    ctx = [t for t in doc.iter("task") if t.get("name") == "ctx"]
    assert [out(t) for t in ctx] == [f"{v} i each top top {v} each {v}\n\n"
                                     for v in ("a", "b", "10")]
    assert doc.get("errors") == "0"


# ------------------------------------------------------------------------- §9.12 cancel/kill


def test_12_cancel_and_killtask(env: Env) -> None:
    iid = env.launch(workflow(
        job(task("/bin/sleep", "30", name="killed", retry_delay="5", retry_times="1"),
            task("/bin/sleep", "1.5", queue="qc", name="finishes"),
            sh("exit 1", name="retrying", retry_delay="30", retry_times="2"),
            task("/bin/true", queue="qc", name="queued"),
            sh("sleep 1.5; exit 1", name="fails_late", retry_delay="1", retry_times="3"),
            name="j1"),
        job(sh("sleep 1", name="ok"), name="j2",
            subjobs=job(task("/bin/true", name="aftercancel"), name="j3"))))

    def ready(d: etree._Element) -> bool:
        t = tasks_of(d)
        return (t["killed"].get("status") == t["finishes"].get("status") == "EXECUTING"
                and t["retrying"].get("retry_at") is not None
                and t["queued"].get("status") == "QUEUED")

    doc = env.until(iid, ready)
    pid = tasks_of(doc)["killed"].get("pid")
    env.c.query(f'<instance action="killtask" id="{iid}" pid="{pid}" />')
    env.until(iid, lambda d: tasks_of(d)["killed"].get("retry_at") is not None)
    env.c.query(f'<instance action="killtask" id="{iid}" pid="999999" />')  # unknown: OK
    env.c.query(f'<instance action="cancel" id="{iid}" />')
    doc = env.wait(iid)
    t = tasks_of(doc)
    killed = t["killed"]
    assert text(killed.find("stderr")) == "evq_monitor : received SIGTERM, killing task...\n"
    assert killed.find("output").get("retval") == "-1"
    for name in ("killed", "retrying"):  # pending retries fire and are aborted
        assert (t[name].get("status"), t[name].get("error")) == (
            "ABORTED", "Aborted on user request"), name
        assert t[name].get("retry_at") is not None, name
        assert len(t[name].findall("output")) == 1
    assert (t["queued"].get("status"), t["queued"].get("error")) == (
        "ABORTED", "Task execution : Aborted on user request")
    assert t["finishes"].get("retval") == "0"  # running tasks are not killed
    late = t["fails_late"]
    assert (late.get("status"), late.get("retval"), late.get("error")) == (
        "TERMINATED", "1", "Won't retry because workflow is cancelling")
    assert late.get("retry_at") is None and len(late.findall("output")) == 1
    after = t["aftercancel"]
    assert (after.get("status"), after.get("error")) == ("ABORTED", "Aborted on user request")
    assert doc.get("errors") == "5"
    assert doc.get("retrying_tasks") == "0" and doc.get("running_tasks") == "0"
    r = env.c.query_raw(f'<instance action="cancel" id="{iid}" />')
    assert r.get("error-code") == "UNKNOWN_INSTANCE"


def test_killtask_is_retried(env: Env) -> None:
    iid = env.launch(workflow(job(sh("test -e @ROOT@/killed_once || { touch "
                                     "@ROOT@/killed_once; sleep 30; }", name="k",
                                     retry_delay="1", retry_times="1"))))
    doc = env.until(iid, lambda d: d.find(".//task").get("status") == "EXECUTING")
    env.c.query(f'<instance action="killtask" id="{iid}" '
                f'pid="{doc.find(".//task").get("pid")}" />')
    doc = env.wait(iid)
    t = doc.find(".//task")
    assert [o.get("retval") for o in t.findall("output")] == ["-1", "0"]
    assert "received SIGTERM" in text(t.find("stderr"))
    assert doc.get("errors") == "0"


# ------------------------------------------------------------------------- §9.13 restart


def test_13_restart(make_daemon) -> None:
    d = make_daemon()
    c = d.client()
    c.query('<queue action="create" name="q3" concurrency="3" scheduler="fifo" dynamic="no" />')
    xml = workflow(job(
        task("/bin/sleep", "1.5", queue="q3", name="r1"),
        sh("sleep 1.5", queue="q3", name="r2"),
        sh("sleep 1.5; exit 3", queue="q3", name="r3"),
        task("/bin/true", queue="q3", name="u1"),
        sh("exit 1", queue="q3", name="u2", retry_delay="1", retry_times="2"),
        task("/bin/true", queue="q3", name="w", condition=_DONE.format("u1")),
        name="j", subjobs=job(task("/bin/true", queue="q3", name="sub"), name="sub")))
    create_workflow(c, "restart", xml)
    iid = int(c.query('<instance action="launch" name="restart" />').get(
        "workflow-instance-id"))
    launched = time.monotonic()
    time.sleep(0.3)
    doc = c.query(f'<instance action="query" id="{iid}" />')[0]
    statuses = {n: x.get("status") for n, x in tasks_of(doc).items() if n != "sub"}
    assert statuses == {"r1": "EXECUTING", "r2": "EXECUTING", "r3": "EXECUTING",
                        "u1": "QUEUED", "u2": "QUEUED", "w": "WAITING"}
    c.close()
    d.stop()
    assert time.monotonic() - launched < 1.4  # stopped before the tasks ended
    time.sleep(max(0.0, launched + 1.8 - time.monotonic()))  # they end with no daemon
    restart = time.time()
    d.start()
    c = d.client()
    doc = wait_terminated(c, iid)
    c.close()
    t = tasks_of(doc)
    for name in ("r1", "r2", "r3"):
        assert len(t[name].findall("output")) == 1, name
        assert stamp(t[name].find("output").get("exit_time")) >= int(restart), name
    assert t["r3"].get("retval") == "3"
    assert t["r3"].get("retry_at") is None and t["r3"].get("retry_times") is None
    assert t["u1"].get("retval") == "0" and t["w"].get("retval") == "0"
    assert stamp(t["w"].get("execution_time")) >= stamp(t["u1"].find("output").get(
        "exit_time"))
    assert len(t["u2"].findall("output")) == 3 and t["u2"].get("retry_times") == "0"
    assert doc.get("errors") == "2"
    assert t["sub"].get("status") is None and doc.find(".//job[@name='sub']").get(
        "evqid") is None


# ------------------------------------------------------------------------- §9.14 dynamic queue


def test_14_dynamic_queue(env: Env) -> None:
    iid = env.launch(workflow(job(*(
        task("span.sh", "@ROOT@/dyn.log", name, "0.6", queue="dq", queue_host=host, name=name)
        for name, host in (("a1", "a"), ("a2", "a"), ("b", "b"), ("none", ""))))))

    def state(d: etree._Element) -> dict[str, str | None]:
        return {n: x.get("status") for n, x in tasks_of(d).items()}

    doc = env.until(iid, lambda d: list(state(d).values()).count("EXECUTING") == 3)
    assert state(doc)["a2"] == "QUEUED"
    assert (doc.get("running_tasks"), doc.get("queued_tasks")) == ("4", "1")
    queues = env.queue_stats()
    assert queues["dq@a"].get("running_tasks") == "1" and queues["dq@a"].get("size") == "1"
    assert queues["dq@b"].get("running_tasks") == "1"
    assert queues["dq"].get("running_tasks") == "1"
    listed = {q.get("name"): q for q in env.c.query('<queuepool action="list" />')}
    assert listed["dq@a"].get("dynamic") == "no" and listed["dq@a"].get("concurrency") == "1"
    assert listed["dq@a"].get("id") == listed["dq"].get("id")
    doc = env.wait(iid)
    assert doc.get("errors") == "0"
    starts = _spans(env.path("dyn.log"))
    assert starts["a2"][0] >= starts["a1"][1]  # the second 'a' waited for the first
    assert "dq@a" not in env.queue_stats()  # idle sub-queues are dropped


# ------------------------------------------------------------------------- §9.16 attributes

scenario(
    "custom",
    job(task("/bin/echo", "hello", name="t"), name="j"),
    job(task("/bin/false", name="f"), name="k"),
    params=("p",), parameters={"p": "PV1"},
    head='<custom-attributes>'
         "<custom-attribute name=\"ca1\" select=\"evqGetJob('j')/tasks/task/output\"/>"
         '<custom-attribute name="ca2" select="parameters/parameter[@name=\'p\']"/>'
         '<custom-attribute name="ca3" select="//task/@retval"/>'
         "</custom-attributes><automatic-tags>"
         '<automatic-tag name="auto_yes" condition="count(//task[@retval != 0]) = 1"/>'
         '<automatic-tag name="auto_no" condition="1 = 2"/></automatic-tags>')


def test_16_custom_attributes_and_tags(env: Env) -> None:
    iid = env.ids["custom"]
    env.result("custom")
    deadline = time.monotonic() + 5
    while True:  # the attributes are written right after the end
        found = env.c.query('<instances action="list" customattribute_ca1="hello&#10;" />')
        if len(found) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [w.get("id") for w in found] == [str(iid)]
    assert [t.get("label") for t in found.iter("tag")] == ["auto_yes"]
    for query in ('customattribute_ca2="PV1"', 'customattribute_ca3="1"',
                  'customattribute_ca3="0"', 'customattribute_ca2="PV1" customattribute_ca3="1"'):
        rows = env.c.query(f'<instances action="list" {query} />')
        assert [w.get("id") for w in rows] == [str(iid)], query
    for query in ('customattribute_ca2="nope"', 'customattribute_zz="PV1"'):
        assert len(env.c.query(f'<instances action="list" {query} />')) == 0
    tags = [t.get("label") for t in env.c.query('<tags action="list" />')]
    assert "auto_yes" in tags and "auto_no" not in tags


# ------------------------------------------------------------------------- §9.17 debugresume

scenario(
    "debugresume",
    job(*(sh("exit 1", name=f"f{i}") for i in range(4)),
        sh("exit 1", name="f4", retry_schedule="rs_short"),
        sh("exit 1", name="f5", retry_delay="1", retry_times="1"),
        task("/bin/true", queue="nope", name="a1"),
        task("/bin/true", parameters_mode="BAD", name="a2"),
        sh("echo notxml", output_method="XML", name="a3"),
        task("/bin/true", name="ok"),
        name="j", subjobs=job(task("/bin/true", name="never"))))


def test_17_debugresume(env: Env) -> None:
    old = env.result("debugresume")
    assert old.get("errors") == "9"
    r = env.c.query(f'<instance action="debugresume" id="{env.ids["debugresume"]}" />')
    new = int(r.get("workflow-instance-id"))
    assert new != env.ids["debugresume"]
    doc = env.wait(new)
    t = tasks_of(doc)
    # failed tasks run again (a retry schedule starts over, plain retries are not repeated)
    for i, outputs in enumerate((2, 2, 2, 2, 4, 3)):
        f = t[f"f{i}"]
        assert len(f.findall("output")) == outputs, i
        assert (f.get("status"), f.get("retval")) == ("TERMINATED", "1")
    assert t["f4"].get("retry_schedule_level") == "2" and t["f5"].get("retry_times") is None
    for name in ("a1", "a2", "a3"):
        assert t[name].get("status") == "ABORTED"
        assert len(t[name].findall("output")) == (1 if name == "a3" else 0)
    assert len(t["ok"].findall("output")) == 1
    assert doc.get("errors") == "6" and doc.get("id") == str(new)
    assert doc.get("start_time") == old.get("start_time")
    assert t["never"].get("status") is None
    assert env.c.query_raw('<instance action="debugresume" id="999999" />').get(
        "error") == "Unable to find instance to resume, or instance is not terminated"
    rows = env.c.query(f'<instances action="list" filter_id="{new}" />')
    assert rows[0].get("schedule_id") == "0"


# ------------------------------------------------------------------------- §9.18 SCRIPT

scenario(
    "script",
    job('<task type="SCRIPT" name="s" queue="par" parameters-mode="ENV"><input name="E">ev'
        '</input><stdin>in</stdin><script>#!/bin/sh\necho "$E <value select='
        '"evqGetWorkflowParameter(\'p\')"/> $(cat)"\necho "$0"\n</script></task>',
        '<task type="SCRIPT" name="n" queue="par"><script>echo hi</script></task>',
        '<task type="SCRIPT" name="c" queue="par"><input>a1</input><input>a 2</input>'
        '<script>#!/bin/sh\nprintf "[%s]" "$@"</script></task>'),
    params=("p",), parameters={"p": "PV"})


def test_18_script_tasks(env: Env) -> None:
    doc = env.result("script")
    t = tasks_of(doc)
    first, path = out(t["s"]).splitlines()
    assert first == "ev PV in"
    assert os.path.dirname(path) == env.path("scripts") and path.endswith(".script")
    assert not os.path.exists(path)  # deleted afterwards (processmanager.scripts.delete)
    assert t["n"].get("retval") == "-1" and "Exec format error" in text(t["n"].find("stderr"))
    assert out(t["c"]) == "[a1][a 2]"
    assert t["s"].find("script").text.startswith("#!/bin/sh\necho \"$E PV $(cat)\"")


def test_18_script_with_workflow_host(env: Env) -> None:
    doc = env.run(workflow(job('<task type="SCRIPT" name="s" queue="par"><script>#!/bin/sh\n'
                               "echo hi</script></task>")), host="somehost")
    t = doc.find(".//task")  # run over SSH (tests/remote), but this host does not resolve
    assert (t.get("status"), t.get("retval")) == ("TERMINATED", "-1")
    assert "cannot connect to" in text(t.find("stderr"))
    assert doc.get("host") == "somehost" and doc.get("errors") == "1"


# ------------------------------------------------------------------------- queues


def _spans(path: str) -> dict[str, tuple[float, float]]:
    """``span.sh`` log → name: (start, end)."""
    spans: dict[str, list[float]] = {}
    with open(path) as f:
        for line in f:
            at, sign, name = line.split()
            spans.setdefault(name, [0.0, 0.0])[sign == "-"] = float(at)
    return {k: (v[0], v[1]) for k, v in spans.items()}


def _max_overlap(spans: dict[str, tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


scenario("concurrency", job(*(task("span.sh", "@ROOT@/c2.log", f"t{i}", "0.3", queue="c2")
                              for i in range(6))),
         job(*(task("span.sh", "@ROOT@/c2.log", f"u{i}", "0.3", queue="c2")
               for i in range(2))))


def test_queue_concurrency_is_respected(env: Env) -> None:
    doc = env.result("concurrency")
    assert doc.get("errors") == "0"
    spans = _spans(env.path("c2.log"))
    assert len(spans) == 8
    assert _max_overlap(spans) == 2


_ORDER = "echo {} >> @ROOT@/order_{}.log"


def test_fifo_and_prio_order(env: Env) -> None:
    """A late task of an older instance overtakes on a prio queue, not on a fifo one; a
    fifo queue switched to prio while tasks wait re-orders them."""
    ids = {}
    for q in ("pf", "pp", "sw"):
        older = workflow(job(task("/bin/sleep", "1", queue=q)),
                         job(task("/bin/sleep", "0.2"),
                             subjobs=job(sh(_ORDER.format("older", q), queue=q))))
        newer = workflow(job(sh(_ORDER.format("newer", q), queue=q)))
        ids[q] = (env.launch(older), env.launch(newer))
    env.until(ids["sw"][0], lambda d: d.find(".//job/subjobs/job/tasks/task").get(
        "status") == "QUEUED")
    env.edit_queue("sw", 1, "prio")
    for a, b in ids.values():
        env.wait(a)
        env.wait(b)
    for q, order in (("pf", ["newer", "older"]), ("pp", ["older", "newer"]),
                     ("sw", ["older", "newer"])):
        with open(env.path(f"order_{q}.log")) as f:
            assert f.read().split() == order, q


def test_live_concurrency_changes(env: Env) -> None:
    iid = env.launch(workflow(job(*(task("span.sh", "@ROOT@/live.log", f"t{i}", "0.4",
                                         queue="live") for i in range(6)))))

    def executing(d: etree._Element) -> int:
        return sum(t.get("status") == "EXECUTING" for t in d.iter("task"))

    env.until(iid, lambda d: executing(d) == 1)
    env.edit_queue("live", 3)  # raised: two more start at once
    env.until(iid, lambda d: executing(d) == 3, timeout=2)
    assert env.queue_stats()["live"].get("concurrency") == "3"
    env.edit_queue("live", 1)  # lowered: the running ones finish, then one at a time
    lowered = time.time()
    doc = env.wait(iid)
    assert doc.get("errors") == "0"
    spans = _spans(env.path("live.log"))
    assert _max_overlap(spans) == 3
    later = {k: v for k, v in spans.items() if v[0] > lowered}
    assert len(later) >= 3 and _max_overlap(later) == 1


def test_deleted_queue(env: Env) -> None:
    env.c.query('<queue action="create" name="gone" concurrency="1" scheduler="fifo" '
                'dynamic="no" />')
    iid = env.launch(workflow(job(task("/bin/sleep", "0.5", queue="gone"),
                                  task("/bin/true", queue="gone"), name="a",
                                  subjobs=job(task("/bin/true", queue="gone"), name="b"))))
    env.until(iid, lambda d: d.find(".//task").get("status") == "EXECUTING")
    qid = next(q.get("id") for q in env.c.query('<queuepool action="list" />')
               if q.get("name") == "gone")
    env.c.query(f'<queue action="delete" id="{qid}" />')
    doc = env.wait(iid)
    a, b = doc.find("subjobs/job"), doc.find("subjobs/job/subjobs/job")
    # the deleted queue kept working until empty
    assert [t.get("retval") for t in a.findall("tasks/task")] == ["0", "0"]
    t = b.find("tasks/task")
    assert (t.get("status"), t.get("error")) == ("ABORTED", "Unknown queue name")
    assert "gone" not in {q.get("name") for q in env.c.query('<queuepool action="list" />')}


# ------------------------------------------------------------------------- datastore


def test_large_output_goes_to_the_datastore(env: Env) -> None:
    doc = env.run(workflow(job(sh("head -c 12000000 /dev/zero | tr '\\0' x; "
                                  "head -c 70000 /dev/zero | tr '\\0' y >&2"))))
    t = doc.find(".//task")
    assert t.get("retval") == "0"
    for node, size, char in ((t.find("output"), 12000000, b"x"), (t.find("stderr"), 70000,
                                                                  b"y")):
        ds = node.get("datastore-id")
        assert ds and not node.text
        r = env.c.query(f'<datastore action="get" id="{ds}" />')
        assert r.get("gzip") == "yes"
        data = gzip.decompress(base64.b64decode(r.text))
        assert data == char * size
    assert not t.find("log").get("datastore-id") and not t.find("log").text


# ------------------------------------------------------------------------- last: slow ones
# Launched with the batch, judged last: the tests above absorb their waiting.

scenario(
    "retries",
    job(sh("echo x >> @ROOT@/attempts; test $(wc -l < @ROOT@/attempts) -ge 3", name="third",
           retry_delay="1", retry_times="3"),
        sh("exit 1", name="exhausted", retry_delay="1", retry_times="1"),
        sh("exit 4", name="mismatch", retry_delay="1", retry_times="2", retry_retval="5"),
        sh("exit 4", name="match", retry_delay="1", retry_times="1", retry_retval="4"),
        sh("exit 1", name="sched", retry_schedule="rs"),
        sh("exit 1", name="times_only", retry_times="3"),
        name="j"))


def test_10_retries(env: Env) -> None:
    doc = env.result("retries")
    t = tasks_of(doc)
    third = t["third"]
    assert (third.get("retval"), third.get("retry_times"), third.get("status")) == (
        "0", "1", "TERMINATED")
    assert [o.get("retval") for o in third.findall("output")] == ["1", "1", "0"]
    assert [c.tag for c in third if c.tag != "input"] == ["output", "stderr", "log"] * 3
    assert third.get("retry_at") is None
    ex = t["exhausted"]
    assert (len(ex.findall("output")), ex.get("retry_times"), ex.get("retry_delay")) == (
        2, "0", "1")
    assert len(t["mismatch"].findall("output")) == 1
    assert t["mismatch"].get("retry_times") == "2"
    assert len(t["match"].findall("output")) == 2
    sched = t["sched"]
    attempts = [stamp(o.get("execution_time")) for o in sched.findall("output")]
    assert len(attempts) == 4
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert [round(g) in (g0, g0 + 1) for g, g0 in zip(gaps, (1, 2, 2), strict=True)] == [
        True] * 3
    assert (sched.get("retry_schedule_level"), sched.get("retry_delay"),
            sched.get("retry_times")) == ("3", "2", "0")
    assert len(t["times_only"].findall("output")) == 1  # no retry_delay: no retry
    assert doc.find("schedules/schedule").get("name") == "rs"
    assert doc.get("errors") == "5" and doc.get("retrying_tasks") == "0"


def test_retry_pending_and_control_retry(env: Env) -> None:
    """After every other retry scenario: ``control retry`` fires the retries of all
    instances."""
    iid = env.launch(workflow(job(sh("exit 1", name="r", retry_delay="30", retry_times="1"))))
    doc = env.until(iid, lambda d: d.find(".//task").get("retry_at") is not None)
    t = doc.find(".//task")
    assert (t.get("status"), t.get("retval"), t.get("retry_times")) == ("TERMINATED", "1", "0")
    assert abs(stamp(t.get("retry_at")) - stamp(t.find("output").get("exit_time")) - 30) <= 1
    assert doc.get("retrying_tasks") == "1" and doc.find("subjobs/job").get(
        "retrying_tasks") == "1"
    assert doc.get("status") == "EXECUTING" and doc.get("running_tasks") == "0"
    env.c.query('<control action="retry" />')  # fires every pending retry now
    doc = env.wait(iid, timeout=5)
    t = doc.find(".//task")
    assert len(t.findall("output")) == 2 and t.get("retry_at") is None
    assert doc.get("errors") == "1" and doc.get("retrying_tasks") == "0"


def test_15_schedules(env: Env) -> None:
    c = env.c
    for bad, error in (("", "Empty schedule"), ("*", "Non numeric data in schedule offset"),
                       ("60", "Out of range schedule offset"),
                       ("1;2;3;4;5;6;7", "Garbage at end of schedule"),
                       ("0;0;0;29;1", "Schedule constraints are impossible to satisfy")):
        r = c.query_raw(f'<workflow_schedule action="create" workflow_id="1" node="localhost" '
                        f'schedule="{bad}" onfailure="CONTINUE" active="yes" />')
        assert (r.get("error"), r.get("error-code")) == (error, "INVALID_SCHEDULE")
    time.sleep(max(0.0, env.schedules_since + 3.6 - time.monotonic()))
    fail = c.query(f'<workflow_schedule action="get" id="{env.schedules["sched_fail"]}" />')[0]
    assert fail.get("active") == "0"  # suspended after its first (failed) instance
    for sid in env.schedules.values():
        c.query(f'<workflow_schedule action="delete" id="{sid}" />')

    def rows(name: str) -> list[etree._Element]:
        return list(c.query(f'<instances action="list" filter_workflow="{name}" />'))

    assert len(rows("sched_fail")) == 1
    ok = rows("sched_ok")
    assert len(ok) >= 2
    spans = sorted((r.get("start_time"), r.get("end_time") or "9") for r in ok)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # never overlapping
