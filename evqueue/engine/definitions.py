"""Workflow and retry-schedule definition documents: parsing and validation.

The original validates a workflow in two passes (workflow.md §1.5): ``ValidateXML`` (semantic
checks, first failure wins, plain texts) and then Xerces against ``workflow.xsd`` (every error,
``"<text> on line N"``, joined with newlines). Neither answer carries an error-code. lxml's
XMLSchema words its errors differently from Xerces, so the schema is written here as data
and checked by hand, which reproduces the recorded Xerces texts (golden 45) and gives clear
ones elsewhere. Parsing is safe: no DTD, no entities, no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from evqueue.protocol.errors import ApiError

# --------------------------------------------------------------------------- schema as data

_STRING, _INTEGER, _POSITIVE, _NON_EMPTY = "string", "integer", "positiveInteger", "nonEmpty"


@dataclass(frozen=True, slots=True)
class _Particle:
    name: str
    low: int
    high: int | None  # None: unbounded


@dataclass(frozen=True, slots=True)
class _Type:
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    types: tuple[tuple[str, str], ...] = ()  # attribute → non-string type
    sequence: tuple[_Particle, ...] | None = None  # element-only content, in this order
    mixed: frozenset[str] | None = None  # text plus any number of these children
    model: str = "EMPTY"  # the content model as Xerces prints it

    def attribute_type(self, name: str) -> str:
        return dict(self.types).get(name, _STRING)


def _seq(model: str, *particles: tuple[str, str]) -> dict[str, object]:
    bounds = {"": (1, 1), "?": (0, 1), "*": (0, None), "+": (1, None)}
    return {"sequence": tuple(_Particle(n, *bounds[q]) for n, q in particles), "model": model}


_XPATH_ATTRS = ("loop", "condition", "iteration-condition")
_WORKFLOW_SCHEMA: dict[str, _Type] = {
    "workflow": _Type(optional=("version",), **_seq(
        "(parameters?,custom-attributes?,automatic-tags?,subjobs)",
        ("parameters", "?"), ("custom-attributes", "?"), ("automatic-tags", "?"),
        ("subjobs", ""))),
    "parameters": _Type(**_seq("(parameter*)", ("parameter", "*"))),
    "parameter": _Type(required=("name",)),
    "custom-attributes": _Type(**_seq("(custom-attribute*)", ("custom-attribute", "*"))),
    "custom-attribute": _Type(required=("name", "select"), optional=("description",)),
    "automatic-tags": _Type(**_seq("(automatic-tag*)", ("automatic-tag", "*"))),
    "automatic-tag": _Type(required=("name", "condition"), optional=("description",)),
    "subjobs": _Type(**_seq("(job+)", ("job", "+"))),
    "job": _Type(optional=("name", *_XPATH_ATTRS),
                 **_seq("(tasks,subjobs?)", ("tasks", ""), ("subjobs", "?"))),
    "tasks": _Type(**_seq("(task+)", ("task", "+"))),
    "task": _Type(
        required=("queue",),
        optional=("type", "name", "path", "wd", "parameters-mode", "output-method",
                  "merge-stderr", "use-agent", "host", "user", "queue_host", "retry_retval",
                  "retry_delay", "retry_times", "retry_schedule", *_XPATH_ATTRS),
        types=(("retry_retval", _INTEGER), ("retry_delay", _POSITIVE),
               ("retry_times", _POSITIVE)),
        **_seq("(input*,stdin?,script?)", ("input", "*"), ("stdin", "?"), ("script", "?"))),
    "input": _Type(optional=("name", "loop", "condition"), types=(("name", _NON_EMPTY),),
                   mixed=frozenset(("value", "copy")), model="(value|copy)*"),
    "stdin": _Type(mixed=frozenset(("value", "copy")), model="(value|copy)*"),
    "script": _Type(mixed=frozenset(("value",)), model="(value*)"),
    "value": _Type(required=("select",)),
    "copy": _Type(required=("select",)),
}
_RETRY_SCHEDULE_SCHEMA: dict[str, _Type] = {
    "schedule": _Type(**_seq("(level+)", ("level", "+"))),
    "level": _Type(required=("retry_delay", "retry_times"),
                   types=(("retry_delay", _POSITIVE), ("retry_times", _POSITIVE))),
}

# --------------------------------------------------------------------------- parsing

_LIBXML_POSITION = re.compile(r", line \d+, column \d+$")
_STRUCTURE_ERRORS = frozenset((4, 5))  # XML_ERR_DOCUMENT_EMPTY, XML_ERR_DOCUMENT_END
_TAG_MISMATCH = re.compile(r"Opening and ending tag mismatch: (\S+) line")


def _parse(content: bytes | str) -> etree._Element:
    """Parse untrusted XML, or raise the KO answer (errata 1: never crash on non-XML)."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_blank_text=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as e:
        line = e.lineno or 1
        if e.code in _STRUCTURE_ERRORS or "Start tag expected" in e.msg:
            raise ApiError(None, f"invalid document structure on line {line}") from None
        mismatch = _TAG_MISMATCH.match(e.msg)
        if mismatch:  # Xerces' wording
            raise ApiError(None, f"expected end of tag '{mismatch.group(1)}' on line {line}") \
                from None
        raise ApiError(None, f"{_LIBXML_POSITION.sub('', e.msg)} on line {line}") from None
    if root.getroottree().docinfo.doctype:
        raise ApiError(None, "DOCTYPE is not allowed in this document: remove the "
                             "<!DOCTYPE ...> declaration")
    return root


# --------------------------------------------------------------------------- validation


def _end_line(element: etree._Element) -> int:
    """Line of the end tag, where Xerces checks an element's content. lxml only knows start
    lines, so count the newlines of the text that follows."""
    line = element.sourceline or 1
    children = list(element)
    if not children:
        return line + (element.text or "").count("\n")
    last = children[-1]
    inner = _end_line(last) if isinstance(last.tag, str) else (last.sourceline or line) + \
        (last.text or "").count("\n")
    return inner + (last.tail or "").count("\n")


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _attribute_errors(element: etree._Element, decl: _Type) -> Iterator[str]:
    declared = set(decl.required) | set(decl.optional)
    for name, value in element.attrib.items():
        if name not in declared:
            shown = etree.QName(name).localname if name[:1] == "{" else name
            yield f"attribute '{shown}' is not declared for element '{element.tag}'"
            continue
        kind = decl.attribute_type(name)
        if kind == _NON_EMPTY and value == "":
            yield "value '' has length '0' which is less than minLength facet value '1'"
        elif kind in (_INTEGER, _POSITIVE):
            collapsed = " ".join(value.split())
            if not _INTEGER_TEXT.fullmatch(collapsed):
                wanted = "a positive integer" if kind == _POSITIVE else "an integer"
                yield (f"value '{value}' of attribute '{name}' on element '{element.tag}' "
                       f"is not {wanted}")
            elif kind == _POSITIVE and int(collapsed) < 1:
                yield (f"value '{collapsed}' must be greater than or equal to minInclusive "
                       f"facet value '1'")
    for name in decl.required:
        if element.get(name) is None:
            yield f"missing required attribute '{name}'"


def _content_error(element: etree._Element, decl: _Type,
                   children: list[etree._Element]) -> str | None:
    """The first content-model violation: the offending child, or the element itself when
    its content ends too early (golden 45)."""
    def refuse(name: str) -> str:
        return f"element '{name}' is not allowed for content model '{decl.model}'"

    if decl.sequence is None:
        allowed = decl.mixed or frozenset()
        for child in children:
            if child.tag not in allowed:
                return refuse(child.tag)
        return None
    particles = decl.sequence
    index, count = 0, 0
    for child in children:
        while index < len(particles) and (
            child.tag != particles[index].name or
            (particles[index].high is not None and count >= particles[index].high)
        ):
            if count < particles[index].low:
                return refuse(child.tag)
            index, count = index + 1, 0
        if index == len(particles):
            return refuse(child.tag)
        count += 1
    if index < len(particles) and count < particles[index].low:
        return refuse(element.tag)
    if any(p.low for p in particles[index + 1:]):
        return refuse(element.tag)
    return None


def _text_error(element: etree._Element, decl: _Type) -> str | None:
    if decl.mixed is not None:
        return None
    texts = [element.text, *(child.tail for child in element)]
    if any(t and t.strip() for t in texts):
        what = "must be empty" if decl.sequence is None else "cannot contain text"
        return f"element '{element.tag}' {what}: remove the text inside it"
    return None


def _validate(root: etree._Element, schema: dict[str, _Type], root_name: str) -> None:
    """Schema validation with Xerces wording; all errors, in the order Xerces finds them
    (attributes at start tags, content at end tags)."""
    if root.tag != root_name:
        raise ApiError(None, f"no declaration found for element '{root.tag}' on line "
                             f"{root.sourceline}")
    errors: list[str] = []

    def visit(element: etree._Element) -> None:
        decl = schema[element.tag]
        line = element.sourceline
        errors.extend(f"{e} on line {line}" for e in _attribute_errors(element, decl))
        children = [c for c in element if isinstance(c.tag, str)]
        for child in children:
            if child.tag in schema:
                visit(child)
        end = _end_line(element)
        for problem in (_text_error(element, decl), _content_error(element, decl, children)):
            if problem:
                errors.append(f"{problem} on line {end}")

    visit(root)
    if errors:
        raise ApiError(None, "\n".join(errors))


def _validate_semantics(root: etree._Element) -> None:
    """``ValidateXML``: checked before the schema, first failure wins (workflow.md §1.5)."""
    for task in root.iter("task"):
        kind = task.get("type", "BINARY")
        if kind not in ("BINARY", "SCRIPT"):
            raise ApiError(
                None, f"Invalid type attribute value '{kind}'. Muse be 'BINARY' or 'SCRIPT'.")
        if kind == "BINARY":
            if not task.get("path"):
                raise ApiError(None, "Binary task must have a (non empty) 'path' attribute")
            continue
        if not task.get("name"):
            raise ApiError(None, "Script task must have a (non empty) 'name' attribute")
        script = task.find("script")
        if script is None:
            raise ApiError(None, "Script tasks must have a script node")
        if not "".join(script.itertext()) and script.find("value") is None:
            raise ApiError(None, "Script cannot be empty")
    for job in root.iter("job"):
        if job.find("tasks/task") is None:
            raise ApiError(None, "A job cannot be empty")


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class CustomAttribute:
    name: str
    select: str
    description: str


@dataclass(frozen=True, slots=True)
class AutomaticTag:
    name: str
    condition: str
    description: str


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A validated workflow definition. ``root`` is the parsed document: treat it as read
    only (instances get a deep copy, see :func:`evqueue.engine.evaluation.new_instance`)."""

    root: etree._Element
    parameters: tuple[str, ...]  # declared names, in order (duplicates kept)
    custom_attributes: tuple[CustomAttribute, ...]
    automatic_tags: tuple[AutomaticTag, ...]
    retry_schedules: tuple[str, ...]  # names used by tasks, first use first

    def launch_parameters(self, given: Iterable[tuple[str, str]]) -> dict[str, str]:
        """``instance launch`` check (workflow.md §2.1 step 4, golden 35/36): the first of
        duplicated names wins, every name must be declared, and all must be given."""
        values: dict[str, str] = {}
        for name, value in given:
            if name in values:
                continue
            if name not in self.parameters:
                raise ApiError("INVALID_WORKFLOW_PARAMETERS", f"Unknown parameter : {name}")
            values[name] = value
        if len(values) != len(self.parameters):
            raise ApiError(
                "INVALID_WORKFLOW_PARAMETERS",
                f"Invalid number of parameters passed to workflow (passed {len(values)}, "
                f"expected {len(self.parameters)})")
        return values

    def schedule_parameters(self, given: list[tuple[str, str]]) -> None:
        """``workflow_schedule create|edit`` check (``CheckInputParameters``): other texts."""
        if len(given) != len(self.parameters):
            raise ApiError(
                "INVALID_WORKFLOW_PARAMETERS",
                f"Invalid number of parameters. Workflow expects {len(self.parameters)}, but "
                f"{len(given)} are given.")
        for name, _ in given:
            if name not in self.parameters:
                raise ApiError("INVALID_WORKFLOW_PARAMETERS", f"Unknown parameter : {name}")


def parse_workflow(content: bytes | str) -> WorkflowDefinition:
    """Parse and validate a workflow definition. Errors are ``ApiError(None, text)``."""
    root = _parse(content)
    _validate_semantics(root)
    _validate(root, _WORKFLOW_SCHEMA, "workflow")
    return WorkflowDefinition(
        root=root,
        parameters=tuple(p.get("name", "") for p in root.iterfind("parameters/parameter")),
        custom_attributes=tuple(
            CustomAttribute(a.get("name", ""), a.get("select", ""), a.get("description", ""))
            for a in root.iterfind("custom-attributes/custom-attribute")),
        automatic_tags=tuple(
            AutomaticTag(t.get("name", ""), t.get("condition", ""), t.get("description", ""))
            for t in root.iterfind("automatic-tags/automatic-tag")),
        retry_schedules=tuple(dict.fromkeys(
            t.get("retry_schedule", "") for t in root.iter("task") if t.get("retry_schedule"))),
    )


@dataclass(frozen=True, slots=True)
class RetryLevel:
    delay: int
    times: int


@dataclass(frozen=True, slots=True)
class RetryScheduleDefinition:
    root: etree._Element  # the ``<schedule>`` element, read only
    levels: tuple[RetryLevel, ...]


def parse_retry_schedule(content: bytes | str) -> RetryScheduleDefinition:
    """Parse and validate ``<schedule><level retry_delay retry_times/>…</schedule>``."""
    root = _parse(content)
    _validate(root, _RETRY_SCHEDULE_SCHEMA, "schedule")
    return RetryScheduleDefinition(root, tuple(
        RetryLevel(int(level.get("retry_delay", "").strip()),
                   int(level.get("retry_times", "").strip()))
        for level in root.iterchildren("level")))
