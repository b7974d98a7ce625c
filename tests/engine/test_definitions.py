"""Workflow and retry-schedule definitions (workflow.md §1, §4.11.3; protocol.md §3.5, §3.8):
the golden documents parse, and every validation rule answers its text, without error-code."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evqueue.engine.definitions import (
    AutomaticTag,
    CustomAttribute,
    RetryLevel,
    parse_retry_schedule,
    parse_workflow,
)
from evqueue.protocol.errors import ApiError

DATA = Path(__file__).parent / "data"


def refused(content: bytes | str) -> str:
    with pytest.raises(ApiError) as caught:
        parse_workflow(content)
    assert caught.value.code is None
    return caught.value.message


def workflow(tasks: str, job_attrs: str = "", head: str = "", more: str = "") -> str:
    return (f"<workflow>{head}<subjobs><job{job_attrs}><tasks>{tasks}</tasks>{more}</job>"
            f"</subjobs></workflow>")


def test_golden_workflows_parse() -> None:
    wf = parse_workflow((DATA / "golden_wf.xml").read_bytes())
    assert wf.parameters == ("greeting", "items")
    assert wf.root.tag == "workflow"
    assert [t.get("path") for t in wf.root.iter("task")] == \
        ["/bin/echo", "emit_items.sh", "/bin/echo"]
    assert wf.custom_attributes == () and wf.automatic_tags == () and wf.retry_schedules == ()
    fail = parse_workflow((DATA / "golden_fail.xml").read_text())
    assert fail.parameters == ()


def test_definition_exposes_attributes_tags_and_retry_schedules() -> None:
    wf = parse_workflow(workflow(
        '<task path="a" queue="q" retry_schedule="rs1"/><task path="b" queue="q" '
        'retry_schedule="rs2"/><task path="c" queue="q" retry_schedule="rs1"/>',
        head='<parameters><parameter name="d"/></parameters><custom-attributes>'
             '<custom-attribute name="day" select="evqGetWorkflowParameter(\'d\')" '
             'description="the day"/></custom-attributes><automatic-tags>'
             '<automatic-tag name="errs" condition="count(//task) &gt; 0"/></automatic-tags>'))
    assert wf.custom_attributes == (
        CustomAttribute("day", "evqGetWorkflowParameter('d')", "the day"),)
    assert wf.automatic_tags == (AutomaticTag("errs", "count(//task) > 0", ""),)
    assert wf.retry_schedules == ("rs1", "rs2")


def test_golden_45_text_is_exact() -> None:
    assert refused(b"<workflow><subjobs/></workflow>") == \
        "element 'subjobs' is not allowed for content model '(job+)' on line 1"


@pytest.mark.parametrize("content", [b"hello", b"", "", b"   ", b"\x00\xff"])
def test_non_xml_is_an_invalid_document_structure(content: bytes | str) -> None:
    assert refused(content) == "invalid document structure on line 1"  # errata 1


def test_other_well_formedness_errors_name_the_problem_and_line() -> None:
    assert refused(b"<workflow>\n<subjobs>\n</workflow>") == \
        "expected end of tag 'subjobs' on line 3"
    assert refused(b"<workflow>\n<subjobs x=1/></workflow>").endswith(" on line 2")
    assert refused(b"<workflow>&xxe;</workflow>") == "Entity 'xxe' not defined on line 1"


def test_doctype_is_refused() -> None:
    message = refused(b'<!DOCTYPE workflow [<!ENTITY a "aaaa">]><workflow/>')
    assert message.startswith("DOCTYPE is not allowed")


# --------------------------------------------------------------------------- ValidateXML


@pytest.mark.parametrize(("tasks", "message"), [
    ('<task type="PERL" path="x" queue="q"/>',
     "Invalid type attribute value 'PERL'. Muse be 'BINARY' or 'SCRIPT'."),
    ('<task queue="q"/>', "Binary task must have a (non empty) 'path' attribute"),
    ('<task type="BINARY" path="" queue="q"/>',
     "Binary task must have a (non empty) 'path' attribute"),
    ('<task type="SCRIPT" queue="q"><script>x</script></task>',
     "Script task must have a (non empty) 'name' attribute"),
    ('<task type="SCRIPT" name="s" queue="q"/>', "Script tasks must have a script node"),
    ('<task type="SCRIPT" name="s" queue="q"><script/></task>', "Script cannot be empty"),
])
def test_semantic_checks(tasks: str, message: str) -> None:
    assert refused(workflow(tasks)) == message


def test_script_with_only_a_value_is_not_empty() -> None:
    wf = parse_workflow(workflow(
        '<task type="SCRIPT" name="s" queue="q"><script><value select="."/></script></task>'))
    assert wf.root.find(".//script/value") is not None


def test_empty_job() -> None:
    assert refused("<workflow><subjobs><job><tasks/></job></subjobs></workflow>") == \
        "A job cannot be empty"
    assert refused("<workflow><subjobs><job/></subjobs></workflow>") == "A job cannot be empty"


def test_semantic_checks_come_first_and_stop_at_the_first() -> None:
    content = workflow('<task path="" queue="q" foo="1"/><task type="X" path="p" queue="q"/>',
                       more="<subjobs><job><tasks/></job></subjobs>")
    assert refused(content) == "Binary task must have a (non empty) 'path' attribute"


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(("content", "message"), [
    (workflow('<task path="p"/>'), "missing required attribute 'queue' on line 1"),
    (workflow('<task path="p" queue="q" foo="bar"/>'),
     "attribute 'foo' is not declared for element 'task' on line 1"),
    (workflow('<task path="p" queue="q"><input iteration-condition="1"/></task>'),
     "attribute 'iteration-condition' is not declared for element 'input' on line 1"),
    (workflow('<task path="p" queue="q"><stdin mode="xml"/></task>'),
     "attribute 'mode' is not declared for element 'stdin' on line 1"),
    (workflow('<task path="p" queue="q"><input name=""/></task>'),
     "value '' has length '0' which is less than minLength facet value '1' on line 1"),
    (workflow('<task path="p" queue="q" retry_delay="0"/>'),
     "value '0' must be greater than or equal to minInclusive facet value '1' on line 1"),
    (workflow('<task path="p" queue="q" retry_times="-2"/>'),
     "value '-2' must be greater than or equal to minInclusive facet value '1' on line 1"),
    (workflow('<task path="p" queue="q" retry_times="3x"/>'),
     "value '3x' of attribute 'retry_times' on element 'task' is not a positive integer "
     "on line 1"),
    (workflow('<task path="p" queue="q" retry_retval="two"/>'),
     "value 'two' of attribute 'retry_retval' on element 'task' is not an integer on line 1"),
    (workflow('<task path="p" queue="q"><value select="."/></task>'),
     "element 'value' is not allowed for content model '(input*,stdin?,script?)' on line 1"),
    (workflow('<task path="p" queue="q"><input><value/></input></task>'),
     "missing required attribute 'select' on line 1"),
    (workflow('<task path="p" queue="q"><script><copy select="."/></script></task>'),
     "element 'copy' is not allowed for content model '(value*)' on line 1"),
    (workflow('<task path="p" queue="q"><input><foo/></input></task>'),
     "element 'foo' is not allowed for content model '(value|copy)*' on line 1"),
    (workflow('<task path="p" queue="q"/>', job_attrs=' when="x"'),
     "attribute 'when' is not declared for element 'job' on line 1"),
    (workflow('<task path="p" queue="q"/>', more="<subjobs/>"),
     "element 'subjobs' is not allowed for content model '(job+)' on line 1"),
    (workflow('<task path="p" queue="q"/>', head="<schedules/>"),
     "element 'schedules' is not allowed for content model "
     "'(parameters?,custom-attributes?,automatic-tags?,subjobs)' on line 1"),
    (workflow('<task path="p" queue="q"/>',
              head="<custom-attributes/><parameters/>"),
     "element 'parameters' is not allowed for content model "
     "'(parameters?,custom-attributes?,automatic-tags?,subjobs)' on line 1"),
    ("<workflow><parameters/></workflow>",
     "element 'workflow' is not allowed for content model "
     "'(parameters?,custom-attributes?,automatic-tags?,subjobs)' on line 1"),
    (workflow('<task path="p" queue="q"/>', head='<parameters><parameter/></parameters>'),
     "missing required attribute 'name' on line 1"),
    (workflow('<task path="p" queue="q"/>',
              head='<parameters><parameter name="x">default</parameter></parameters>'),
     "element 'parameter' must be empty: remove the text inside it on line 1"),
    (workflow('<task path="p" queue="q"/>text'),
     "element 'tasks' cannot contain text: remove the text inside it on line 1"),
    (workflow('<task path="p" queue="q"/>',
              head='<custom-attributes><custom-attribute name="a"/></custom-attributes>'),
     "missing required attribute 'select' on line 1"),
    (workflow('<task path="p" queue="q"/>',
              head='<automatic-tags><automatic-tag condition="1"/></automatic-tags>'),
     "missing required attribute 'name' on line 1"),
    ("<flow/>", "no declaration found for element 'flow' on line 1"),
])
def test_schema_rules(content: str, message: str) -> None:
    assert refused(content) == message


def test_schema_accepts_every_declared_attribute() -> None:
    task = ('<task type="BINARY" name="n" path="p" wd="/tmp" parameters-mode="ENV" '
            'output-method="XML" merge-stderr="yes" use-agent="no" queue="q" host="h" user="u" '
            'queue_host="{.}" retry_retval="-3" retry_delay=" 5 " retry_times="+2" '
            'retry_schedule="rs" loop="." condition="true()" iteration-condition="true()">'
            '<input name="a" loop="." condition="true()">x<value select="."/><copy select="."/>'
            '</input><stdin>s<copy select="."/></stdin><script>t<value select="."/></script>'
            "</task>")
    content = (f'<workflow version="3"><parameters><parameter name="a"/><parameter name="a"/>'
               f"</parameters>{workflow(task)[10:-11]}</workflow>")
    wf = parse_workflow(content)
    assert wf.parameters == ("a", "a")  # duplicates pass validation (§1.1)
    assert wf.root.get("version") == "3"


def test_comments_and_processing_instructions_are_ignored() -> None:
    parse_workflow(workflow('<!-- c --><task path="p" queue="q"/><?pi x?>'))


def test_errors_are_all_reported_with_the_lines_of_their_tags() -> None:
    content = """<workflow>
  <subjobs>
    <job name="j">
      <tasks>
        <task path="p"
              bad="1">
          <stdin/>
          <input name="late"/>
        </task>
      </tasks>
    </job>
  </subjobs>
</workflow>"""
    assert refused(content).split("\n") == [
        "attribute 'bad' is not declared for element 'task' on line 6",
        "missing required attribute 'queue' on line 6",
        "element 'input' is not allowed for content model '(input*,stdin?,script?)' on line 9",
    ]


def test_content_errors_use_the_end_tag_line() -> None:
    content = "<workflow>\n<subjobs>\n\n</subjobs>\n</workflow>"
    assert refused(content) == \
        "element 'subjobs' is not allowed for content model '(job+)' on line 4"


# --------------------------------------------------------------------------- parameters


def test_launch_parameters() -> None:
    wf = parse_workflow((DATA / "golden_wf.xml").read_bytes())
    assert wf.launch_parameters([("items", "a,b"), ("greeting", "hi"), ("items", "x")]) == \
        {"items": "a,b", "greeting": "hi"}
    with pytest.raises(ApiError) as caught:
        wf.launch_parameters([("greeting", "x")])
    assert (caught.value.code, caught.value.message) == (  # golden 35
        "INVALID_WORKFLOW_PARAMETERS",
        "Invalid number of parameters passed to workflow (passed 1, expected 2)")
    with pytest.raises(ApiError) as caught:
        wf.launch_parameters([("greeting", "x"), ("items", "a"), ("bogus", "1")])
    assert (caught.value.code, caught.value.message) == (  # golden 36
        "INVALID_WORKFLOW_PARAMETERS", "Unknown parameter : bogus")


def test_duplicate_declared_parameters_can_never_be_launched() -> None:
    wf = parse_workflow(workflow('<task path="p" queue="q"/>', head=(
        '<parameters><parameter name="a"/><parameter name="a"/></parameters>')))
    with pytest.raises(ApiError, match=r"\(passed 1, expected 2\)"):
        wf.launch_parameters([("a", "1")])


def test_schedule_parameters() -> None:
    wf = parse_workflow((DATA / "golden_wf.xml").read_bytes())
    wf.schedule_parameters([("greeting", "x"), ("items", "y")])
    with pytest.raises(ApiError) as caught:
        wf.schedule_parameters([("greeting", "x")])
    assert caught.value.message == \
        "Invalid number of parameters. Workflow expects 2, but 1 are given."
    with pytest.raises(ApiError, match="^Unknown parameter : zz$"):
        wf.schedule_parameters([("greeting", "x"), ("zz", "y")])


# --------------------------------------------------------------------------- retry schedules


def refused_schedule(content: bytes | str) -> str:
    with pytest.raises(ApiError) as caught:
        parse_retry_schedule(content)
    assert caught.value.code is None
    return caught.value.message


def test_golden_retry_schedule() -> None:
    schedule = parse_retry_schedule((DATA / "golden_retry.xml").read_bytes())
    assert schedule.levels == (RetryLevel(2, 3), RetryLevel(60, 5))
    assert schedule.root.tag == "schedule"


@pytest.mark.parametrize(("content", "message"), [
    ("hello", "invalid document structure on line 1"),
    ("", "invalid document structure on line 1"),
    ("<schedule/>", "element 'schedule' is not allowed for content model '(level+)' on line 1"),
    ('<schedule><level retry_delay="1"/></schedule>',
     "missing required attribute 'retry_times' on line 1"),
    ('<schedule><level retry_delay="0" retry_times="1"/></schedule>',
     "value '0' must be greater than or equal to minInclusive facet value '1' on line 1"),
    ('<schedule name="x"><level retry_delay="1" retry_times="1"/></schedule>',
     "attribute 'name' is not declared for element 'schedule' on line 1"),
    ('<schedule><level retry_delay="1" retry_times="1"/><step/></schedule>',
     "element 'step' is not allowed for content model '(level+)' on line 1"),
    ('<levels><level retry_delay="1" retry_times="1"/></levels>',
     "no declaration found for element 'levels' on line 1"),
])
def test_retry_schedule_rules(content: str, message: str) -> None:
    assert refused_schedule(content) == message


# --------------------------------------------------------------------------- robustness

_XMLISH = st.lists(st.sampled_from([
    "<workflow>", "</workflow>", "<subjobs>", "</subjobs>", "<job>", "</job>", "<tasks>",
    "</tasks>", '<task path="p" queue="q">', "</task>", "<task/>", "<input>", "</input>",
    '<value select="."/>', "<script>", "</script>", "<stdin/>", "text", "\n", "<", "&", "'",
    '<parameters><parameter name="a"/></parameters>', 'type="SCRIPT"', "<!-- c -->",
    "<schedule>", '<level retry_delay="1" retry_times="0"/>', "</schedule>", "é",
]), max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_XMLISH, st.text(max_size=60)))
def test_arbitrary_documents_only_raise_api_errors(content: str) -> None:
    for parse in (parse_workflow, parse_retry_schedule):
        try:
            parse(content)
        except ApiError as e:
            assert e.code is None and e.message


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_bytes_only_raise_api_errors(content: bytes) -> None:
    with pytest.raises(ApiError):
        parse_workflow(content)
