"""The instance document (workflow.md §2, §4.2, §4.6–§4.9.1): creation, evqids, conditions,
loops, values, copies, templates and task inputs, checked against golden 11."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from lxml import etree

from evqueue.engine.definitions import parse_retry_schedule, parse_workflow
from evqueue.engine.evaluation import (
    EvalError,
    Evaluator,
    Stored,
    WaitCondition,
    append_attempt,
    new_instance,
    task_inputs,
)
from evqueue.engine.xpath import AttrNode
from evqueue.protocol.errors import ApiError

DATA = Path(__file__).parent / "data"
GOLDEN_WF = parse_workflow((DATA / "golden_wf.xml").read_bytes())
T = "2026-11-24 08:23:27"
RUNTIME = {"status", "start_time", "end_time", "errors", "id", "execution_time", "exit_time",
           "progression", "retval", "queued_tasks", "running_tasks"}


def no_schedule(name: str) -> etree._Element:
    raise ApiError("UKNOWN_OBJECT", f"Unknown RetrySchedule name : {name}")


def instance(xml: str, parameters: list[tuple[str, str]] | None = None) -> etree._Element:
    return new_instance(parse_workflow(xml), "wf", parameters or [], retry_schedule=no_schedule)


def canonical(doc: etree._Element) -> bytes:
    """The document without time/status values, attributes sorted (C14N)."""
    doc = copy.deepcopy(doc)
    for node in doc.iter():
        if isinstance(node.tag, str):
            for name in RUNTIME & set(node.attrib):
                del node.attrib[name]
    return etree.tostring(doc, method="c14n")


# --------------------------------------------------------------------------- creation


def test_instance_at_creation() -> None:
    doc = new_instance(GOLDEN_WF, "golden_wf", [("greeting", "hello world"), ("items", "a,b")],
                       comment="golden run", retry_schedule=no_schedule)
    assert dict(doc.attrib) == {"name": "golden_wf", "comment": "golden run"}
    assert [(p.get("name"), p.text) for p in doc.iterfind("parameters/parameter")] == \
        [("greeting", "hello world"), ("items", "a,b")]
    assert doc.find(".//*[@evqid]") is None and doc.find("schedules") is None
    assert GOLDEN_WF.root.find("parameters/parameter").text is None  # definition untouched


def test_host_user_and_comment_attributes() -> None:
    def attrs(**kw: str) -> dict[str, str]:
        doc = new_instance(GOLDEN_WF, "w", [("greeting", "a"), ("items", "b")],
                           retry_schedule=no_schedule, **kw)
        return {k: v for k, v in doc.attrib.items() if k != "name"}

    assert attrs(host="h", user="u", comment="c") == {"host": "h", "user": "u", "comment": "c"}
    assert attrs(user="u") == {}  # a user without a host is ignored
    assert attrs(host="h", user="") == {"host": "h"}


def test_parameter_errors_at_creation() -> None:
    with pytest.raises(ApiError, match=r"^Invalid number of parameters passed to workflow "
                                       r"\(passed 1, expected 2\)$"):
        new_instance(GOLDEN_WF, "w", [("greeting", "a")], retry_schedule=no_schedule)


def test_retry_schedules_are_imported() -> None:
    xml = ('<workflow><subjobs><job><tasks><task path="p" queue="q" retry_schedule="rs"/>'
           '<task path="p" queue="q" retry_schedule="rs"/></tasks></job></subjobs></workflow>')
    schedule = parse_retry_schedule((DATA / "golden_retry.xml").read_bytes()).root
    doc = new_instance(parse_workflow(xml), "w", [], retry_schedule=lambda name: schedule)
    imported = doc.findall("schedules/schedule")
    assert len(imported) == 1 and imported[0].get("name") == "rs"
    assert [(lv.get("retry_delay"), lv.get("retry_times")) for lv in imported[0]] == \
        [("2", "3"), ("60", "5")]
    assert schedule.get("name") is None  # the global schedule is not modified
    with pytest.raises(ApiError) as caught:
        new_instance(parse_workflow(xml), "w", [], retry_schedule=no_schedule)
    assert (caught.value.code, caught.value.message) == \
        ("UKNOWN_OBJECT", "Unknown RetrySchedule name : rs")


# --------------------------------------------------------------------------- golden 11


def run_golden_wf() -> etree._Element:
    """Drive golden_wf the way the engine does (§4.2), with the outputs of golden 11."""
    doc = new_instance(GOLDEN_WF, "golden_wf", [("greeting", "hello world"), ("items", "a,b")],
                       comment="golden run", retry_schedule=no_schedule)
    ev = Evaluator(doc)
    ev.evqid(doc)
    first = doc.find("subjobs/job")
    first.set("context-id", ev.context_id(doc))
    ev.evqid(first)
    stdouts = iter(["hello world\n", "<items><item>a</item><item>b</item></items>"])
    for task in list(first.iterfind("tasks/task")):
        task.set("context-id", ev.context_id(doc))
        ev.evqid(task)
        ev.replace_values(task, doc, first)
        assert append_attempt(task, retval=0, execution_time=T, exit_time=T,
                              stdout=next(stdouts), stderr="", log_text="")
    second = first.find("subjobs/job")
    second.set("context-id", ev.context_id(first))
    ev.evqid(second)
    for clone, item in ev.expand_loop(second, first, second):
        for task in list(clone.iterfind("tasks/task")):
            task.set("context-id", ev.context_id(item))
            ev.evqid(task)
            ev.replace_values(task, item, clone)
            args = task_inputs(task).arguments
            append_attempt(task, retval=0, execution_time=T, exit_time=T,
                           stdout=" ".join(args) + "\n", stderr="", log_text="")
    return doc


def test_golden_11_is_reproduced() -> None:
    """evqids, context-ids, loop clones, inputs and outputs of the real final document."""
    expected = etree.parse(str(DATA / "golden_11_instance.xml")).getroot()
    assert canonical(run_golden_wf()) == canonical(expected)


def test_golden_11_numbering() -> None:
    doc = run_golden_wf()
    jobs = doc.findall(".//job")
    assert [(j.get("name"), j.get("evqid"), j.get("context-id")) for j in jobs] == [
        ("first", "2", "1"), ("second", "5", "6"), ("second", "9", "8")]
    assert [i.get("evqid") for i in doc.iterfind(".//output/items/item")] == ["6", "8"]
    assert [t.get("evqid") for t in doc.iter("task")] == ["3", "4", "7", "10"]
    assert jobs[1].get("loop") is None


def test_reindex_continues_after_the_highest_id() -> None:
    doc = run_golden_wf()
    ev = Evaluator(etree.fromstring(etree.tostring(doc)))  # as after a restart
    assert ev.node_by_evqid("8").text == "b"
    assert ev.context_of(ev.doc.findall(".//job")[2]).text == "b"
    assert ev.evqid(etree.SubElement(ev.doc, "x")) == "11"


# --------------------------------------------------------------------------- conditions


LOOPS = """<workflow><parameters><parameter name="p"/></parameters><subjobs>
<job name="gen"><tasks><task name="emit" path="emit.sh" queue="q" output-method="XML"/></tasks>
<subjobs><job name="each" loop="evqGetOutput('emit')/items/item"
  iteration-condition=". != 'b'"><tasks><task path="/bin/echo" queue="q"/></tasks></job>
<job name="skipme" condition="1 = 2"><tasks><task path="/bin/true" queue="q"/></tasks></job>
</subjobs></job></subjobs></workflow>"""


def emitted() -> tuple[Evaluator, etree._Element]:
    doc = instance(LOOPS, [("p", "PV")])
    ev = Evaluator(doc)
    gen = doc.find("subjobs/job")
    gen.set("context-id", ev.context_id(doc))
    ev.evqid(gen)
    append_attempt(gen.find("tasks/task"), retval=0, execution_time=T, exit_time=T,
                   stdout='<items><item n="1">a</item><item n="2">b</item><item n="3">10'
                          "</item></items>", stderr="", log_text="")
    return ev, gen


def test_conditions() -> None:
    ev, gen = emitted()
    skip = gen.find("subjobs/job[@name='skipme']")
    assert ev.apply_condition(skip, gen, skip) is False
    assert (skip.get("status"), skip.get("details"), skip.get("condition")) == \
        ("SKIPPED", "Condition evaluates to false", "1 = 2")
    skip.attrib.pop("status")
    skip.set("condition", "1 = 1")
    assert ev.apply_condition(skip, gen, skip) is True
    assert skip.get("condition") is None and skip.get("details") == "Condition evaluates to true"
    assert ev.apply_condition(gen, ev.doc, gen) is True  # no condition


def test_condition_errors_and_waits() -> None:
    ev, gen = emitted()
    job = gen.find("subjobs/job[@name='skipme']")
    job.set("condition", "evqGetOutput('emit')")
    with pytest.raises(EvalError):
        ev.apply_condition(job, gen, job)
    assert job.get("status") == "ABORTED"
    assert job.get("error") == (
        "Error evaluating condition : XPath expression error in 'evqGetOutput('emit')'. XPath "
        "returned error : Expected boolean result (DOMXPath)")
    job.attrib.pop("status")
    job.set("condition", "evqWait(count(evqGetCurrentJob()/tasks/task[@status]) = 1)")
    with pytest.raises(WaitCondition):
        ev.apply_condition(job, gen, job)
    assert (job.get("status"), job.get("details")) == \
        ("WAITING", "Waiting for condition to become true")
    job.attrib.pop("status")
    job.find("tasks/task").set("status", "TERMINATED")
    assert ev.apply_condition(job, gen, job) is True


def test_job_loop_with_iteration_condition() -> None:
    """Scenario 8: clones appended after their former siblings, 'b' clone skipped."""
    ev, gen = emitted()
    each = gen.find("subjobs/job[@name='each']")
    each.set("context-id", ev.context_id(gen))
    ev.evqid(each)
    outcome = []
    for clone, item in ev.expand_loop(each, gen, each):
        outcome.append((item.text, ev.apply_condition(clone, item, clone)))
    assert outcome == [("a", True), ("b", False), ("10", True)]
    names = [j.get("name") for j in gen.find("subjobs")]
    assert names == ["skipme", "each", "each", "each"]
    clones = gen.findall("subjobs/job[@name='each']")
    assert clones[1].get("condition") == ". != 'b'" and clones[1].get("status") == "SKIPPED"
    assert all(c.get("loop") is None and c.get("iteration-condition") is None for c in clones)
    assert [c.get("evqid") for c in clones] == [each.get("evqid"), "6", "8"]
    assert [c.get("context-id") for c in clones] == ["4", "5", "7"]


def test_empty_loop_removes_the_node() -> None:
    ev, gen = emitted()
    each = gen.find("subjobs/job[@name='each']")
    each.set("loop", "evqGetOutput('emit')/nothing")
    assert list(ev.expand_loop(each, gen, each)) == []
    assert gen.find("subjobs/job[@name='each']") is None


def test_loop_errors() -> None:
    ev, gen = emitted()
    each = gen.find("subjobs/job[@name='each']")
    each.set("loop", "count(evqGetOutput('emit'))")
    with pytest.raises(EvalError):
        list(ev.expand_loop(each, gen, each))
    assert (each.get("status"), each.get("error")) == \
        ("ABORTED", "Error evaluating loop : Evaluation result is not a node")


def test_loop_over_attributes_gives_attribute_context_ids() -> None:
    ev, gen = emitted()
    each = gen.find("subjobs/job[@name='each']")
    each.set("loop", "evqGetOutput('emit')/items/item/@n")
    each.attrib.pop("iteration-condition")
    ev.evqid(each)  # 3
    pairs = list(ev.expand_loop(each, gen, each))
    assert isinstance(pairs[0][1], AttrNode)
    ids = [clone.get("context-id") for clone, _ in pairs]
    assert ids == ["4/@n", "5/@n", "7/@n"]  # the clones themselves are 3, 6, 8
    assert ev.node_by_evqid(ids[1]).value == "2"
    assert ev.context_of(pairs[2][0]).value == "3"
    assert [clone.get("evqid") for clone, _ in pairs] == ["3", "6", "8"]


# --------------------------------------------------------------------------- task values

TASKS = """<workflow><parameters><parameter name="p"/><parameter name="h"/></parameters>
<subjobs><job name="j"><tasks>
<task name="t" path="show.sh" queue="q" host="x{/workflow/parameters/parameter[@name='h']}y"
      queue_host="{zz}" user="{evqGetWorkflowParameter('h')}">
  <input>A</input>
  <input name="skipped" condition="1 = 2">S</input>
  <input name="each" loop="/workflow/parameters/parameter"><value select="@name"/></input>
  <input name="B">B <value select="evqGetWorkflowParameter('p')"/> end</input>
  <input name="left"><value select="nothing"/></input>
  <stdin>hello <value select="evqGetWorkflowParameter('p')"/></stdin>
</task>
</tasks></job></subjobs></workflow>"""


def prepared(xml: str = TASKS) -> tuple[Evaluator, etree._Element, etree._Element]:
    doc = instance(xml, [("p", "PV"), ("h", "hostfromparam")])
    ev = Evaluator(doc)
    job = doc.find("subjobs/job")
    return ev, job, job.find("tasks/task")


def test_replace_values_and_cmdline_inputs() -> None:
    ev, job, task = prepared(TASKS.replace(''' user="{evqGetWorkflowParameter('h')}"''', ""))
    ev.replace_values(task, ev.doc, job)
    assert task.get("host") == "xhostfromparamy"
    assert task.get("queue_host") == "{zz}"  # empty result: left unchanged
    skipped = task.find("input[@name='skipped']")
    assert (skipped.get("status"), skipped.get("details")) == \
        ("SKIPPED", "Condition evaluates to false")
    assert [i.get("name", i.tag) for i in task.iterchildren("input", "stdin")][-3:] == \
        ["stdin", "each", "each"]  # loop clones come after stdin
    assert task.find("input[@name='left']/value") is not None
    assert all(i.get("mode") == "text" for i in task.iter("input", "stdin")
               if i.get("status") != "SKIPPED")
    inputs = task_inputs(task)
    assert inputs.arguments == ["A", "B PV end", "", "p", "h"]
    assert inputs.stdin == "hello PV" and inputs.script is None
    assert inputs.environment == {}


def test_env_mode_inputs() -> None:
    ev, job, task = prepared(TASKS.replace(''' user="{evqGetWorkflowParameter('h')}"''', ""))
    task.set("parameters-mode", "ENV")
    ev.replace_values(task, ev.doc, job)
    inputs = task_inputs(task)
    assert inputs.arguments == []
    assert inputs.environment == {"DEFAULT_PARAMETER_NAME": "A", "B": "B PV end", "left": "",
                                  "each": "h"}  # later inputs of the same name win


def test_template_errors() -> None:
    ev, job, task = prepared()
    with pytest.raises(EvalError):
        ev.replace_values(task, ev.doc, job)
    assert task.get("status") == "ABORTED"
    assert task.get("error") == "Error computing dynamic user : Evaluation result is not a node"
    assert task.find("input").get("mode") is None  # nothing after the error was processed
    ev, job, task = prepared(TASKS.replace("{zz}", "{1 +}"))
    with pytest.raises(EvalError):
        ev.replace_values(task, ev.doc, job)
    assert task.get("error") == (
        "Error computing dynamic queue host : XPath expression error in '1 +'. XPath returned "
        "error : Missing right operand of operator + at character 3 (XPath Eval)")


def test_input_condition_cannot_wait() -> None:
    ev, job, task = prepared(TASKS.replace('condition="1 = 2"', 'condition="evqWait(1 = 2)"'))
    task.attrib.pop("user")
    with pytest.raises(EvalError):
        ev.replace_values(task, ev.doc, job)
    node = task.find("input[@name='skipped']")
    assert node.get("status") == "ABORTED"
    assert node.get("error") == (
        "Error evaluating condition : XPath expression error in 'evqWait(1 = 2)'. XPath "
        "returned error : evqWait() : Waiting for condition to become true in function "
        "evqWait() at character 1 (XPath Eval)")


COPIES = """<workflow><parameters><parameter name="p"/></parameters><subjobs><job><tasks>
<task path="p" queue="q"><input>pre<copy select="/workflow/parameters"/>post</input>
<stdin><copy select="/workflow/parameters"/></stdin></task>
</tasks></job></subjobs></workflow>"""


def test_copies_switch_to_xml_mode() -> None:
    """Quirks Q14/Q15: the input passes its text only, stdin its whole element."""
    doc = instance(COPIES, [("p", "PV")])
    ev = Evaluator(doc)
    job = doc.find("subjobs/job")
    task = job.find("tasks/task")
    ev.replace_values(task, doc, job)
    assert task.find("input").get("mode") == "xml"
    inputs = task_inputs(task)
    assert inputs.arguments == ["prePVpost"]
    assert inputs.stdin == ('<stdin mode="xml"><parameters><parameter name="p">PV</parameter>'
                            "</parameters></stdin>")


def test_copy_errors() -> None:
    doc = instance(COPIES.replace('"/workflow/parameters"/>post', '"\'x\'"/>post'), [("p", "V")])
    ev = Evaluator(doc)
    job = doc.find("subjobs/job")
    task = job.find("tasks/task")
    with pytest.raises(EvalError):
        ev.replace_values(task, doc, job)
    assert task.find("input").get("error") == \
        "Error computing input values from copy node : Evaluation result is not a node"
    doc = instance(COPIES.replace('"/workflow/parameters"/>post', '"//@name"/>post'), [("p", "")])
    ev = Evaluator(doc)
    job = doc.find("subjobs/job")
    with pytest.raises(EvalError, match="Attribute nodes cannot be copied"):
        ev.replace_values(job.find("tasks/task"), doc, job)


def test_script_text() -> None:
    xml = ('<workflow><parameters><parameter name="p"/></parameters><subjobs><job><tasks>'
           '<task type="SCRIPT" name="s" queue="q"><script>#!/bin/sh\necho '
           '<value select="evqGetWorkflowParameter(\'p\')"/></script></task>'
           "</tasks></job></subjobs></workflow>")
    doc = instance(xml, [("p", "PV")])
    ev = Evaluator(doc)
    job = doc.find("subjobs/job")
    task = job.find("tasks/task")
    ev.replace_values(task, doc, job)
    assert task_inputs(task).script == "#!/bin/sh\necho PV"
    assert task_inputs(task).stdin == ""


# --------------------------------------------------------------------------- outputs


def test_append_attempt() -> None:
    task = etree.fromstring('<task output-method="XML"/>')
    assert append_attempt(task, retval=0, execution_time=T, exit_time=T,
                          stdout='<?xml version="1.0"?><!-- c --><r a="1"/>\n',
                          stderr="e\x01", log_text=Stored(id=7)) is True
    output, stderr, log = task
    assert (output.get("method"), output[0].tag, output.text) == ("xml", "r", None)
    assert stderr.text == "e?" and log.get("datastore-id") == "7"
    assert append_attempt(task, retval=0, execution_time=T, exit_time=T, stdout="not xml",
                          stderr="", log_text="") is False
    assert task[3].get("method") == "text" and task[3].text == "not xml"
    assert append_attempt(task, retval=2, execution_time=T, exit_time=T, stdout="<r/>",
                          stderr="", log_text=Stored(error="too big")) is True
    assert task[6].get("method") == "text" and task[8].get("datastore-error") == "too big"
    assert len(task.findall("output")) == 3


# --------------------------------------------------------------------------- end values


def test_custom_attributes_and_automatic_tags() -> None:
    xml = """<workflow><parameters><parameter name="d"/></parameters>
<custom-attributes><custom-attribute name="day" select="/workflow/parameters/parameter"/>
<custom-attribute name="out" select="evqGetJob('j')/tasks/task/output"/></custom-attributes>
<automatic-tags><automatic-tag name="yes" condition="count(//task) = 1"/>
<automatic-tag name="no" condition="evqGetWorkflowParameter('d') = 'x'"/></automatic-tags>
<subjobs><job name="j"><tasks><task path="p" queue="q"/></tasks></job></subjobs></workflow>"""
    doc = instance(xml, [("d", "monday")])
    append_attempt(doc.find(".//task"), retval=0, execution_time=T, exit_time=T,
                   stdout="hello\n", stderr="", log_text="")
    assert Evaluator(doc).end_values() == ([("day", "monday"), ("out", "hello\n")], ["yes"])
    doc.find(".//automatic-tag").set("condition", "count(//task)")
    assert Evaluator(doc).end_values() == ([("day", "monday"), ("out", "hello\n")], [])
