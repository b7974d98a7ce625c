"""The forker's journal, the wire format and the output readers, without processes."""

from __future__ import annotations

import json
import os

import pytest

from evqueue.process import journal as journal_mod
from evqueue.process.journal import Journal
from evqueue.process.outputs import TRUNCATED, open_outputs, read_outputs, tail
from evqueue.process.wire import LineReader, WireError, encode, retval_of


def test_journal_survives_reopen_and_a_torn_line(tmp_path) -> None:
    path = str(tmp_path / "j")
    j = Journal(path)
    j.spawned(1, 101, 10.0)
    j.spawned(2, 102, 11.0)
    j.spawned(3, 103, 12.0)
    line = j.exited(1, 101, 256, 1, 10.0, 13.0)
    assert json.loads(line) == {
        "op": "exit",
        "n": 1,
        "tid": 1,
        "pid": 101,
        "status": 256,
        "retval": 1,
        "start": 10.0,
        "end": 13.0,
    }
    j.exited(2, 102, None, -1, 11.0, 14.0, lost='gone "badly"')
    j.acked([1, 99])
    j.flush()
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"exit","n":3,"ti')  # crash in the middle of a write
    j2 = Journal(path)
    assert j2.skipped == 1
    assert j2.running == {3: (103, 12.0)}
    assert list(j2.exits) == [2]
    assert json.loads(j2.exits[2][1])["lost"] == 'gone "badly"'
    assert j2.busy(2) and j2.busy(3) and not j2.busy(1)
    assert json.loads(j2.exited(3, 103, 0, 0, 12.0, 15.0))["n"] == 3  # numbering goes on
    j2.flush()
    j2.close()
    j3 = Journal(path)
    assert j3.skipped == 0 and j3.running == {} and sorted(j3.exits) == [2, 3]
    j3.close()


def test_journal_compaction_keeps_live_entries(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(journal_mod, "_COMPACT_MIN_LINES", 50)
    path = str(tmp_path / "j")
    j = Journal(path)
    for tid in range(1, 101):
        j.spawned(tid, 1000 + tid, float(tid))
        j.exited(tid, 1000 + tid, 0, 0, float(tid), float(tid) + 1)
        if tid != 7:
            j.acked([tid])
        j.flush()
    j.spawned(200, 2000, 1.0)
    j.flush()
    j.close()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) < 60  # rewritten at least once
    j2 = Journal(path)
    assert j2.running == {200: (2000, 1.0)}
    assert [json.loads(line)["tid"] for _, line in j2.exits.values()] == [7]
    assert json.loads(j2.exited(5, 1005, 0, 0, 1.0, 2.0))["n"] == 101
    j2.close()


def test_line_reader() -> None:
    r = LineReader()
    assert r.feed(b'{"op":"a"}\n{"op":') == [{"op": "a"}]
    assert r.feed(b'"b","x":"\\udcff"}\n') == [{"op": "b", "x": "\udcff"}]
    assert encode({"op": "s", "x": "\udcff"}) == b'{"op":"s","x":"\\udcff"}\n'
    with pytest.raises(WireError):
        LineReader().feed(b"nope\n")
    with pytest.raises(WireError):
        LineReader().feed(b"[1]\n")


@pytest.mark.parametrize(
    ("status", "retval"),
    [(0, 0), (3 << 8, 3), (130 << 8, -126), (255 << 8, -1), (9, -1), (15 | 0x80, -1)],
)
def test_retval_is_a_signed_char(status: int, retval: int) -> None:
    assert retval_of(status) == retval


def test_read_outputs_truncation_and_missing(tmp_path) -> None:
    logs = str(tmp_path)
    (tmp_path / "1.stdout").write_bytes(b"x" * 20000)
    (tmp_path / "1.stderr").write_bytes(b"")
    out = read_outputs(open_outputs(logs, 1), 10 * 1024, delete=False)
    assert out.stdout == b"x" * 10240 + TRUNCATED and len(out.stdout) == 10255
    assert out.stderr == b"" and out.log == b""
    zero = read_outputs(open_outputs(logs, 1), 0, delete=True)
    assert zero.stdout == TRUNCATED and zero.stderr == b""  # the original's quirk for 0
    assert os.listdir(logs) == []
    assert read_outputs(open_outputs(logs, 1), 100, delete=True).stdout is None


def test_tail(tmp_path) -> None:
    (tmp_path / "4.stderr").write_bytes(b"0123456789")
    assert tail(str(tmp_path), 4, "stderr", 3) == b"789"
    assert tail(str(tmp_path), 4, "stderr", 100) == b"0123456789"
    assert tail(str(tmp_path), 4, "log", 100) == b""
    with pytest.raises(FileNotFoundError):
        tail(str(tmp_path), 4, "stdout", 3)
    with pytest.raises(ValueError, match="Unknown log type : out"):
        tail(str(tmp_path), 4, "out", 3)
