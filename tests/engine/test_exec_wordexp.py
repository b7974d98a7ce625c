"""Word expansion of task paths (workflow.md §4.9.5): wordexp(3) without command substitution."""

from __future__ import annotations

import os

import pytest

from evqueue.engine.wordexp import WordExpError, wordexp

ENV = {"HOME": "/home/u", "W": "one  two", "E": "", "P": "/bin/ech?"}


@pytest.mark.parametrize(("text", "words"), [
    ("/bin/echo a b", ["/bin/echo", "a", "b"]),
    ("  spaced\tout  ", ["spaced", "out"]),
    ("'a  b' \"c  d\" e\\ f", ["a  b", "c  d", "e f"]),
    ("'$HOME' \"$HOME\" $HOME ${HOME}/x", ["$HOME", "/home/u", "/home/u", "/home/u/x"]),
    ("$UNDEFINED x$UNDEFINED \"$UNDEFINED\"", ["x", ""]),  # unquoted empty: no word
    ("$E '' \"\"", ["", ""]),
    ("$W \"$W\" x$W\"y\"", ["one", "two", "one  two", "xone", "twoy"]),  # field splitting
    ("~ ~/bin a~", ["/home/u", "/home/u/bin", "a~"]),
    ("~root", [os.path.expanduser("~root")]),
    ("~no_such_user_evq/x", ["~no_such_user_evq/x"]),
    ("a$ $1 \"a\\$b\" \"q\\\"q\" \"\\n\"", ["a$", "$1", "a$b", 'q"q', "\\n"]),
    ("/bin/ech? '/bin/ech?' \"/bin/ech?\"", ["/bin/echo", "/bin/ech?", "/bin/ech?"]),
    ("$P /nonexistent/*.zz", ["/bin/echo", "/nonexistent/*.zz"]),  # no match: kept as is
])
def test_expansions(text: str, words: list[str]) -> None:
    assert wordexp(text, ENV) == words


@pytest.mark.parametrize("text", [
    "'unbalanced", '"unbalanced', "trailing\\", "$(echo x)", "$((1+1))", "`echo x`",
    '"`echo x`"', '"$(echo x)"', "${A-b}", "${", "a|b", "a;b", "a&", "a>b", "(a)", "{a}",
    "a\nb",
])
def test_refused(text: str) -> None:
    with pytest.raises(WordExpError):
        wordexp(text, ENV)


def test_operators_are_fine_when_quoted() -> None:
    assert wordexp("'a|b;c' \"(d)\" e\\&", ENV) == ["a|b;c", "(d)", "e&"]
