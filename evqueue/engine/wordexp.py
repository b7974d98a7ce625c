"""POSIX word expansion of a task's ``path`` (workflow.md §4.9.5), without a shell.

The original passes ``path`` to wordexp(3) in the engine. This does the same expansions in
the same order: tilde, parameters (``$NAME``, ``${NAME}``), field splitting of unquoted
expansions, pathname expansion of unquoted patterns, quote removal. Command substitution
(``$(...)``, backquotes, ``$((...))``) and unquoted shell operators are refused, as wordexp
does with WRDE_NOCMD / WRDE_BADCHAR, rather than running a shell inside the daemon.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
from collections.abc import Mapping

_BAD = frozenset("|&;<>(){}\n")
_IFS = " \t\n"
_SPLIT = re.compile(r"([ \t\n]+)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATTERN = frozenset("*?[")


class WordExpError(ValueError):
    """The text cannot be expanded (syntax error, command substitution, bad character)."""


class _Words:
    """Fields being built: each character remembers whether it was quoted (quoted ones are
    never pattern characters)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.chars: list[tuple[str, bool]] = []
        self.open = False  # a field exists, even if empty ("" is one empty field)

    def add(self, text: str, quoted: bool) -> None:
        self.chars.extend((c, quoted) for c in text)
        self.open = True

    def end(self) -> None:
        if not self.open:
            return
        word = "".join(c for c, _ in self.chars)
        if any(c in _PATTERN and not quoted for c, quoted in self.chars):
            pattern = "".join(c if not quoted else glob.escape(c) for c, quoted in self.chars)
            matches = sorted(glob.glob(pattern))
            self.words.extend(matches or [word])
        else:
            self.words.append(word)
        self.chars = []
        self.open = False

    def add_split(self, value: str) -> None:
        """An unquoted expansion: its IFS whitespace separates fields."""
        for piece in _SPLIT.split(value):
            if not piece:
                continue
            if piece[0] in _IFS:
                self.end()
            else:
                self.add(piece, False)


def wordexp(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The fields of ``text`` after expansion; raises :class:`WordExpError`."""
    env = os.environ if env is None else env
    out = _Words()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            out.end()
            i += 1
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise WordExpError("unterminated single quote")
            out.add(text[i + 1:end], True)
            i = end + 1
        elif c == '"':
            i = _double_quoted(text, i + 1, env, out)
        elif c == "\\":
            if i + 1 >= n:
                raise WordExpError("trailing backslash")
            out.add(text[i + 1], True)
            i += 2
        elif c == "$":
            value, i = _parameter(text, i, env)
            if value is None:
                out.add("$", False)
            else:
                out.add_split(value)
        elif c == "`" or c in _BAD:
            raise WordExpError(f"unsupported character {c!r}")
        elif c == "~" and not out.open:
            end = i + 1
            while end < n and text[end] not in "/ \t" and text[end] not in _BAD:
                end += 1
            out.add(_home(text[i + 1:end], env) or text[i:end], True)
            i = end
        else:
            out.add(c, False)
            i += 1
    out.end()
    return out.words


def _double_quoted(text: str, i: int, env: Mapping[str, str], out: _Words) -> int:
    """Scan a double-quoted part starting after its quote; returns the index after it."""
    out.add("", True)
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
            out.add(text[i + 1], True)
            i += 2
        elif c == "$":
            value, i = _parameter(text, i, env)
            out.add("$" if value is None else value, True)
        elif c == "`":
            raise WordExpError("command substitution is not supported")
        else:
            out.add(c, True)
            i += 1
    raise WordExpError("unterminated double quote")


def _parameter(text: str, i: int, env: Mapping[str, str]) -> tuple[str | None, int]:
    """The value of the expansion at ``text[i] == '$'`` and the index after it; None when
    the ``$`` is literal (not followed by a name)."""
    rest = text[i + 1:i + 2]
    if rest == "(":
        raise WordExpError("command substitution is not supported")
    if rest == "{":
        end = text.find("}", i + 2)
        name = text[i + 2:end] if end > 0 else ""
        if not _NAME.fullmatch(name):
            raise WordExpError("bad substitution")
        return env.get(name, ""), end + 1
    m = _NAME.match(text, i + 1)
    if m is None:
        return None, i + 1
    return env.get(m.group(), ""), m.end()


def _home(user: str, env: Mapping[str, str]) -> str | None:
    if not user:
        return env.get("HOME") or _passwd_home(os.getuid())
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def _passwd_home(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None
