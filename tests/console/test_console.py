"""The built-in web console, end to end: the daemon serves it on the websocket port and headless
Chromium uses it like a person would (log in, launch from the form, watch the dashboard change
without reloading, read a task's stdout, cancel, kill, retry, skip, relaunch, filter the
history, disable a schedule; a user without rights sees errors, not crashes). Screenshots of
every page go to tests/artifacts/console/ (not committed). Plain HTTP outside the console, or
with the console disabled, gets the original's 403.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Page
from evqtest import CHROMIUM, create_workflow, wait_terminated

ARTIFACTS = Path(__file__).parent.parent / "artifacts" / "console"

HELLO = """<workflow>
  <parameters><parameter name="greeting"/></parameters>
  <subjobs><job name="say"><tasks>
    <task name="echo" path="/bin/echo" queue="default">
      <input name="message"><value select="evqGetWorkflowParameter('greeting')"/></input>
    </task>
    <task name="list" path="/bin/echo" queue="default" output-method="XML">
      <input>&lt;list&gt;&lt;item n="1"&gt;a&lt;/item&gt;&lt;/list&gt;</input>
    </task></tasks>
    <subjobs><job name="pause"><tasks>
      <task name="pause" path="/bin/sleep" queue="default"><input>1.5</input></task>
    </tasks></job></subjobs>
  </job></subjobs>
</workflow>"""

GUARDED = """<workflow><subjobs><job name="first"><tasks>
    <task name="wait" path="/bin/sleep" queue="default"><input>2</input></task></tasks>
    <subjobs><job name="then"><tasks>
      <task name="never" path="/bin/echo" queue="default"><input>not run</input></task>
    </tasks></job></subjobs>
  </job></subjobs></workflow>"""

#: fails once (stderr "first try"), then succeeds; the retry waits 10 minutes unless asked
FLAKY = """<workflow><subjobs><job><tasks>
  <task name="flaky" path="/bin/sh" queue="default" retry_delay="600" retry_times="1">
    <input>-c</input>
    <input>test -e {mark} || {{ touch {mark}; echo first try &gt;&amp;2; exit 1; }}; echo ok</input>
  </task></tasks></job></subjobs></workflow>"""

#: a failing task waiting for its retry, then a job that only runs once it is skipped
BLOCKED = """<workflow><subjobs><job><tasks>
    <task name="broken" path="/bin/false" queue="default" retry_delay="600" retry_times="1"/>
  </tasks><subjobs><job><tasks>
    <task name="after" path="/bin/echo" queue="default"><input>went on</input></task>
  </tasks></job></subjobs></job></subjobs></workflow>"""

LONG = """<workflow><subjobs><job><tasks>
  <task name="long" path="/bin/sleep" queue="default"><input>60</input></task>
</tasks></job></subjobs></workflow>"""

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed (make test installs it when run as root)")


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_console_files_and_403(daemon):
    status, headers, body = _get(daemon.ws_port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/console/app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = _get(daemon.ws_port, "/console/app.js?v=1")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"import" in body
    for path in ("/index.html", "/console/", "/console/../evq.js", "/console/nope.js", "/x"):
        assert _get(daemon.ws_port, path)[::2] == (403, b"Forbidden"), path


def test_console_disabled_by_config(make_daemon):
    d = make_daemon(**{"ws.console.enable": "no"})
    for path in ("/", "/console/app.js"):
        assert _get(d.ws_port, path)[::2] == (403, b"Forbidden")


@pytest.fixture
def page() -> Iterator[Page]:
    p = Page()
    yield p
    p.close()


def _login(page: Page, port: int, user: str, password: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login button[type=submit]")
    page.wait("!document.getElementById('top').hidden")


def _shot(page: Page, name: str) -> None:
    page.screenshot(ARTIFACTS / f"{name}.png")


def _check_sha1_fallback(page: Page) -> None:
    """The plain-JavaScript SHA-1/HMAC used where crypto.subtle is missing (plain http:// from
    another host) agrees with Python's, on protocol.md §2.1's vectors and multi-block input."""
    key = hashlib.sha1(b"admin").digest()
    long = bytes(range(256)) * 3
    cases = [(key, bytes.fromhex("00" * 19 + "ff")), (long, long[:100]), (b"", b"")]
    js = ("import('/console/sha1.js').then(m => { const u = (s) => new Uint8Array("
          "s.match(/../g)?.map(h => parseInt(h, 16)) || []); const x = (b) => [...b].map("
          "v => v.toString(16).padStart(2, '0')).join(''); return %s.map(([k, m2]) => "
          "[x(m.sha1(u(k))), x(m.hmacSha1(u(k), u(m2)))]); })")
    got = page.eval(js % json.dumps([[k.hex(), m.hex()] for k, m in cases]))
    assert got == [[hashlib.sha1(k).hexdigest(), hmac.new(k, m, "sha1").hexdigest()]
                   for k, m in cases]
    assert got[0][1] == "605f419d26b841224d794520f3dd139dcd9dc11b"


@needs_chromium
def test_console_end_to_end(daemon, page):
    with daemon.client() as c:
        create_workflow(c, "hello", HELLO)
        create_workflow(c, "guarded", GUARDED)
        create_workflow(c, "long", LONG)
        c.query('<workflow_schedule action="create" workflow_id="1" node="localhost" '
                'schedule="0;30;3;0;0;" onfailure="CONTINUE" active="yes" comment="nightly">'
                '<parameter name="greeting" value="scheduled" /></workflow_schedule>')

    page.goto(f"http://127.0.0.1:{daemon.ws_port}/")
    page.wait("!document.getElementById('login').hidden")
    _shot(page, "login")
    page.fill("#login-user", "admin")
    page.fill("#login-password", "wrong")
    page.click("#login button[type=submit]")
    assert "Invalid authentication" in page.text("#login-error")
    _login(page, daemon.ws_port, "admin", "admin")
    _check_sha1_fallback(page)
    page.wait("!!document.querySelector('#queues tr[data-queue=default]')")
    _shot(page, "dashboard-idle")

    # launch from the form built from the workflow's parameters
    page.eval("location.hash = '#/workflows'")
    page.click("button[data-open-launch=hello]")
    page.fill("form[data-launch=hello] input[data-parameter=greeting]", "hi from the console")
    page.fill("form[data-launch=hello] input[name=comment]", "e2e")
    _shot(page, "workflows")
    page.click("form[data-launch=hello] button[type=submit]")
    iid = page.wait("document.querySelector('[data-launched]')?.dataset.launched")

    # the dashboard follows it from EXECUTING to TERMINATED without reloading
    page.eval("location.hash = '#/dashboard'; window.notReloaded = true")
    row = f"#running tr[data-instance-id='{iid}']"
    page.wait(f"document.querySelector(\"{row}\")?.dataset.status === 'EXECUTING'")
    page.wait("document.querySelector('#queues tr[data-queue=default] [role=progressbar]')"
              "?.getAttribute('aria-valuenow') === '1'")
    _shot(page, "dashboard-running")
    done = f"#recent tr[data-instance-id='{iid}']"
    page.wait(f"document.querySelector(\"{done}\")?.dataset.status === 'TERMINATED'")
    assert page.eval(f"!document.querySelector(\"{row}\") && window.notReloaded")
    assert "TERMINATED" in page.text(f"{done} .badge")

    # open it and read the task's stdout
    page.click(f"{done} a")
    page.wait("document.querySelector('li.task[data-task=echo] .badge')"
              "?.dataset.status === 'TERMINATED'")
    page.click("li.task[data-task=echo] summary")
    assert page.text("li.task[data-task=echo] pre.stdout") == "hi from the console\n"
    assert page.text("li.task[data-task=echo] td code") == "hi from the console"
    page.click("li.task[data-task=list] summary")
    assert page.text("li.task[data-task=list] pre.stdout.xml") == (
        '<list>\n  <item n="1">a</item>\n</list>\n')
    _shot(page, "instance")

    # cancel a running instance: its running task ends, the next job never starts
    with daemon.client() as c:
        guarded = c.query('<instance action="launch" name="guarded" />').get(
            "workflow-instance-id")
    page.eval(f"location.hash = '#/instance/{guarded}'")
    page.click("button[data-action=cancel]")
    page.wait("document.querySelector('h1 .badge')?.dataset.status === 'TERMINATED'", 10)
    _shot(page, "instance-cancelled")
    with daemon.client() as c:
        doc = wait_terminated(c, int(guarded))
    assert doc.find(".//task[@name='never']/output") is None

    # kill a task of a running instance
    with daemon.client() as c:
        long = c.query('<instance action="launch" name="long" />').get("workflow-instance-id")
    page.eval(f"location.hash = '#/instance/{long}'")
    page.click("li.task[data-task=long] button[data-action=kill]")
    page.wait("document.querySelector('h1 .badge')?.dataset.status === 'TERMINATED'", 10)
    assert page.eval("document.querySelector('li.task[data-task=long] .badge').className"
                     ".includes('error')")
    _shot(page, "instance-killed")

    # history with a filter and paging information
    page.eval("location.hash = '#/instances'")
    page.wait("document.querySelectorAll('select[name=filter_workflow] option').length > 3")
    page.eval("document.querySelector('select[name=filter_workflow]').value = 'hello'")
    page.click("form.filters button[type=submit]")
    page.wait("location.hash.includes('filter_workflow=hello')")
    assert page.wait("document.querySelector('[data-rows]')?.dataset.rows") == "1"
    assert page.eval("[...document.querySelectorAll('table.instances tbody tr')]"
                     ".map(r => r.dataset.instanceId)") == [iid]
    _shot(page, "instances")

    # schedules: next run, disable
    page.eval("location.hash = '#/schedules'")
    page.wait("document.querySelector(\"tr[data-schedule-id='1'] .next-run\")"
              "?.textContent.endsWith('03:30:00')")
    _shot(page, "schedules")
    page.click("button[data-toggle-schedule='1']")
    page.wait("document.querySelector(\"tr[data-schedule-id='1']\")?.dataset.active === 'no'")
    with daemon.client() as c:
        assert c.query('<workflow_schedule action="get" id="1" />')[0].get("active") == "0"

    # statistics: this hour's three instances
    page.eval("location.hash = '#/statistics'")
    assert page.wait("[...document.querySelectorAll('.chart rect[data-count]')]"
                     ".reduce((a, r) => a + Number(r.dataset.count), 0)") == 3
    _shot(page, "statistics")
    assert page.errors == []


@needs_chromium
def test_console_user_without_rights(daemon, page):
    """bob may read one workflow, not launch it nor kill its instances; the other one does not
    exist for him."""
    with daemon.client() as c:
        create_workflow(c, "secret", LONG)
        shared = create_workflow(c, "shared", LONG)
        bob = c.query('<user action="create" name="bob" password="bob" profile="USER" />').get(
            "user-id")
        c.query(f'<user action="grant" id="{bob}" workflow_id="{shared}" read="yes" exec="no" '
                'edit="no" kill="no" />')
        iid = c.query('<instance action="launch" name="shared" />').get("workflow-instance-id")
    _login(page, daemon.ws_port, "bob", "bob")
    assert page.eval("document.querySelector('a[href=\"#/schedules\"]').hidden")
    page.eval("location.hash = '#/workflows'")
    page.wait("!!document.querySelector('li[data-workflow=shared]')")
    assert page.eval("[...document.querySelectorAll('li[data-workflow]')]"
                     ".map(e => e.dataset.workflow)") == ["shared"]
    page.click("button[data-open-launch=shared]")
    page.click("form[data-launch=shared] button[type=submit]")
    assert "INSUFFICIENT_RIGHTS" in page.text("#notices [role=alert]")
    page.eval(f"location.hash = '#/instance/{iid}'")
    page.click("button[data-action=cancel]")
    page.wait("document.querySelectorAll('#notices [role=alert]').length === 2")
    assert page.eval("document.querySelector('.page h1 .badge').dataset.status") == "EXECUTING"
    page.eval("location.hash = '#/schedules'")
    assert "INSUFFICIENT_RIGHTS" in page.text(".page-schedules [role=alert]")
    _shot(page, "no-rights")
    assert page.errors == []


def _task_status(name: str) -> str:
    return f"document.querySelector('li.task[data-task={name}] .badge')?.dataset.status"


BIG = """<workflow><subjobs><job><tasks>
  <task name="big" path="/usr/bin/seq" queue="default"><input>1</input><input>500</input></task>
</tasks></job></subjobs></workflow>"""


@needs_chromium
def test_console_task_actions(make_daemon, page):
    """Retry now, skip and relaunch from the instance view; an output too large for the
    instance document is loaded from the (gzipped) datastore."""
    daemon = make_daemon(**{"datastore.dom.maxsize": "1K"})
    with daemon.client() as c:
        create_workflow(c, "big", BIG)
        big = c.query('<instance action="launch" name="big" />').get("workflow-instance-id")
        create_workflow(c, "flaky", FLAKY.format(mark=os.path.join(daemon.root, "mark")))
        create_workflow(c, "blocked", BLOCKED)
        flaky = c.query('<instance action="launch" name="flaky" />').get("workflow-instance-id")
        blocked = c.query('<instance action="launch" name="blocked" />').get(
            "workflow-instance-id")
    _login(page, daemon.ws_port, "admin", "admin")

    page.eval(f"location.hash = '#/instance/{big}'")
    page.click("li.task[data-task=big] summary")
    page.click("li.task[data-task=big] .stream button")
    expected = "".join(f"{i}\n" for i in range(1, 501))
    assert page.wait("document.querySelector('li.task[data-task=big] pre.stdout')"
                     "?.textContent") == expected

    page.eval(f"location.hash = '#/instance/{flaky}'")
    page.wait("document.querySelector('li.task[data-task=flaky] .badge')"
              "?.classList.contains('waiting')")
    page.click("li.task[data-task=flaky] summary")
    _shot(page, "instance-retry-pending")
    page.click("li.task[data-task=flaky] button[data-action=retry]")
    page.wait("document.querySelector('h1 .badge')?.dataset.status === 'TERMINATED'")
    assert page.eval("document.querySelectorAll('li.task[data-task=flaky] .attempt').length") == 2
    assert page.text("li.task[data-task=flaky] [data-attempt='1'] pre.stderr") == "first try\n"
    assert page.text("li.task[data-task=flaky] [data-attempt='2'] pre.stdout") == "ok\n"
    assert "with errors" not in page.text("h1 .badge")
    _shot(page, "instance-retried")

    page.eval(f"location.hash = '#/instance/{blocked}'")
    page.wait(_task_status("broken") + " === 'TERMINATED'")
    page.click("li.task[data-task=broken] button[data-action=skip]")
    page.wait(_task_status("broken") + " === 'SKIPPED'")
    page.wait("document.querySelector('h1 .badge')?.dataset.status === 'TERMINATED'")
    assert page.eval(_task_status("after")) == "TERMINATED"

    page.click("button[data-action=relaunch]")
    page.wait(f"location.hash.startsWith('#/instance/')"
              f" && location.hash !== '#/instance/{blocked}'")
    relaunched = page.eval("location.hash.split('/').pop()")
    with daemon.client() as c:
        doc = c.query(f'<instance action="query" id="{relaunched}" />')[0]
    assert doc.get("name") == "blocked"
    page.wait(f"document.querySelector('.page h1')?.textContent"
              f".startsWith('Instance {relaunched}: blocked')")
    assert page.errors == []
