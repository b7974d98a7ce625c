"""The evQueue XPath dialect (workflow.md §3): conformance vectors, functions, templates,
error texts, parse checks, and robustness against arbitrary expressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from evqueue.engine.definitions import parse_workflow
from evqueue.engine.evaluation import Evaluator, WaitCondition, append_attempt, new_instance
from evqueue.engine.xpath import (
    AttrNode,
    Seq,
    TextNode,
    WorkflowScope,
    XPathError,
    compile_xpath,
    evaluate,
    expand_template,
    parse_check,
)

DATA = json.loads((Path(__file__).parent / "data" / "xpath_vectors.json").read_text())

# The setup of the §3.10 vectors: parameter p, job "first" with tasks "emit" and "t",
# subjob "second" whose task input is <value select="EXPR"/>.
SETUP = parse_workflow(b"""<workflow>
  <parameters>
    <parameter name="p"/>
  </parameters>
  <subjobs>
    <job name="first">
      <tasks>
        <task name="emit" path="emit.sh" queue="q1" output-method="XML"/>
        <task name="t" path="t.sh" queue="q1"/>
      </tasks>
      <subjobs>
        <job name="second">
          <tasks>
            <task path="/bin/echo" queue="q1">
              <input name="x"><value select="."/></input>
            </task>
          </tasks>
        </job>
      </subjobs>
    </job>
  </subjobs>
</workflow>""")
T = "2024-01-01 00:00:00"


class Run:
    """The vector instance, simulated up to the moment the subjob's task is prepared."""

    def __init__(self, expr: str) -> None:
        self.doc = new_instance(SETUP, "vectors", [("p", "pv")], retry_schedule=_no_schedule)
        self.ev = Evaluator(self.doc)
        self.first = self.doc.find("subjobs/job")
        self.first.set("context-id", self.ev.context_id(self.doc))
        self.ev.evqid(self.first)
        for task, stdout in zip(self.first.iterfind("tasks/task"),
                                (DATA["emit_stdout"], "5\n"), strict=True):
            task.set("context-id", self.ev.context_id(self.doc))
            self.ev.evqid(task)
            append_attempt(task, retval=0, execution_time=T, exit_time=T, stdout=stdout,
                           stderr="", log_text="")
        self.second = self.first.find("subjobs/job")
        self.second.set("context-id", self.ev.context_id(self.first))
        self.ev.evqid(self.second)
        self.task = self.second.find("tasks/task")
        self.task.set("context-id", self.ev.context_id(self.first))
        self.ev.evqid(self.task)
        self.input = self.task.find("input")
        self.input.find("value").set("select", expr)

    def scope(self) -> WorkflowScope:
        return self.ev.scope(self.second)


def _no_schedule(name: str) -> etree._Element:
    raise AssertionError(name)


def full(expr: str, message: str) -> str:
    return f"XPath expression error in '{expr}'. XPath returned error : {message}"


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["expr"])
def test_conformance_vector(vector: dict) -> None:
    """Each §3.10 row, through the real site: the input's value of the subjob's task."""
    run = Run(vector["expr"])
    if vector["kind"] == "error":
        with pytest.raises(XPathError) as caught:
            run.ev.replace_values(run.task, run.first, run.second)
        assert str(caught.value) == full(vector["expr"], vector["expected"])
        assert run.input.get("status") == "ABORTED"
        assert run.input.get("error") == "Error computing input value : " + \
            full(vector["expr"], vector["expected"])
        assert run.task.get("status") is None
        return
    run.ev.replace_values(run.task, run.first, run.second)
    assert run.input.get("mode") == "text"
    if vector["kind"] == "left":
        assert run.input.find("value") is not None
        assert "".join(run.input.itertext()) == ""
    else:
        assert run.input.find("value") is None
        assert "".join(run.input.itertext()) == vector["expected"]


def value(expr: str) -> object:
    """Raw result of ``expr`` at the vector site (context: job first, current job: second)."""
    run = Run(".")
    return compile_xpath(expr).evaluate(run.first, run.scope())


def error(expr: str, run: Run | None = None) -> str:
    run = run or Run(".")
    with pytest.raises(XPathError) as caught:
        compile_xpath(expr).evaluate(run.first, run.scope())
    return str(caught.value)


# --------------------------------------------------------------------------- types


def test_result_types_follow_the_dialect() -> None:
    assert value("1 + 2") == 3 and type(value("1 + 2")) is int
    assert value("2 div 4") == 0.5
    assert value("'a'") == "a"
    assert value("1 = 1") is True
    assert isinstance(value("evqGetCurrentJob()"), Seq)


def test_arithmetic_overflow_and_division() -> None:
    assert value("2147483647 + 1") == -2147483648  # C int wraps
    assert value("1 div 0") == float("inf")
    assert compile_xpath("1 div 0").first_string(Run(".").first) == "inf"


def test_modulus_errors() -> None:
    assert error("7 mod 0") == full(
        "7 mod 0", "Division by zero while evaluating operator at character 3 (Operator MOD)")
    assert error("7.5 mod 'x'") == full(
        "7.5 mod 'x'", "Modulus operator can only operate on integers while evaluating "
                       "operator at character 5 (Operator MOD)")
    assert value("(0 - 7) mod 3") == -1  # C remainder keeps the sign


def test_string_to_number_conversions() -> None:
    result = value("'1.5' + 1")  # stoi fails; stod then truncates: 1.0 + 1.0 (quirk Q5)
    assert result == 2.0 and type(result) is float
    assert value("'abc' = 1") is False
    assert error("'abc' + 1") == full(
        "'abc' + 1", "Could not cast string to float at character 1 while evaluating operator "
                     "at character 7 (Type Cast)")
    assert value("' 7' + 1") == 8


def test_equality_rules() -> None:
    assert value("'a' = 'a'") is True
    assert value("true() = false()") is False
    assert value(f"{P} = {P}") is True
    assert value(f"{P} != 'zz'") is True
    assert value("true() != 1") is False
    assert "Unable to evaluate operator '='" in error(f"true() = {P}")


def test_logical_operators_short_circuit() -> None:
    assert value("false() and evqGetParentJob(9)") is False
    assert value("true() or evqGetParentJob(9)") is True
    assert "Not enough parents" in error("true() and evqGetParentJob(9)")
    assert error("false() or 1") == full(
        "false() or 1", "Logical operator 'or' can only operate on boolean values while "
                        "evaluating operator at character 9 (Operator OR)")


def test_union_is_loosest_and_keeps_literals() -> None:
    assert value("count(1 | 2 | 'x')") == 3
    assert value(f"count({P} | {P})") == 6  # no de-duplication
    assert value("count(1 = 1 | 2 = 2)") == 2  # (1 = 1) | (2 = 2): "=" binds tighter


# --------------------------------------------------------------------------- paths

P = "evqGetOutput('emit')/root/items/item"


def test_paths_and_steps() -> None:
    assert [n.text for n in value(f"{P}[position() > 1]")] == ["b", "10"]
    assert value(f"{P}/position()") == [1, 2, 3]
    assert value(f"{P}/last()") == [3, 3, 3]
    assert value(f"{P}/name()") == ["item", "item", "item"]
    kept = value(f"{P}[1.0]")  # a non-literal number keeps everything (Q6)
    assert [n.text for n in kept] == ["a", "b", "10"]
    assert value(f"{P}[0]") == []
    assert value(f"count({P}[5])") == 0
    assert [a.value for a in value(f"{P}/@*")] == ["1", "2", "3"]
    assert value("name(/)") == ["#document"]
    assert value("count(/..)") == 0
    assert value(f"count({P}/@n/..)") == 0  # attributes have no parent


def test_predicates_apply_to_the_whole_sequence() -> None:
    # a/b[1] is (a/b)[1]: one node, not one per parent
    doc = etree.fromstring("<r><a><b>1</b><b>2</b></a><a><b>3</b></a></r>")
    assert [b.text for b in evaluate("a/b[1]", doc)] == ["1"]
    assert [b.text for b in evaluate("a/b[3]", doc)] == ["3"]


def test_descendants_are_post_order() -> None:
    doc = etree.fromstring('<r><x id="o">1<x id="i">2</x></x><x id="z"/></r>')
    assert [a.value for a in evaluate("//x/@id", doc)] == ["i", "o", "z"]
    assert [a.value for a in evaluate("x//x/@id", doc)] == ["i"]
    assert [e.get("id") for e in evaluate("//*", doc) if e.tag == "x"] == ["i", "o", "z"]


def test_sibling_axes() -> None:
    doc = etree.fromstring("<r> <a/> <b/> <c/> </r>")
    a, b, c = doc
    following = evaluate("a/following-sibling::*", doc)
    assert len(following) == 5 and isinstance(following[0], TextNode)
    assert evaluate("a/following-sibling::c", doc) == [c]
    preceding = evaluate("c/preceding-sibling::*", doc)
    assert [n for n in preceding if not isinstance(n, TextNode)] == [b, a]  # nearest first
    assert evaluate("c/preceding-sibling::a", doc) == [a]
    assert evaluate("count(c/preceding-sibling::*)", doc) == 5


def test_star_is_a_wildcard_or_a_multiplication() -> None:
    doc = etree.fromstring("<r><n>3</n><m>2</m></r>")
    assert evaluate("count(*)", doc) == 2
    assert evaluate("n * m", doc) == 6
    assert evaluate("n*m", doc) == 6
    assert evaluate("count(/r/*)", doc) == 2


def test_word_operators_are_names_where_no_operand_precedes() -> None:
    doc = etree.fromstring("<r><and>1</and><div>2</div></r>")
    assert evaluate("and + div", doc) == 3
    assert evaluate("count(and)", doc) == 1


def test_current_inside_a_predicate() -> None:
    doc = etree.fromstring('<r k="b"><i>a</i><i>b</i></r>')
    assert [i.text for i in evaluate("i[. = current()/@k]", doc)] == ["b"]


def test_filters_need_sequences() -> None:
    run = Run(".")
    assert error("'x'[1]", run) == full(
        "'x'[1]", "Filters can only be applied on sequences (XPath Eval)")
    assert "can only be applied to a sequence" in error("count(a)/b", run)


# --------------------------------------------------------------------------- functions


def test_core_functions() -> None:
    assert value("not(true())") is False
    assert value("string-length('é')") == 2  # bytes
    assert value("substring('hello', 0, 50)") == "hello"
    assert value("substring('hello', 5)") == ""
    assert value("substring('hello', 2, 0 - 1)") == "llo"  # negative length: to the end
    assert value("contains('abc', '')") is True
    assert value("string-join(evqGetOutput('zz'), ',')") == ""
    assert value(f"min({P}[9]/@n)") == []
    assert value("count(current())") == 1
    assert value(f"name({P}/@n)") == ["n", "n", "n"]


def test_function_argument_errors() -> None:
    assert error("count('x')") == full(
        "count('x')", "XPath Eval : Expecting sequence as parameter in function count() at "
                      "character 1 (XPath Eval)")
    assert "Expecting 1 parameter(s), got 2" in error("not(1, 2)")
    assert error("substring('abc', 'z')") == full(
        "substring('abc', 'z')", "Type Cast : Could not cast string to int at character 18 in "
                                 "function substring() at character 1 (XPath Eval)")


def test_unknown_functions_only_fail_when_evaluated() -> None:
    assert parse_check("string(a)") is None  # errata 8
    doc = etree.fromstring("<statistics api_queries='3'/>")
    with pytest.raises(XPathError) as caught:
        evaluate("string(statistics/@api_queries)", doc)
    assert str(caught.value) == full(
        "string(statistics/@api_queries)", "Unknown function : string at character 1 "
                                           "(XPath Eval)")


def test_workflow_functions_need_a_workflow_scope() -> None:
    doc = etree.fromstring("<response><workflow/></response>")
    with pytest.raises(XPathError, match="Unknown function : evqGetOutput at character 1"):
        evaluate("evqGetOutput('x')", doc)


def test_evq_get_workflow_parameter() -> None:
    assert value("evqGetWorkflowParameter('p') = 'pv'") is True
    run = Run(".")
    extra = etree.SubElement(run.doc.find("parameters"), "parameter", name="p")
    extra.text = "again"
    assert "Incompatible type for operand" in error("evqGetWorkflowParameter('p')", run)


def test_evq_get_parent_job_by_name() -> None:
    assert error("evqGetParentJob('nope')") == full(
        "evqGetParentJob('nope')", "evqGetParentJob() : Could not find job 'nope' in parents "
                                   "in function evqGetParentJob() at character 1 (XPath Eval)")
    assert value("name(evqGetParentJob(0))") == ["job"]


def test_evq_get_input_and_output_as_steps() -> None:
    run = Run(".")
    run.ev.replace_values(run.task, run.first, run.second)
    job = run.second
    result = compile_xpath("evqGetInput('/bin/echo', 'x')").evaluate(
        job, WorkflowScope(None, job, run.ev.node_by_evqid))
    assert [i.get("name") for i in result] == ["x"]
    assert value("count(evqGetParentJob()/evqGetOutput('emit'))") == 1
    assert value("count(evqGetParentJob(1)/evqGetOutput('emit'))") == 0


def test_evq_get_context_resolves_attribute_context_ids() -> None:
    run = Run(".")
    item = compile_xpath(f"{P}[2]/@n").evaluate(run.first, run.scope())[0]
    run.second.set("context-id", run.ev.context_id(item))
    owner = run.ev.evqid(item.owner)
    assert run.second.get("context-id") == f"{owner}/@n"
    inner = WorkflowScope(None, run.second, run.ev.node_by_evqid)  # second as parent job
    found = compile_xpath("evqGetContext()").evaluate(run.first, inner)
    assert isinstance(found[0], AttrNode) and found[0].value == "2"
    assert value("name(evqGetCurrentJob()/evqGetContext())") == ["job"]  # second's: first


def test_evq_wait() -> None:
    run = Run(".")
    ev = run.ev
    assert ev.condition("evqWait(1 = 1)", run.first, run.second) is True
    with pytest.raises(WaitCondition):
        ev.condition("evqWait(1 = 2)", run.first, run.second)
    with pytest.raises(XPathError) as caught:
        ev.condition("evqWait(1 = 2)", run.first, run.second, allow_wait=False)
    assert str(caught.value) == full(
        "evqWait(1 = 2)", "evqWait() : Waiting for condition to become true in function "
                          "evqWait() at character 1 (XPath Eval)")


def test_evq_get_job_only_at_the_root_site() -> None:
    run = Run(".")
    root_scope = WorkflowScope(None, None, run.ev.node_by_evqid, job_lookup=True)
    found = compile_xpath("evqGetJob('second')").evaluate(run.doc, root_scope)
    assert found == [run.second]
    assert "Unknown function : evqGetJob" in error("evqGetJob('second')", run)
    with pytest.raises(XPathError, match="Unknown function : evqGetOutput"):
        compile_xpath("evqGetOutput('t')").evaluate(run.doc, root_scope)


# --------------------------------------------------------------------------- sites


def test_boolean_site_requires_a_boolean() -> None:
    run = Run(".")
    with pytest.raises(XPathError) as caught:
        compile_xpath("evqGetOutput('t')").boolean(run.first, run.scope())
    assert str(caught.value) == full("evqGetOutput('t')", "Expected boolean result (DOMXPath)")


def test_node_sites_reject_literals() -> None:
    run = Run(".")
    with pytest.raises(XPathError) as caught:
        compile_xpath("'x'").nodes(run.first, run.scope())
    assert str(caught.value) == "Evaluation result is not a node"
    with pytest.raises(XPathError, match="^Evaluation result is not a node$"):
        compile_xpath("1 | 2").nodes(run.first, run.scope())


def test_templates() -> None:
    doc = etree.fromstring('<workflow><parameters><parameter name="h">hostfromparam</parameter>'
                           "</parameters></workflow>")
    assert expand_template("x{/workflow/parameters/parameter[@name='h']}y", doc) == \
        "xhostfromparamy"
    assert expand_template("a{zz}b{zz}", doc) == "a{zz}b{zz}"  # empty: left as is
    with pytest.raises(XPathError, match="^Evaluation result is not a node$"):
        expand_template("{name(.)}", doc)  # a sequence of strings, not of nodes
    with pytest.raises(XPathError, match="^Evaluation result is not a node$"):
        expand_template("{'literal'}", doc)
    assert expand_template("{/workflow/parameters/parameter}-{/workflow/parameters/"
                           "parameter}", doc) == "hostfromparam-hostfromparam"


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("expr", "message"), [
    ("5-3", "Invalid int or float at character 2"),
    ("x -1", "Invalid int or float at character 3"),
    ("'abc", "Invalid string : end delimiter expected for token at character 1"),
    ("1.2.3", "Invalid float : only one dot is allowed for token at character 1"),
    ("a\tb", "Invalid node or function name at character 2"),
    ("$x", "Invalid node or function name at character 1"),
    ("'é' = $", "Invalid node or function name at character 8"),  # byte offsets
    ("count(a", "Unbalanced parenthesis at character 6"),
    ("a[1", "Unbalanced bracket at character 2"),
    ("a)", "Unexpected ')' at character 2"),
    ("a/", "Missing node name after '/' at character 2"),
    ("(" * 100 + ")" * 100, "Expression nested too deeply at character 64"),
])
def test_parse_errors(expr: str, message: str) -> None:
    assert parse_check(expr) == message
    with pytest.raises(XPathError) as caught:
        compile_xpath(expr)
    assert str(caught.value) == full(expr, f"{message} (XPath Parser)")


@pytest.mark.parametrize("expr", [
    "string(a)", "text()", "child::item", "1 <= 2", "a b", "", "1 +", "evqGetOutput('t')/x",
])
def test_parse_check_accepts_what_only_evaluation_refuses(expr: str) -> None:
    assert parse_check(expr) is None


def test_operand_structure_errors() -> None:
    run = Run(".")
    assert error("a b", run) == full("a b", "Error evaluating expression (XPath Eval)")
    assert error("", run) == full("", "Error evaluating expression (XPath Eval)")
    assert error("1 +", run) == full("1 +", "Missing right operand of operator + at "
                                            "character 3 (XPath Eval)")
    assert error("= 1", run) == full("= 1", "Missing left operand of operator = at "
                                            "character 1 (XPath Eval)")


def test_compiled_expressions_are_shared() -> None:
    assert compile_xpath("count(//task)") is compile_xpath("count(//task)")


# --------------------------------------------------------------------------- robustness

_ALPHABET = st.sampled_from(list("ab()[]@/.*=!<>|+-,'\"0123456789 :") + [
    "and ", " or ", "div", "mod", "count(", "name(", "evqGetOutput('emit')", "/root",
    "evqGetParentJob(", "evqWait(", "substring(", "last()", "position()", "following-sibling::",
    "item", "@n", "//", "true()", "\t", "é",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ALPHABET, max_size=25).map("".join))
def test_arbitrary_expressions_only_raise_xpath_errors(expr: str) -> None:
    run = ROBUST
    try:
        result = compile_xpath(expr).evaluate(run.first, run.scope())
    except XPathError as e:
        assert str(e).startswith(f"XPath expression error in '{expr}'")
        assert e.context
        return
    assert isinstance(result, str | int | float | bool | Seq)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_only_raises_xpath_errors(expr: str) -> None:
    try:
        compile_xpath(expr).evaluate(ROBUST.first, ROBUST.scope())
    except XPathError:
        pass
    assert parse_check(expr) is None or isinstance(parse_check(expr), str)


ROBUST = Run(".")
