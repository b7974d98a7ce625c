"""Spawner + forker with real processes: execution, capture, kill, restarts, adoption."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from proctest import Exits, Node, is_dead, wait_until

from evqueue.process.forker import LOST_MESSAGE, LOST_NOTE
from evqueue.process.outputs import TRUNCATED
from evqueue.process.spawner import KILLTASK_NOTE, Spawner, SpawnError, TaskSpec

SH = "/bin/sh"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(tid: int, script: str, **kw: object) -> TaskSpec:
    return TaskSpec(tid, [SH, "-c", script], **kw)  # type: ignore[arg-type]


async def run(sp, exits: Exits, spec: TaskSpec, max_size: int = 1 << 26):
    pid = await sp.spawn(spec)
    rec = await exits.get()
    assert rec.tid == spec.tid and rec.pid == pid
    out = await sp.read_outputs(spec.tid, max_size)
    sp.ack(spec.tid)
    return rec, out


async def test_exit_codes_and_signals(node: Node) -> None:
    sp, exits = await node.start()
    cases = {
        1: ("exit 0", 0),
        2: ("exit 3", 3),
        3: ("exit 130", -126),  # signed char, as the original
        4: ("exit 255", -1),
        5: ("kill -TERM $$", -1),
    }
    pids = {tid: await sp.spawn(sh(tid, script)) for tid, (script, _) in cases.items()}
    recs = {r.tid: r for r in await exits.collect(len(cases))}
    for tid, (_, retval) in cases.items():
        rec = recs[tid]
        assert (rec.retval, rec.pid, rec.lost) == (retval, pids[tid], None)
        assert rec.start <= rec.end
    assert os.WIFSIGNALED(recs[5].status) and os.WTERMSIG(recs[5].status) == signal.SIGTERM
    assert os.WEXITSTATUS(recs[3].status) == 130
    for tid in cases:
        sp.ack(tid)


async def test_capture_stdout_stderr_and_log_fd(node: Node) -> None:
    sp, exits = await node.start()
    script = (
        "echo out; echo err >&2; echo '%40' >&3; echo '%250' >&3; echo '%%lit' >&3;"
        "echo plain >&3; printf 'partial' >&3"
    )
    rec, out = await run(sp, exits, sh(1, script))
    assert rec.retval == 0
    assert out.stdout == b"out\n" and out.stderr == b"err\n"
    assert out.log == b"%lit\nplain\npartial\n"
    await wait_until(lambda: len(exits.progress) == 2)
    assert exits.progress == [(1, 40), (1, 100)]
    assert not os.listdir(node.logs_dir)  # read_outputs deletes by default


async def test_log_close_line_stops_reading(node: Node) -> None:
    sp, exits = await node.start()
    script = "echo a >&3; printf '%s\\n' '\\close' b >&3"
    _, out = await run(sp, exits, sh(1, script))
    assert out.log == b"a\n"


async def test_large_output_and_truncation(node: Node) -> None:
    sp, exits = await node.start()
    size = 20 * 1000 * 1000
    await sp.spawn(sh(1, f"head -c {size} /dev/zero; head -c 20000 /dev/zero >&2"))
    rec = await exits.get()
    assert rec.retval == 0
    full = await sp.read_outputs(1, 50 * 1024 * 1024, delete=False)
    assert full.stdout == bytes(size) and len(full.stderr) == 20000
    cut = await sp.read_outputs(1, 10 * 1024)
    assert cut.stdout == bytes(10240) + TRUNCATED
    assert len(cut.stderr) == 10255 and cut.stderr.endswith(TRUNCATED)
    none = await sp.read_outputs(1, 1024)  # deleted by the previous read
    assert none.stdout is None and none.stderr == b""


async def test_merge_stderr(node: Node) -> None:
    sp, exits = await node.start()
    _, out = await run(sp, exits, sh(1, "echo out; echo err >&2", merge_stderr=True))
    assert out.stdout == b"out\nerr\n" and out.stderr == b""


async def test_stdin(node: Node) -> None:
    sp, exits = await node.start()
    _, out = await run(sp, exits, TaskSpec(1, ["/bin/cat"], stdin="héllo\n"))
    assert out.stdout == "héllo\n".encode()
    _, out = await run(sp, exits, TaskSpec(2, ["/bin/cat"]))
    assert out.stdout == b""  # no stdin: end of file at once
    big = bytes(range(256)) * 8192  # 2 MiB, not UTF-8: more than a pipe holds
    _, out = await run(sp, exits, TaskSpec(3, ["/bin/cat"], stdin=big))
    assert out.stdout == big
    rec, _ = await run(sp, exits, sh(4, "exec 0<&-; sleep 0.1", stdin=big))
    assert rec.retval == 0  # a task that does not read its stdin blocks nobody


async def test_environment(node: Node) -> None:
    sp, exits = await node.start(env={"BASE": "1", "PATH": "/usr/bin:/bin"})
    _, out = await run(sp, exits, TaskSpec(1, ["/usr/bin/env"], env={"FOO": "a b", "BASE": "2"}))
    env = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())
    assert env["EVQUEUE_ENV"] == "true" and env["EVQUEUE_IPC_QID"] == "0"
    assert env["FOO"] == "a b" and env["BASE"] == "2"
    assert "HOME" not in env  # only the given base environment is inherited
    _, out = await run(sp, exits, TaskSpec(2, ["/usr/bin/env"]))
    assert b"BASE=1\n" in out.stdout and b"FOO" not in out.stdout


async def test_working_directory(node: Node, tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    sp, exits = await node.start(cwd=str(tmp_path))
    _, out = await run(sp, exits, TaskSpec(1, ["/bin/pwd"]))
    assert out.stdout == f"{tmp_path}\n".encode()
    _, out = await run(sp, exits, TaskSpec(2, ["/bin/pwd"], cwd="sub"))
    assert out.stdout == f"{tmp_path}/sub\n".encode()
    _, out = await run(sp, exits, TaskSpec(3, ["/bin/pwd"], cwd="/"))
    assert out.stdout == b"/\n"
    rec, out = await run(sp, exits, TaskSpec(4, ["/bin/pwd"], cwd="/nonexistent"))
    assert rec.retval == -1 and rec.pid == 0
    assert out.stderr == b"evq_monitor: Unable to change working directory to '/nonexistent'\n"


async def test_exec_failure(node: Node) -> None:
    sp, exits = await node.start()
    pid = await sp.spawn(TaskSpec(1, ["/nonexistent/bin", "x"]))
    rec = await exits.get()
    assert pid == 0 and (rec.retval, rec.status) == (-1, None)
    out = await sp.read_outputs(1, 1 << 20)
    assert out.stdout == b""
    assert out.stderr == (
        b"Could not execute process: '/nonexistent/bin', execv() got error 'No such file or "
        b"directory'evq_monitor: Unable to execute command '/nonexistent/bin', execv() "
        b"returned error\n"
    )


async def test_kill_reaches_the_process_group(node: Node) -> None:
    sp, exits = await node.start()
    await sp.spawn(sh(1, "sleep 30 & echo $!; wait"))
    assert await wait_until(lambda: sp.tail(1, "stdout", 100).endswith(b"\n"))
    child = int(sp.tail(1, "stdout", 100))
    assert not is_dead(child)
    assert await sp.kill(1, note=KILLTASK_NOTE) is True
    rec = await exits.get()
    assert rec.retval == -1 and os.WTERMSIG(rec.status) == signal.SIGKILL
    assert await wait_until(lambda: is_dead(child))
    out = await sp.read_outputs(1, 1 << 20)
    assert out.stderr == KILLTASK_NOTE.encode()
    sp.ack(1)
    assert await sp.kill(1) is False  # not running any more
    assert await sp.kill(99, signal.SIGTERM) is False
    with pytest.raises(ValueError):
        await sp.kill(1, 12345)


async def test_tail(node: Node) -> None:
    sp, exits = await node.start()
    await sp.spawn(sh(1, "printf abcdef; printf xyz >&2; sleep 30"))
    assert await wait_until(lambda: sp.tail(1, "stdout", 10) == b"abcdef")
    assert sp.tail(1, "stdout", 2) == b"ef" and sp.tail(1, "stderr", 100) == b"xyz"
    assert sp.tail(1, "log", 100) == b""
    with pytest.raises(ValueError, match="Unknown log type : bad"):
        sp.tail(1, "bad", 10)
    with pytest.raises(OSError):
        sp.tail(2, "stdout", 10)
    await sp.kill(1)
    await exits.get()
    sp.ack(1)


async def test_busy_tid_and_bad_requests(node: Node) -> None:
    sp, exits = await node.start()
    await sp.spawn(sh(1, "sleep 0.2"))
    with pytest.raises(SpawnError, match="running or has an unacknowledged exit"):
        await sp.spawn(sh(1, "true"))
    await exits.get()
    with pytest.raises(SpawnError, match="unacknowledged"):
        await sp.spawn(sh(1, "true"))
    sp.ack(1)
    assert await sp.spawn(sh(1, "true")) > 0
    await exits.get()
    sp.ack(1)
    with pytest.raises(SpawnError, match="argv"):
        await sp.spawn(TaskSpec(2, []))
    with pytest.raises(SpawnError, match="argv"):
        await sp.spawn(TaskSpec(2, [1, 2]))  # type: ignore[list-item]
    # garbage on the socket from a stranger: the forker drops that connection and carries on
    reader, writer = await asyncio.open_unix_connection(node.socket)
    writer.write(b"this is not json\n")
    assert b'"bye"' in await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert await sp.spawn(sh(3, "exit 7")) > 0
    assert (await exits.get()).retval == 7


async def test_disconnected_exits_are_journaled_and_replayed_once(node: Node) -> None:
    sp1, exits1 = await node.start()
    for tid in range(1, 6):
        await sp1.spawn(sh(tid, f"sleep 0.2; exit {tid}"))
    await sp1.close()

    def journaled() -> int:
        with open(node.journal) as f:
            return f.read().count('"op":"exit"')

    assert await wait_until(lambda: journaled() == 5, 10)
    assert exits1.records == []
    sp2, exits2 = await node.start()
    recs = await exits2.collect(5)
    assert sorted((r.tid, r.retval) for r in recs) == [(t, t) for t in range(1, 6)]
    assert sp2.running() == {} and all(sp2.knows(t) for t in range(1, 6))
    assert await exits2.none_within(0.2)  # each exit once per spawner
    for tid in range(1, 6):
        sp2.ack(tid)
    await sp2.close()
    sp3, exits3 = await node.start()
    assert sp3.running() == {} and not sp3.knows(1)
    assert await exits3.none_within(0.3)


CLIENT = """
import asyncio, sys
sys.path.insert(0, {root!r})
from evqueue.process.spawner import Spawner, TaskSpec

async def main():
    sp = await Spawner.start({run!r}, {logs!r}, on_exit=lambda rec: None, idle_timeout=5)
    for tid in range(1, 51):
        await sp.spawn(TaskSpec(tid, ["/bin/sh", "-c", "sleep 0.5; echo $0", str(tid)]))
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_kill_9_of_the_client_loses_nothing(node: Node) -> None:
    code = CLIENT.format(root=ROOT, run=node.run_dir, logs=node.logs_dir)
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert client.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 15)
        assert line == b"ready\n"
    finally:
        client.kill()
        client.wait()
    sp, exits = await node.start()
    recs = await exits.collect(50)
    assert sorted(r.tid for r in recs) == list(range(1, 51))
    assert all(r.retval == 0 and r.lost is None for r in recs)
    for rec in recs:
        out = await sp.read_outputs(rec.tid, 1024)
        assert out.stdout == f"{rec.tid}\n".encode()
        sp.ack(rec.tid)
    assert await exits.none_within(0.2)
    await sp.close()
    _, exits2 = await node.start()
    assert await exits2.none_within(0.3)


async def test_adoption_and_take_over(node: Node) -> None:
    sp1, _ = await node.start()
    sp2, exits2 = await node.start()
    assert sp2.forker_pid == sp1.forker_pid == node.forker_pid()
    assert await wait_until(lambda: sp1.closed)  # the older daemon was told to go away
    with pytest.raises(SpawnError):
        await sp1.spawn(sh(1, "true"))
    assert await sp2.spawn(sh(1, "true")) > 0
    assert (await exits2.get()).retval == 0


async def test_forker_death_is_detected(node: Node) -> None:
    sp, exits = await node.start()
    old = sp.forker_pid
    task_pid = await sp.spawn(sh(7, "sleep 30"))
    await sp.spawn(sh(8, "exit 4"))
    assert (await exits.get()).tid == 8  # delivered before the crash, not acked
    os.kill(old, signal.SIGKILL)
    rec = await exits.get(15)
    assert (rec.tid, rec.pid, rec.retval, rec.lost) == (7, task_pid, -1, LOST_MESSAGE)
    assert sp.forker_pid != old and node.forker_pid() == sp.forker_pid
    assert await wait_until(lambda: is_dead(task_pid))  # the orphan was killed, not left running
    assert (await sp.read_outputs(7, 1024)).stderr == LOST_NOTE.encode()
    assert await exits.none_within(0.2)  # tid 8 was not delivered a second time
    sp.ack(7)
    sp.ack(8)
    assert await sp.spawn(sh(7, "exit 5")) > 0
    assert (await exits.get()).retval == 5


async def test_shutdown_waits_for_running_tasks(node: Node) -> None:
    sp, exits = await node.start()
    await sp.spawn(sh(1, "sleep 0.3; exit 2"))
    t0 = time.monotonic()
    await sp.shutdown_forker(10)
    assert time.monotonic() - t0 > 0.2
    assert [r.retval for r in exits.records] == [2]
    assert await wait_until(lambda: not os.path.exists(node.pidfile))
    assert not os.path.exists(node.socket)


async def test_idle_forker_exits(node: Node) -> None:
    sp, _ = await node.start(idle_timeout=0.3)
    pid = sp.forker_pid
    await asyncio.sleep(0.5)
    assert not is_dead(pid)  # a connected daemon keeps it alive
    await sp.close()
    assert await wait_until(lambda: is_dead(pid), 5)
    assert not os.path.exists(node.pidfile) and not os.path.exists(node.socket)
    sp2, exits2 = await node.start()  # and a new one is launched on demand
    assert sp2.forker_pid != pid
    await sp2.spawn(sh(1, "true"))
    assert (await exits2.get()).retval == 0


async def test_no_forker_can_start(node_dirs: Node) -> None:
    with pytest.raises(SpawnError, match="cannot start the forker: .*No such file"):
        await node_dirs.start(pidfile="/nonexistent/dir/forker.pid")


async def test_spawn_pending_during_a_forker_crash_is_sent_again(node: Node) -> None:
    sp, exits = await node.start()
    old = sp.forker_pid
    os.kill(old, signal.SIGSTOP)  # the request below reaches a forker that never reads it
    try:
        pending = asyncio.ensure_future(sp.spawn(sh(3, "exit 9")))
        await asyncio.sleep(0.1)
        assert not pending.done()
    finally:
        os.kill(old, signal.SIGKILL)
    assert await asyncio.wait_for(pending, 15) > 0
    rec = await exits.get()
    assert (rec.tid, rec.retval, rec.lost) == (3, 9, None)
    assert sp.forker_pid != old


async def test_pidfile_held_by_a_forker_of_another_socket(node: Node, tmp_path) -> None:
    sp, _ = await node.start()
    other = str(tmp_path / "other")
    os.mkdir(other)
    with pytest.raises(SpawnError, match="another forker holds"):
        await Spawner.start(other, node.logs_dir, on_exit=print, pidfile=node.pidfile)
    assert node.forker_pid() == sp.forker_pid  # the running one is untouched


async def test_sigterm_on_the_forker_drains_then_a_new_one_takes_over(node: Node) -> None:
    sp, exits = await node.start()
    old = sp.forker_pid
    await sp.spawn(sh(1, "sleep 0.3; exit 6"))
    os.kill(old, signal.SIGTERM)
    await asyncio.sleep(0.1)
    with pytest.raises(SpawnError, match="shutting down"):
        await sp.spawn(sh(2, "true"))
    assert (await exits.get()).retval == 6  # the running task was not disturbed
    assert await wait_until(lambda: is_dead(old))
    sp.ack(1)
    assert await wait_until(lambda: sp.forker_pid not in (0, old), 10)
    assert await sp.spawn(sh(2, "exit 1")) > 0
    assert (await exits.get()).retval == 1


async def test_tasks_ignore_no_signal(node: Node) -> None:
    """The forker ignores SIGHUP; its tasks must get every default back (glibc's
    posix_spawn leaves its two internal signals, 32 and 33, ignored: no program can use them)."""
    sp, exits = await node.start()
    _, out = await run(sp, exits, sh(1, "sed -n 's/^SigIgn:\t//p' /proc/self/status"))
    assert int(out.stdout, 16) & ~(0b11 << 31) == 0
