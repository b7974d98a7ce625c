"""The instance document: creation, evqids, and every pure evaluation step of the engine.

workflow.md §2 and §4.6–§4.9.1. The engine (``instance.py``) decides *when* things happen;
this module decides *what* a condition, a loop, a value or a template gives, and writes the
results into the document the way the original does (statuses, details, ``mode``, loop
clones, ``context-id``/``evqid``). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from evqueue.engine.definitions import WorkflowDefinition
from evqueue.engine.xpath import (
    AttrNode,
    DocNode,
    Node,
    ResultError,
    TextNode,
    WorkflowScope,
    XPathError,
    compile_xpath,
    expand_template,
    job_parent,
    string_value,
)

log = logging.getLogger(__name__)

EvalError = XPathError  # what the engine catches: str(e) is the original's full text


class WaitCondition(Exception):
    """An ``evqWait()`` condition is not met yet: the node becomes WAITING (§4.8)."""


# --------------------------------------------------------------------------- creation


def new_instance(
    definition: WorkflowDefinition, name: str, parameters: Iterable[tuple[str, str]], *,
    host: str = "", user: str = "", comment: str = "",
    retry_schedule: Callable[[str], etree._Element],
) -> etree._Element:
    """The instance document of workflow ``name`` at creation (workflow.md §2.1 steps 2–5).

    Parameter errors are ``INVALID_WORKFLOW_PARAMETERS`` (golden 35/36).
    ``retry_schedule(schedule_name)`` returns the global schedule's ``<schedule>`` element
    or raises the launch error (``UKNOWN_OBJECT`` "Unknown RetrySchedule name : X"). The
    root ``id`` is set by the caller once the instance id is known.
    """
    values = definition.launch_parameters(parameters)
    doc = copy.deepcopy(definition.root)
    doc.set("name", name)
    if host:
        doc.set("host", host)
        if user:
            doc.set("user", user)
    if comment:
        doc.set("comment", comment)
    for parameter_name, value in values.items():
        for parameter in doc.iterfind("parameters/parameter"):
            if parameter.get("name") == parameter_name:
                parameter.text = value
                break
    if definition.retry_schedules:
        schedules = doc.find("schedules")
        if schedules is None:
            schedules = etree.SubElement(doc, "schedules")
        for name in definition.retry_schedules:
            schedule = copy.deepcopy(retry_schedule(name))
            schedule.tail = None
            schedule.set("name", name)
            schedules.append(schedule)
    return doc


# --------------------------------------------------------------------------- outputs


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def clean_text(text: str) -> str:
    """Control characters other than TAB, LF and CR become ``?`` (workflow.md §4.16), in one
    pass: XML cannot hold them."""
    return _CONTROL.sub("?", text)


def parse_output(stdout: str) -> etree._Element | None:
    """The document element of an ``output-method="XML"`` task's stdout, or None when it is
    not XML (declaration, comments and PIs outside the root are dropped)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=True)
    try:
        root = etree.fromstring(clean_text(stdout).encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return None
    if root.getroottree().docinfo.doctype:
        return None
    return root


@dataclass(frozen=True, slots=True)
class Stored:
    """An output text moved to the datastore (``datastore-id``), or whose insert failed."""

    id: int | None = None
    error: str = ""


def append_attempt(
    task: etree._Element, *, retval: int, execution_time: str, exit_time: str,
    stdout: str | Stored, stderr: str | Stored, log_text: str | Stored,
) -> bool:
    """Append the ``output``/``stderr``/``log`` triple of one execution (§2.5). Returns False
    when an XML task's successful stdout is not XML (the caller aborts the task with
    "Invalid XML returned")."""
    output = etree.SubElement(task, "output", {
        "retval": str(retval), "execution_time": execution_time, "exit_time": exit_time})
    parsed = None
    wants_xml = retval == 0 and task.get("output-method") == "XML"
    if wants_xml and isinstance(stdout, str):
        parsed = parse_output(stdout)
    if parsed is not None:
        output.set("method", "xml")
        output.append(parsed)
    else:
        output.set("method", "text")
        _set_text(output, stdout)
    _set_text(etree.SubElement(task, "stderr"), stderr)
    _set_text(etree.SubElement(task, "log"), log_text)
    return parsed is not None or not wants_xml


def _set_text(node: etree._Element, value: str | Stored) -> None:
    if isinstance(value, Stored):
        if value.id is not None:
            node.set("datastore-id", str(value.id))
        else:
            node.set("datastore-error", value.error)
    else:
        node.text = clean_text(value)


# --------------------------------------------------------------------------- task inputs


@dataclass(frozen=True, slots=True)
class TaskInputs:
    """What a task receives, read from its document node after :meth:`replace_values`."""

    arguments: list[str]  # CMDLINE values (empty in ENV mode)
    environment: dict[str, str]  # ENV-mode variables (empty in CMDLINE mode)
    stdin: str  # text content, or the serialized ``<stdin mode="xml">`` element (quirk Q14)
    script: str | None  # SCRIPT body


def task_inputs(task: etree._Element) -> TaskInputs:
    """workflow.md §4.9.1–§4.9.3. The parameters mode is checked by the caller."""
    values = [(node.get("name") or "DEFAULT_PARAMETER_NAME", _text(node))
              for node in task.iterchildren("input") if node.get("status") != "SKIPPED"]
    env_mode = task.get("parameters-mode") == "ENV"
    stdin = task.find("stdin")
    stdin_data = ""
    if stdin is not None:
        stdin_data = (etree.tostring(stdin, encoding="unicode", with_tail=False)
                      if stdin.get("mode") == "xml" else _text(stdin))
    script = task.find("script")
    return TaskInputs(
        arguments=[] if env_mode else [value for _, value in values],
        environment=dict(values) if env_mode else {},
        stdin=stdin_data,
        script=None if script is None else _text(script),
    )


def _text(node: etree._Element) -> str:
    return "".join(node.itertext())


# --------------------------------------------------------------------------- evaluator


def _detach(node: etree._Element) -> None:
    """Remove ``node`` but keep its tail text in place, as a DOM ``removeChild`` does."""
    parent = node.getparent()
    if node.tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    node.tail = None
    parent.remove(node)


def _id_number(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


def _mark_aborted(node: etree._Element, error: str) -> None:
    node.set("status", "ABORTED")
    node.set("error", error)


def _insert_text_before(node: etree._Element, text: str) -> None:
    previous = node.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent = node.getparent()
        parent.text = (parent.text or "") + text


class Evaluator:
    """Evaluation on one instance document: the evqid index plus every evaluation site.

    Sites take the context node ``ctx`` and the *current job* (the job itself for a job's
    own expressions, the task's job for tasks and inputs); the parent job follows from it.
    """

    def __init__(self, doc: etree._Element) -> None:
        self.doc = doc
        self._by_id: dict[int, etree._Element] = {}
        self._next = 1
        self.reindex()

    # -- evqids (§2.4)
    def reindex(self) -> None:
        """Rebuild the id index from the document (resume): ids continue after the max."""
        self._by_id.clear()
        highest = 0
        for element in self.doc.iter():
            number = _id_number(element.get("evqid")) if isinstance(element.tag, str) else None
            if number is not None:
                self._by_id.setdefault(number, element)
                highest = max(highest, number)
        self._next = highest + 1

    def evqid(self, node: etree._Element) -> str:
        """The node's evqid, allocated on first use."""
        known = _id_number(node.get("evqid"))
        if known is not None:
            self._by_id[known] = node
            return str(known)
        number = self._next
        self._next += 1
        node.set("evqid", str(number))
        self._by_id[number] = node
        return str(number)

    def context_id(self, item: Node) -> str:
        """The ``context-id`` value designating ``item`` (``"5"`` or ``"5/@n"``)."""
        if isinstance(item, AttrNode):
            return f"{self.evqid(item.owner)}/@{item.name}"
        if isinstance(item, TextNode):
            return self.evqid(item.owner if not item.tail else item.owner.getparent())
        if isinstance(item, DocNode):
            return self.evqid(item.root)
        return self.evqid(item)

    def node_by_evqid(self, ident: str) -> Node | None:
        text, _, attribute = ident.partition("/@")
        number = _id_number(text)
        if number is None:
            return None
        element = self._by_id.get(number)
        if element is None or not self._attached(element):
            element = next((e for e in self.doc.iter() if e.get("evqid") == text), None)
            if element is None:
                return None
            self._by_id[number] = element
        if attribute:
            return AttrNode(element, attribute) if element.get(attribute) is not None else None
        return element

    def _attached(self, element: etree._Element) -> bool:
        node: etree._Element | None = element
        while node is not None:
            if node is self.doc:
                return True
            node = node.getparent()
        return False

    def context_of(self, node: etree._Element) -> Node:
        """The context a job/task was evaluated with (re-evaluation of WAITING nodes)."""
        ident = node.get("context-id")
        found = self.node_by_evqid(ident) if ident else None
        if found is not None:
            return found
        if node.tag == "task":
            job = job_parent(node)
            return self.context_of(job) if job is not None and job.tag == "job" else self.doc
        return job_parent(node) or self.doc

    # -- scopes
    def scope(self, current_job: etree._Element | None) -> WorkflowScope:
        parent = job_parent(current_job) if current_job is not None else None
        return WorkflowScope(current_job, parent, self.node_by_evqid)

    # -- evaluation sites (§3.7)
    def condition(self, expr: str, ctx: Node, current_job: etree._Element | None, *,
                  allow_wait: bool = True) -> bool:
        """A job/task (or, with ``allow_wait=False``, input) condition."""
        try:
            return compile_xpath(expr).boolean(ctx, self.scope(current_job))
        except XPathError as e:
            if e.waiting and allow_wait:
                raise WaitCondition() from None
            raise

    def loop(self, expr: str, ctx: Node, current_job: etree._Element | None) -> list[Node]:
        return compile_xpath(expr).nodes(ctx, self.scope(current_job))

    def value(self, expr: str, ctx: Node, current_job: etree._Element | None) -> str | None:
        return compile_xpath(expr).first_string(ctx, self.scope(current_job))

    def template(self, text: str, ctx: Node, current_job: etree._Element | None) -> str:
        return expand_template(text, ctx, self.scope(current_job))

    def apply_condition(self, node: etree._Element, ctx: Node,
                        current_job: etree._Element | None, *, allow_wait: bool = True) -> bool:
        """``handle_condition`` (§4.2) on the document: True to go on. False leaves the node
        SKIPPED; WAITING raises :class:`WaitCondition` after marking it; errors mark it
        ABORTED and raise :data:`EvalError`."""
        expr = node.get("condition")
        if expr is None:
            return True
        try:
            ok = self.condition(expr, ctx, current_job, allow_wait=allow_wait)
        except WaitCondition:
            node.set("status", "WAITING")
            node.set("details", "Waiting for condition to become true")
            raise
        except XPathError as e:
            _mark_aborted(node, f"Error evaluating condition : {e}")
            raise
        if ok:
            del node.attrib["condition"]
            node.set("details", "Condition evaluates to true")
        else:
            node.set("status", "SKIPPED")
            node.set("details", "Condition evaluates to false")
        return ok

    def expand_loop(self, node: etree._Element, ctx: Node,
                    current_job: etree._Element | None, *, number: bool = True,
                    ) -> Iterator[tuple[etree._Element, Node]]:
        """``handle_loop`` (§4.2): yield ``(clone, item)`` for each loop item; without a
        ``loop`` attribute yield ``(node, ctx)``.

        All clones are appended at the end of the parent at once and the node itself is
        removed (quirk Q23), so clones left unprocessed by an error stay visible, without
        status, evqid or context-id. The first clone *is* the node, so its evqid keeps
        pointing at a live element. With ``number`` (jobs and tasks) each clone gets
        ``context-id`` = the item's id and later clones a fresh evqid, lazily, so ids follow
        processing order (golden 11).
        A loop error marks the node ABORTED and raises :data:`EvalError`.
        """
        expr = node.get("loop")
        if expr is None:
            yield node, ctx
            return
        iteration = node.attrib.pop("iteration-condition", None)
        del node.attrib["loop"]
        try:
            items = self.loop(expr, ctx, current_job)
        except XPathError as e:
            _mark_aborted(node, f"Error evaluating loop : {e}")
            raise
        parent = node.getparent()
        template = copy.deepcopy(node)
        for processed in ("evqid", "context-id"):
            template.attrib.pop(processed, None)
        _detach(node)
        clones = [node] + [copy.deepcopy(template) for _ in items[1:]] if items else []
        for clone in clones:
            clone.tail = None
            if iteration is not None:
                clone.set("condition", iteration)
            parent.append(clone)
        for index, (clone, item) in enumerate(zip(clones, items, strict=True)):
            if number:
                clone.set("context-id", self.context_id(item))
                if index:
                    self.evqid(clone)
            yield clone, item

    def replace_values(self, task: etree._Element, ctx: Node, job: etree._Element) -> None:
        """Everything computed when a task is about to be queued (§4.9.1, §3.8): ``host``,
        ``queue_host`` and ``user`` templates, then inputs (condition, loop, values,
        copies), ``stdin`` and ``script``. The failing node is marked ABORTED with the
        original's site prefix, then :data:`EvalError` is raised."""
        for attribute, label in (("host", "dynamic host"), ("queue_host", "dynamic queue host"),
                                 ("user", "dynamic user")):
            text = task.get(attribute)
            if text is None:
                continue
            try:
                task.set(attribute, self.template(text, ctx, job))
            except XPathError as e:
                _mark_aborted(task, f"Error computing {label} : {e}")
                raise
        for node in list(task.iterchildren("input")):
            if not self.apply_condition(node, ctx, job, allow_wait=False):
                continue
            for clone, item in self.expand_loop(node, ctx, job, number=False):
                self._fill(clone, item, job)
        for name in ("stdin", "script"):
            node = task.find(name)
            if node is not None:
                self._fill(node, ctx, job)

    def _fill(self, container: etree._Element, ctx: Node, job: etree._Element) -> None:
        """Replace ``value`` children by text and ``copy`` children by copied nodes."""
        container.set("mode", "text")
        for value in list(container.iter("value")):
            try:
                text = self.value(value.get("select", ""), ctx, job)
            except XPathError as e:
                _mark_aborted(container, f"Error computing input value : {e}")
                raise
            if text is not None:  # an empty node-set leaves the <value> in place
                _insert_text_before(value, text)
                _detach(value)
        for node in list(container.iter("copy")):
            container.set("mode", "xml")
            try:
                selected = compile_xpath(node.get("select", "")).nodes(ctx, self.scope(job))
                if any(isinstance(item, AttrNode) for item in selected):
                    raise ResultError("Attribute nodes cannot be copied: select their element "
                                      "or use <value> instead")
            except XPathError as e:
                _mark_aborted(container, f"Error computing input values from copy node : {e}")
                raise
            for item in selected:
                if isinstance(item, TextNode):
                    _insert_text_before(node, item.text)
                    continue
                duplicate = copy.deepcopy(item.root if isinstance(item, DocNode) else item)
                duplicate.tail = None
                node.addprevious(duplicate)
            _detach(node)

    # -- end of the instance (§4.15)
    def end_values(self, doc: etree._Element | None = None,
                   ) -> tuple[list[tuple[str, str]], list[str]]:
        """Custom attribute rows ``(name, text)`` and the automatic tags that apply. An
        error stops the remaining ones (logged), as in the original."""
        root = self.doc if doc is None else doc
        scope = WorkflowScope(None, None, self.node_by_evqid, job_lookup=True)
        values: list[tuple[str, str]] = []
        tags: list[str] = []
        try:
            for attribute in root.iterfind("custom-attributes/custom-attribute"):
                for item in compile_xpath(attribute.get("select", "")).nodes(root, scope):
                    values.append((attribute.get("name", ""), string_value(item)))
            for tag in root.iterfind("automatic-tags/automatic-tag"):
                if compile_xpath(tag.get("condition", "")).boolean(root, scope):
                    tags.append(tag.get("name", ""))
        except XPathError as e:
            log.warning("Custom attributes / automatic tags of %s stopped: %s",
                        root.get("id", "?"), e)
        return values, tags

