"""Remote tasks over SSH (workflow.md §4.10) against a real sshd on 127.0.0.1.

The "remote" host is this machine, so a remote task's processes are visible to ``pgrep``.
"""

from __future__ import annotations

import getpass
import subprocess
import time
import uuid
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from evqtest import Daemon, create_workflow, free_ports, wait_terminated
from lxml import etree
from sshtest import Keys, Sshd, running_ssh_daemon

from evqueue.client import Client
from evqueue.process.remote import REMOTE_LOST, RemoteSpec, remote_command
from evqueue.process.spawner import KILLTASK_NOTE
from evqueue.process.ssh import MAX_CONNECTIONS

HYPHENATED = {"output_method", "merge_stderr", "parameters_mode"}


def launch(c: Client, xml: str, **attrs: str) -> int:
    name = f"w{uuid.uuid4().hex[:12]}"
    create_workflow(c, name, xml)
    extra = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    return int(c.query(f'<instance action="launch" name="{name}"{extra} />')
               .get("workflow-instance-id"))


def run(d: Daemon, xml: str, timeout: float = 30, **attrs: str) -> etree._Element:
    c = d.client()
    return wait_terminated(c, launch(c, xml, **attrs), timeout)


def tasks(doc: etree._Element) -> dict[str, etree._Element]:
    return {t.get("name"): t for t in doc.iter("task")}


def out(task: etree._Element, kind: str = "output") -> str:
    node = task.findall(kind)[-1]
    return "".join(node.itertext())


def sh(name: str, script: str, host: str = "", **attrs: str) -> str:
    """A task running ``/bin/sh -c script`` (remote when ``host`` is given)."""
    if host:
        attrs["host"] = host
    extra = "".join(f" {k.replace('_', '-') if k in HYPHENATED else k}={quoteattr(v)}"
                    for k, v in attrs.items())
    return (f'<task name="{name}" path="/bin/sh" queue="wide"{extra}><input>-c</input>'
            f"<input>{escape(script)}</input></task>")


def workflow(*tasks_xml: str, subjobs: str = "") -> str:
    sub = f"<subjobs>{subjobs}</subjobs>" if subjobs else ""
    return (f"<workflow><subjobs><job><tasks>{''.join(tasks_xml)}</tasks>{sub}</job>"
            "</subjobs></workflow>")


def pgrep(pattern: str) -> list[str]:
    """pids of the processes whose command line matches (anchor it: ``sh -c`` command lines
    contain their children's)."""
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return done.stdout.split()


def test_local_remote_local_xml(daemon: Daemon, sshd: Sshd) -> None:
    """Local XML → remote SCRIPT (stdin xml + arguments) emitting XML → local, via XPath."""
    gen = sh("gen", "echo \"<items><item>a b</item><item>c'd</item></items>\"",
             output_method="XML")
    remote = (
        f'<task name="remote" type="SCRIPT" host="{sshd.host}" queue="wide" '
        'output-method="XML">'
        "<input><value select=\"evqGetOutput('gen')/items/item[1]\"/></input>"
        "<input>x y</input>"
        "<stdin><copy select=\"evqGetOutput('gen')/items\"/></stdin>"
        "<script>#!/bin/sh\nprintf '&lt;remote first=\"%s\" n=\"%s\"&gt;' \"$1\" \"$#\"\n"
        "sed 's/item/thing/g'\necho '&lt;/remote&gt;'\n</script></task>")
    last = ('<task name="last" path="/bin/echo" queue="wide">'
            "<input><value select=\"evqGetOutput('remote')/remote/stdin/things/thing[2]\"/></input>"
            "<input><value select=\"evqGetOutput('remote')/remote/@first\"/></input>"
            "<input><value select=\"evqGetOutput('remote')/remote/@n\"/></input></task>")
    doc = run(daemon, workflow(gen, subjobs=(
        f"<job><tasks>{remote}</tasks><subjobs><job><tasks>{last}</tasks></job></subjobs>"
        "</job>")))
    t = tasks(doc)
    assert doc.get("errors") == "0", etree.tostring(doc).decode()
    assert t["remote"].get("retval") == "0" and t["remote"].get("host") == sshd.host
    assert out(t["last"]) == "c'd a b 2\n", etree.tostring(t["remote"]).decode()


def test_inputs_env_wd_merge(daemon: Daemon, sshd: Sshd) -> None:
    """ENV parameters (shell-quoted through ``env``), word-expanded path, wd, merge-stderr,
    stdin text, exit codes as signed chars, and a failing wd."""
    tricky = "it's \"q\" $HOME `x` \\ \n;|*"
    env_task = (
        f'<task name="env" path="/bin/sh -c \'printf &quot;%s|%s|%s|%s&quot; '
        f'&quot;$PWD&quot; &quot;$A&quot; &quot;$EVQUEUE_ENV&quot; &quot;$(cat)&quot;; '
        f'echo err &gt;&amp;2; exit 200\'" host="{sshd.host}" queue="wide" wd="/tmp" '
        'parameters-mode="ENV" merge-stderr="yes">'
        f'<input name="A">{escape(tricky)}</input><stdin>in put</stdin></task>')
    doc = run(daemon, workflow(
        env_task,
        sh("args", 'printf "[%s]" "$@"', sshd.host).replace(
            "</task>", f"<input>$0</input><input>{escape(tricky)}</input><input></input></task>"),
        sh("badwd", "pwd", sshd.host, wd="/nonexistent/dir")))
    t = tasks(doc)
    assert out(t["env"]) == f"/tmp|{tricky}|true|in puterr\n"
    assert t["env"].get("retval") == "-56"  # exit 200 as a signed char
    assert out(t["args"]) == f"[{tricky}][]"
    assert t["badwd"].get("retval") == "-1"
    assert out(t["badwd"], "stderr") == (
        "evq_monitor: Unable to change working directory to '/nonexistent/dir'\n")


def test_instance_host_and_user(daemon: Daemon, sshd: Sshd) -> None:
    """The launch's host/user apply to every task without its own host."""
    doc = run(daemon, workflow(sh("who", "id -un; echo $SSH_CONNECTION | cut -d' ' -f3")),
              host=sshd.host, user=getpass.getuser())
    t = tasks(doc)["who"]
    assert out(t) == f"{getpass.getuser()}\n127.0.0.1\n"  # $SSH_CONNECTION: it came over SSH


def test_twenty_concurrent_tasks_share_one_connection(tmp_root: Path, keys: Keys) -> None:
    server = Sshd(tmp_root / "sshd20", keys)
    try:
        with running_ssh_daemon(tmp_root / "d20", keys) as d:
            started = time.monotonic()
            doc = run(d, workflow(*(sh(f"t{i}", f"sleep 1; echo {i}", server.host)
                                    for i in range(20))))
            elapsed = time.monotonic() - started
            t = tasks(doc)
            assert [out(t[f"t{i}"]) for i in range(20)] == [f"{i}\n" for i in range(20)]
            assert elapsed < 15, elapsed  # in parallel (sequentially: 20 s and more)
            assert server.connections() == 1, server.log()
    finally:
        server.stop()


def test_more_connections_when_sessions_are_limited(tmp_root: Path, keys: Keys) -> None:
    """OpenSSH's MaxSessions refuses more channels on a connection: another one is opened."""
    server = Sshd(tmp_root / "sshd3", keys, max_sessions=3)
    try:
        with running_ssh_daemon(tmp_root / "d3", keys) as d:
            doc = run(d, workflow(*(sh(f"t{i}", f"sleep 1; echo {i}", server.host)
                                    for i in range(6))))
            assert sorted(out(t) for t in doc.iter("task")) == [f"{i}\n" for i in range(6)], (
                etree.tostring(doc).decode())
            assert 2 <= server.connections() <= MAX_CONNECTIONS, server.log()
    finally:
        server.stop()


def test_kill_remote_sleep(daemon: Daemon, sshd: Sshd) -> None:
    """killtask signals the remote process group: the task and its child are gone."""
    marker = f"{time.time_ns() % 10**6}"
    c = daemon.client()
    iid = launch(c, workflow(sh("k", f"sleep 31{marker} & sleep 32{marker}; echo never",
                                sshd.host)))
    deadline = time.monotonic() + 10
    while True:
        task = c.query(f'<instance action="query" id="{iid}" />').find(".//task")
        if task.get("status") == "EXECUTING" and len(pgrep(f"^sleep 3[12]{marker}$")) == 2:
            break
        assert time.monotonic() < deadline, "remote sleeps did not start"
        time.sleep(0.05)
    for pid in pgrep(f"^sleep 3[12]{marker}$"):  # the task's pid is their process group
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[2]) == int(task.get("pid"))
    c.query(f'<instance action="killtask" id="{iid}" pid="{task.get("pid")}" />')
    t = tasks(wait_terminated(c, iid, 10))["k"]
    assert t.get("retval") == "-1"
    assert out(t, "stderr") == KILLTASK_NOTE and out(t) == ""
    assert pgrep(f"^sleep 3[12]{marker}$") == []


def test_unreachable_host_is_a_readable_error_and_retried(daemon: Daemon) -> None:
    port = free_ports(1)[0]  # nothing listens there
    doc = run(daemon, workflow(sh("u", "true", f"127.0.0.1:{port}", retry_times="1",
                                  retry_delay="1")))
    t = tasks(doc)["u"]
    assert [o.get("retval") for o in t.findall("output")] == ["-1", "-1"]  # retried
    where = f"{getpass.getuser()}@127.0.0.1:{port}"
    assert out(t, "stderr") == (f"evqueue: remote task on {where}: cannot connect to {where}: "
                                "Connection refused (3 attempts)\n")


def test_bad_key_and_unknown_host_are_readable_errors(tmp_root: Path, keys: Keys,
                                                      sshd: Sshd) -> None:
    other = Keys(tmp_root / "otherkeys")  # a key sshd does not accept, empty known_hosts
    stranger = Sshd(tmp_root / "stranger", keys, known=False)
    try:
        with running_ssh_daemon(tmp_root / "dbad", keys, wide=5, **{
                "processmanager.ssh.key": str(other.client_key)}) as bad:
            doc = run(bad, workflow(sh("auth", "true", sshd.host),
                                    sh("hostkey", "true", stranger.host)))
            t = tasks(doc)
            assert t["auth"].get("retval") == "-1"
            assert "authentication failed for " in out(t["auth"], "stderr")
            assert f"(key {other.client_key})" in out(t["auth"], "stderr")
            assert t["hostkey"].get("retval") == "-1"
            assert (f"host key of [127.0.0.1]:{stranger.port} is unknown"
                    in out(t["hostkey"], "stderr"))
            assert stranger.connections() == 0
    finally:
        stranger.stop()


def test_restart_kills_remote_tasks_then_retries_them(tmp_root: Path, keys: Keys,
                                                      sshd: Sshd) -> None:
    """Remote tasks do not survive a restart: stopped with the daemon, then failed with a
    clear error and retried per their retry policy."""
    mark = tmp_root / "restart_mark"
    marker = f"{time.time_ns() % 10**6}"
    with running_ssh_daemon(tmp_root / "drestart", keys, wide=5) as d:
        c = d.client()
        iid = launch(c, workflow(sh("r", f"test -e {mark} || {{ touch {mark}; "
                                         f"sleep 33{marker}; }}", sshd.host,
                                    retry_times="1", retry_delay="1")))
        deadline = time.monotonic() + 10
        while not pgrep(f"^sleep 33{marker}$"):
            assert time.monotonic() < deadline, "remote sleep did not start"
            time.sleep(0.05)
        d.stop()
        assert pgrep(f"^sleep 33{marker}$") == []  # killed with the daemon: no orphan
        d.start()
        t = tasks(wait_terminated(d.client(), iid, 20))["r"]
        assert [o.get("retval") for o in t.findall("output")] == ["-1", "0"]
        assert "".join(t.find("stderr").itertext()) == (
            f"Task process was lost while the engine was down{REMOTE_LOST}")


def test_remote_command_quotes_every_word() -> None:
    spec = RemoteSpec(tid=1, host="h", user=None, argv=["/bin/p q", "a'b"],
                      env={"K": "$(x)"}, cwd="/w d")
    assert remote_command(spec, True) == (
        "cd '/w d' 2>/dev/null || { echo 'evq_monitor: Unable to change working directory "
        "to '\"'\"'/w d'\"'\"'' >&2; exit 255; }; echo $$; "
        "exec env EVQUEUE_ENV=true EVQUEUE_IPC_QID=0 'K=$(x)' '/bin/p q' 'a'\"'\"'b'")
