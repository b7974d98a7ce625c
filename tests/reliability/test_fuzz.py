"""Parser fuzzing (issue 11 item 1): mutated golden queries over TCP, unix and websockets,
generated queries, random workflow definitions, XPath expressions, schedule strings and
configuration files. Nothing may crash the daemon or hang it; every answer is a proper
response (KO with a text and a known code) or a close."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator

import pytest
from evqtest import Daemon, temporary_daemon, wait_terminated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from rawapi import Raw, check_answer, check_error, golden_requests, no_tracebacks, ping_ok, ws_login
from websockets.exceptions import ConnectionClosed

from evqueue.config import KEYS, Config, ConfigError
from evqueue.engine.schedule_string import parse_schedule
from evqueue.engine.xpath import XPathError, evaluate
from evqueue.protocol.errors import ApiError

#: examples per property: enough to hit every mutation kind, small enough for CI
EXAMPLES = int(os.environ.get("EVQ_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
GOLDEN = golden_requests()
QUERIES = [q for q in GOLDEN if not q.startswith(b"<auth")]
AUTHS = [q for q in GOLDEN if q.startswith(b"<auth")]
#: bytes that matter to XML and to the framer's scanner
SPECIAL = b"<>/?!\"'=&;[]-\n\t \x00\xff\xef\xbb\xbf"
TOKENS = [b"<", b">", b"/>", b"</", b"<?xml version='1.0'?>", b"<!--", b"-->", b"<![CDATA[",
          b"]]>", b"<!DOCTYPE x>", b"<!DOCTYPE x [<!ENTITY e 'v'>]>", b"&e;", b"&#0;", b"&#x41;",
          b'"', b"'", b"=", b"\xc3", b"\xff", b"xmlns:a='u'", b" a:b='1'"]


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[Daemon]:
    """One daemon for every example: state built up by earlier examples is part of the fuzz."""
    with temporary_daemon() as d:
        yield d


@st.composite
def mutated(draw: st.DrawFn, pool: list[bytes]) -> bytes:
    """A golden query with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("delete", "insert", "token", "flip", "dup", "truncate")))
        i = draw(st.integers(0, len(data)))
        if kind == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "token":
            data[i:i] = draw(st.sampled_from(TOKENS))
        elif kind == "flip" and i < len(data):
            data[i] = draw(st.sampled_from(SPECIAL))
        elif kind == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 40))]
        elif kind == "truncate":
            del data[i:]
    return bytes(data)


def _wire(daemon: Daemon, kind: str, payload: bytes) -> None:
    raw = Raw.open(daemon, kind)
    try:
        raw.send(payload)
        for doc in raw.drain():
            check_answer(doc)
    finally:
        raw.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_mutated_golden_queries(fuzz_daemon: Daemon, kind: str) -> None:
    """After login: every mutated query is answered properly or the connection closes, and
    the half-closed connection always ends (no hang)."""

    @FUZZ
    @given(payload=mutated(QUERIES))
    def run(payload: bytes) -> None:
        _wire(fuzz_daemon, kind, payload)

    run()
    ping_ok(fuzz_daemon)
    no_tracebacks(fuzz_daemon)


def test_mutated_authentication(fuzz_daemon: Daemon) -> None:
    """Before login: a mutated answer to the challenge is refused with one error and the
    connection closes; nothing is ever answered as if authenticated."""

    @FUZZ
    @given(payload=mutated(AUTHS + QUERIES[:5]))
    def run(payload: bytes) -> None:
        raw = Raw.open(fuzz_daemon, "tcp", user=None)
        try:
            assert raw.read().tag == "auth"
            raw.send(payload)
            docs = raw.drain()
        finally:
            raw.close()
        assert len(docs) <= 1, [etree.tostring(d) for d in docs]
        for doc in docs:
            check_error(doc)
            assert doc.get("error-code") in (
                "AUTH_ERROR", "MISSING_PARAMETER", "UNEXPECTED_EXCEPTION"), etree.tostring(doc)

    run()
    ping_ok(fuzz_daemon)


def test_mutated_queries_over_websockets(fuzz_daemon: Daemon) -> None:
    """One frame = one document: a mutated frame gets one proper answer or a 1011 close."""

    async def one(text: str) -> None:
        ws = await ws_login(fuzz_daemon)
        try:
            await ws.send(text)
            try:
                check_answer(etree.fromstring(await asyncio.wait_for(ws.recv(), 10)))
            except ConnectionClosed:
                assert ws.close_code == 1011, ws.close_code
        finally:
            await ws.close()

    @FUZZ
    @given(payload=mutated(QUERIES))
    def run(payload: bytes) -> None:
        asyncio.run(one(payload.decode("utf-8", "replace")))

    run()
    ping_ok(fuzz_daemon)
    no_tracebacks(fuzz_daemon)


@st.composite
def event_command(draw: st.DrawFn) -> str:
    """An ``events`` command whose ``api_cmd`` is a mutated golden query, bytes that are
    not XML or not base64 at all (the original aborts on a malformed ``api_cmd``, §6.4)."""
    api = draw(st.one_of(mutated(QUERIES), st.binary(max_size=20)))
    attrs = {
        "action": draw(st.sampled_from(["subscribe", "subscribe", "unsubscribe",
                                        "unsubscribeall", "ack", "bogus"])),
        "type": draw(st.sampled_from(["INSTANCE_TERMINATED", "QUEUE_CREATED", "NOPE", ""])),
        "api_cmd": draw(st.sampled_from([base64.b64encode(api).decode(), "!!", ""])),
        "object_id": draw(st.sampled_from(["0", "1", "-1", "x", "99999999999999999999"])),
        "send_now": draw(st.sampled_from(["yes", "no", "x"])),
        "event_id": draw(st.sampled_from(["1", "0", "-5", "18446744073709551616", "y"])),
    }
    kept = draw(st.lists(st.sampled_from(sorted(attrs)), unique=True))
    text = " ".join(f'{k}="{attrs[k]}"' for k in kept)
    return f"<event {text}/>"


def test_events_commands_over_websockets(fuzz_daemon: Daemon) -> None:
    """Random ``events`` commands: pushes are proper responses, errors close with 1011, and
    nothing else happens."""

    async def one(commands: list[str]) -> None:
        ws = await ws_login(fuzz_daemon, "events")
        try:
            for command in commands:
                await ws.send(command)
            while True:
                try:
                    check_answer(etree.fromstring(await asyncio.wait_for(ws.recv(), 0.3)))
                except TimeoutError:
                    return
                except ConnectionClosed:
                    assert ws.close_code == 1011, ws.close_code
                    return
        finally:
            await ws.close()

    @FUZZ
    @given(commands=st.lists(event_command(), min_size=1, max_size=3))
    def run(commands: list[str]) -> None:
        asyncio.run(one(commands))

    run()
    ping_ok(fuzz_daemon)
    no_tracebacks(fuzz_daemon)


#: query groups of protocol.md §3.20 and their actions; ``control shutdown`` and the user
#: actions that could lock the fuzzer out are left out on purpose
GROUPS: dict[str, list[str]] = {
    "ping": [""], "status": ["query"], "control": ["reload", "retry", "syncnotifications"],
    "statistics": ["query", "reset"], "queue": ["get", "create", "edit", "delete"],
    "queuepool": ["list"],
    "workflow": ["get", "create", "edit", "delete", "list_notifications",
                 "subscribe_notification", "unsubscribe_notification", "clear_notifications"],
    "workflows": ["list"],
    "instance": ["launch", "query", "wait", "cancel", "killtask", "delete", "tag", "untag",
                 "debugresume", "migrate", "retrytask", "skiptask"],
    "instances": ["list"], "workflow_schedule": ["get", "create", "edit", "delete", "lock",
                                                 "unlock"],
    "workflow_schedules": ["list"], "retry_schedule": ["get", "create", "edit", "delete"],
    "retry_schedules": ["list"], "user": ["get", "create", "list_rights", "grant", "revoke"],
    "users": ["list"], "notification": ["get", "create", "edit", "delete"],
    "notifications": ["list"], "notification_type": ["get", "get_conf", "set_conf"],
    "notification_types": ["list"], "tag": ["get", "create", "edit", "delete"],
    "tags": ["list"], "logs": ["list"], "logsapi": ["list"], "logsnotifications": ["list"],
    "datastore": ["get"], "processmanager": ["tail"], "xpath": ["parse"],
    "storage": ["set", "append", "inc", "dec", "add", "unset", "get", "head", "tail", "list"],
    "launcher": ["get", "create", "edit", "delete"], "launchers": ["list"],
    "display": ["get", "create", "edit", "delete"], "displays": ["list", "listgroups"],
    "filesystem": ["list"], "frobnicate": ["x"],
}
ATTRS = ["id", "name", "type", "content", "concurrency", "scheduler", "dynamic", "workflow_id",
         "schedule", "onfailure", "active", "node", "limit", "offset", "filter_workflow",
         "filter_status", "timeout", "mode", "pid", "evqid", "tag_id", "label", "profile",
         "password", "module", "path", "value", "expression", "key", "xpathfilter",
         "parameters", "group", "comment", "level", "read", "exec", "edit", "kill", "display",
         "order", "item_title", "item_content", "filter_launched_until", "tag", "group_by"]
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "yes", "no", "1", "0", "-1", "default", "fifo", "admin", "x" * 300,
                     "0;61;;;;", "@hourly", "* * * * *", "a|b", "/", "..", "../../etc/passwd",
                     "//*", "count(//*)", "evqGetWorkflowParameter('x')", "1 div 0", "[", "§",
                     base64.b64encode(b"<workflow/>").decode(), "=="]),
    st.text(max_size=30),
)


def _attr(value: str) -> str:
    """An attribute value that keeps the document well formed."""
    cleaned = "".join(c for c in value if c in "\t\n\r" or (" " <= c and c not in "\ufffe\uffff")
                      and not 0xD800 <= ord(c) <= 0xDFFF)
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@st.composite
def generated(draw: st.DrawFn) -> str:
    """A well-formed query on any group and action with random attributes and parameters."""
    group = draw(st.sampled_from(sorted(GROUPS)))
    action = draw(st.sampled_from(GROUPS[group]))
    attrs = {"action": action} if action else {}
    for name in draw(st.lists(st.sampled_from(ATTRS), max_size=6, unique=True)):
        attrs[name] = draw(VALUES)
    body = "".join(f'<parameter name="{_attr(draw(st.text(max_size=8)))}" '
                   f'value="{_attr(draw(VALUES))}"/>'
                   for _ in range(draw(st.integers(0, 2))))
    text = " ".join(f'{k}="{_attr(v)}"' for k, v in attrs.items())
    return f"<{group} {text}>{body}</{group}>"


def test_generated_queries(fuzz_daemon: Daemon) -> None:
    """Well-formed queries on every group: each gets one proper answer and the connection
    stays open."""
    raw = Raw.open(fuzz_daemon, "unix")

    @FUZZ
    @given(query=generated())
    def run(query: str) -> None:
        check_answer(raw.query(query, timeout=15))

    try:
        run()
        assert raw.query("<ping/>").get("status") == "OK"
    finally:
        raw.close()
    ping_ok(fuzz_daemon)
    no_tracebacks(fuzz_daemon)


XPATHS = st.one_of(
    st.sampled_from(["evqGetWorkflowParameter('p')", "evqGetOutput('t')", "evqGetOutput('t')/x",
                     "evqGetParentJob()/@name", "evqGetContext()", "count(//*)", "1 = 1",
                     "'a' != 'b'", "evqGetCurrentJob()/tasks/task", "1 div 0", "@x",
                     "evqGetWorkflowParameter('p') = 'v'", "substring('abc', 2)", "(",
                     "evqWait(", "//task[@status='TERMINATED']", "not(true())"]),
    st.text(alphabet="()[]/@*.,='\"!<>|-+ 0123456789abcdefevqGt:", max_size=25),
)


@st.composite
def job(draw: st.DrawFn, depth: int = 0) -> str:
    attrs = ""
    for name in draw(st.lists(st.sampled_from(["name", "condition", "loop",
                                                "iteration-condition"]), max_size=2,
                              unique=True)):
        value = draw(st.text(alphabet="abc", min_size=1, max_size=3)) if name == "name" \
            else draw(XPATHS)
        attrs += f' {name}="{_attr(value)}"'
    tasks = []
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(["/bin/echo", "/bin/true", "/bin/false", "/nonexistent",
                                     "", "echo"]))
        extra = ""
        for name in draw(st.lists(st.sampled_from(
                ["name", "condition", "loop", "output-method", "parameters-mode", "type",
                 "retry_delay", "retry_times", "retry_retval", "merge-stderr", "wd"]),
                max_size=3, unique=True)):
            if name in ("condition", "loop"):
                value = draw(XPATHS)
            elif name == "output-method":
                value = draw(st.sampled_from(["TEXT", "XML", "JSON", "bogus"]))
            elif name == "parameters-mode":
                value = draw(st.sampled_from(["CMDLINE", "ENV", "x"]))
            elif name == "type":
                value = draw(st.sampled_from(["BINARY", "SCRIPT", "x"]))
            elif name.startswith("retry"):
                value = draw(st.sampled_from(["0", "1", "-1", "x", "2"]))
            else:
                value = draw(st.text(alphabet="ab/.", max_size=4))
            extra += f' {name}="{_attr(value)}"'
        inputs = "".join(
            f'<input><value select="{_attr(draw(XPATHS))}"/></input>'
            if draw(st.booleans()) else f"<input>{_attr(draw(st.text(max_size=5)))}</input>"
            for _ in range(draw(st.integers(0, 2))))
        tasks.append(f'<task path="{path}" queue="default"{extra}>{inputs}</task>')
    sub = ""
    if depth < 2 and draw(st.booleans()):
        sub = f"<subjobs>{draw(job(depth + 1))}</subjobs>"
    return f"<job{attrs}><tasks>{''.join(tasks)}</tasks>{sub}</job>"


@st.composite
def workflow(draw: st.DrawFn) -> tuple[str, list[str]]:
    params = draw(st.lists(st.sampled_from(["p", "q", "r"]), max_size=2, unique=True))
    head = ""
    if params:
        head = "<parameters>" + "".join(f'<parameter name="{p}"/>' for p in params) \
            + "</parameters>"
    if draw(st.booleans()):
        head += (f'<custom-attributes><custom-attribute name="c" '
                 f'select="{_attr(draw(XPATHS))}"/></custom-attributes>')
    jobs = "".join(draw(job()) for _ in range(draw(st.integers(1, 2))))
    text = f"<workflow>{head}<subjobs>{jobs}</subjobs></workflow>"
    if draw(st.integers(0, 4)) == 0:  # and sometimes not even well formed
        data = bytearray(text.encode())
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.sampled_from(TOKENS))
        text = data.decode("utf-8", "replace")
    return text, params


def test_random_workflows(fuzz_daemon: Daemon) -> None:
    """Random definitions through ``workflow create``; those accepted are launched and
    must terminate."""
    counter = iter(range(1 << 30))
    client = fuzz_daemon.client()
    launched: list[int] = []

    @FUZZ
    @given(wf=workflow())
    def run(wf: tuple[str, list[str]]) -> None:
        text, params = wf
        name = f"fz{next(counter)}"
        content = base64.b64encode(text.encode()).decode()
        raw = Raw.open(fuzz_daemon)
        try:
            doc = raw.query(f'<workflow action="create" name="{name}" content="{content}"/>')
            check_answer(doc)
            if doc.get("status") == "OK":
                body = "".join(f'<parameter name="{p}" value="v"/>' for p in params)
                doc = raw.query(f'<instance action="launch" name="{name}">{body}</instance>')
                check_answer(doc)
                assert doc.get("status") == "OK", etree.tostring(doc)
                launched.append(int(doc.get("workflow-instance-id")))
                wait_terminated(client, launched[-1], timeout=20)
        finally:
            raw.close()

    try:
        run()
    finally:
        client.close()
    assert launched  # some definitions were valid: the engine ran them too
    ping_ok(fuzz_daemon)
    no_tracebacks(fuzz_daemon)


CONTEXT = etree.fromstring(
    '<workflow id="1"><parameters><parameter name="p">v</parameter></parameters><subjobs>'
    '<job name="j"><tasks><task name="t" status="TERMINATED"><output>x</output></task>'
    "</tasks></job></subjobs></workflow>")


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(expression=XPATHS)
def test_xpath_expressions(expression: str) -> None:
    """The XPath dialect raises its own error, never anything else."""
    try:
        evaluate(expression, CONTEXT)
    except XPathError:
        pass


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(text=st.one_of(st.text(alphabet="0123456789;,-*/@ ", max_size=30), st.text(max_size=20)))
def test_schedule_strings(text: str) -> None:
    """A schedule string parses, or gives INVALID_SCHEDULE; a parsed one has a next time."""
    try:
        schedule = parse_schedule(text)
    except ApiError as e:
        assert e.code == "INVALID_SCHEDULE"
        return
    assert schedule.next_time(1_700_000_000) > 1_700_000_000


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(lines=st.lists(st.one_of(
    st.tuples(st.sampled_from(sorted(KEYS)), st.sampled_from(["=", " = ", "==", ""]),
              st.one_of(st.text(max_size=12), st.sampled_from(
                  ['"yes"', "'1M'", "{HOME}", "{NOPE", "99999999999999999999", "-1", '"',
                   "12G", "0x10"]))).map("".join),
    st.text(max_size=30)), max_size=6))
def test_config_files(lines: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """A configuration file loads (every key converts) or gives one ConfigError."""
    path = tmp_path_factory.mktemp("cfg") / "evqueue.conf"
    path.write_bytes("\n".join(lines).encode())
    try:
        config = Config.load(path, environ={"HOME": "/tmp"})
        for name in KEYS:
            config[name]
    except ConfigError:
        pass
