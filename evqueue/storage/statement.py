"""Pure helpers on the portable SQL of :mod:`evqueue.storage.base`: placeholder rewriting for
SQLite and just enough parsing of ``INSERT``/``UPDATE`` statements to know which values a
statement writes, so that SQLite constraint errors can be reported with MariaDB's texts
(``Duplicate entry 'x' for key 'k'`` needs the offending value, which SQLite does not give).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from evqueue.storage.base import StorageError

UNKNOWN: Any = object()
"""Value of a column set by an expression the parser does not evaluate."""

_PERCENT = re.compile(r"%(.|$)", re.S)


@lru_cache(maxsize=1024)
def to_qmark(sql: str) -> str:
    """Rewrite PyMySQL-style ``%s`` placeholders to ``?`` and ``%%`` to ``%``, rejecting any
    other ``%`` sequence as PyMySQL's formatting would."""

    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        if c == "s":
            return "?"
        if c == "%":
            return "%"
        raise StorageError(f"Unsupported format sequence '%{c}' in query (write '%%' for '%')")

    return _PERCENT.sub(sub, sql)


@dataclass(frozen=True)
class Token:
    kind: str  # str, qid, ph, num, word, op
    text: str
    start: int


_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qid>`[^`]*`|"[^"]*")
    | (?P<ph>%s)
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<op>.)
    """,
    re.X | re.S,
)


def tokenize(sql: str) -> list[Token]:
    return [
        Token(m.lastgroup or "op", m.group(), m.start())
        for m in _TOKEN.finditer(sql)
        if m.lastgroup != "ws"
    ]


def _ident(tokens: list[Token], i: int) -> tuple[str, int]:
    """Read a possibly qualified, possibly quoted identifier; return its last part."""
    name = tokens[i].text.strip('`"')
    i += 1
    while i + 1 < len(tokens) and tokens[i].text == "." and tokens[i + 1].kind in ("word", "qid"):
        name = tokens[i + 1].text.strip('`"')
        i += 2
    return name, i


@dataclass(frozen=True)
class WriteStatement:
    """What an ``INSERT`` or ``UPDATE`` writes.

    ``columns`` is ``None`` for ``INSERT INTO t VALUES (...)`` (all columns, table order).
    ``rows`` holds one tuple of values per inserted row (one for ``UPDATE``), :data:`UNKNOWN`
    where the value is an expression. For ``UPDATE``, ``where``/``where_params`` is the
    portable tail of the statement from ``WHERE`` on (empty when absent).
    """

    verb: str
    table: str
    columns: tuple[str, ...] | None
    rows: tuple[tuple[Any, ...], ...]
    where: str = ""
    where_params: tuple[Any, ...] = ()


class _Reader:
    """Walks the tokens of one statement, consuming parameters as placeholders pass."""

    def __init__(self, sql: str, params: Sequence[Any]) -> None:
        self.sql = sql
        self.tokens = tokenize(sql)
        self.params = tuple(params)
        self.i = 0
        self.p = 0

    def peek(self) -> str:
        return self.tokens[self.i].text.upper() if self.i < len(self.tokens) else ""

    def expr(self, stops: tuple[str, ...]) -> Any:
        """Read one value expression up to a depth-0 ``,``, ``)`` or stop keyword."""
        depth = 0
        first = self.i
        while self.i < len(self.tokens):
            t = self.tokens[self.i]
            if depth == 0 and (t.text in (",", ")") or t.text.upper() in stops):
                break
            depth += (t.text == "(") - (t.text == ")")
            self.i += 1
        part = self.tokens[first:self.i]
        start = self.p
        self.p += sum(t.kind == "ph" for t in part)
        return _value(part, self.params[start:self.p])


def _value(part: list[Token], params: tuple[Any, ...]) -> Any:
    texts = [t.text for t in part]
    if len(part) == 1:
        t = part[0]
        if t.kind == "ph":
            return params[0] if params else UNKNOWN
        if t.kind == "str":
            return t.text[1:-1].replace("''", "'")
        if t.kind == "num":
            return float(t.text) if "." in t.text else int(t.text)
        if t.text.upper() == "NULL":
            return None
    if len(part) == 2 and texts[0] == "-" and part[1].kind == "num":
        return -_value(part[1:], params)
    return UNKNOWN


def parse_write(sql: str, params: Sequence[Any] = ()) -> WriteStatement | None:
    """Parse an ``INSERT``/``REPLACE``/``UPDATE`` in portable SQL; ``None`` for anything else
    (or a statement too unusual to read)."""
    r = _Reader(sql, params)
    try:
        verb = r.peek()
        if verb in ("INSERT", "REPLACE"):
            return _parse_insert(r, verb)
        if verb == "UPDATE":
            return _parse_update(r)
    except IndexError:
        return None
    return None


def _parse_insert(r: _Reader, verb: str) -> WriteStatement | None:
    while r.tokens[r.i].text.upper() != "INTO":  # IndexError when absent
        r.i += 1
    r.i += 1
    table, r.i = _ident(r.tokens, r.i)
    columns: tuple[str, ...] | None = None
    if r.peek() == "(":
        r.i += 1
        names = []
        while r.peek() != ")":
            if r.peek() == ",":
                r.i += 1
                continue
            name, r.i = _ident(r.tokens, r.i)
            names.append(name)
        r.i += 1
        columns = tuple(names)
    if r.peek() not in ("VALUES", "VALUE"):
        return WriteStatement("INSERT", table, columns, ())
    r.i += 1
    rows = []
    while r.peek() == "(":
        r.i += 1
        row = [r.expr(())]
        while r.peek() == ",":
            r.i += 1
            row.append(r.expr(()))
        r.i += 1  # ")"
        rows.append(tuple(row))
        if r.peek() != ",":
            break
        r.i += 1
    return WriteStatement("INSERT", table, columns, tuple(rows))


_UPDATE_STOPS = ("WHERE", "ORDER", "LIMIT")


def _parse_update(r: _Reader) -> WriteStatement | None:
    r.i += 1
    while r.peek() in ("LOW_PRIORITY", "IGNORE", "OR", "ROLLBACK", "ABORT", "REPLACE", "FAIL"):
        r.i += 1
    table, r.i = _ident(r.tokens, r.i)
    if r.peek() != "SET":
        return None
    r.i += 1
    columns, values = [], []
    while True:
        name, r.i = _ident(r.tokens, r.i)
        if r.peek() != "=":
            return None
        r.i += 1
        columns.append(name)
        values.append(r.expr(_UPDATE_STOPS))
        if r.peek() != ",":
            break
        r.i += 1
    where = ""
    if r.peek() == "WHERE":
        where = r.sql[r.tokens[r.i].start:]
    return WriteStatement(
        "UPDATE", table, tuple(columns), (tuple(values),), where, r.params[r.p:]
    )


_INSERT_TABLE = re.compile(
    r"\s*(?:INSERT|REPLACE)\b(?:\s+(?:OR\s+\w+|IGNORE))?\s+INTO\s+[`\"]?(\w+)", re.I
)


@lru_cache(maxsize=1024)
def insert_table(sql: str) -> str | None:
    """Target table of an ``INSERT``/``REPLACE`` statement (fast path for ``lastrowid``)."""
    m = _INSERT_TABLE.match(sql)
    return m.group(1) if m else None
