"""The XPath dialect of evQueue 3.3 (workflow.md §3), evaluated on lxml trees.

The original does not use an XPath 1.0 engine but its own token-rewriting evaluator, and
existing workflows depend on its typing rules and quirks (``substring`` is 0-based, ``<=``
always fails, ``[last()]`` keeps every item, ``//`` is post-order, ...). lxml's XPath would
give different answers, so this module re-implements the dialect on top of lxml nodes: a
lexer and parser (cached, immutable syntax trees, so compiled expressions are shared between
threads) and an evaluator whose state lives in one object per evaluation.

Entry points: :func:`compile_xpath` (then :meth:`XPath.evaluate` and the site helpers
``boolean``/``first_string``/``nodes``/``first_node``), :func:`expand_template` for ``{xpath}``
attributes and :func:`parse_check` for ``<xpath action="parse">``. Workflow functions
(``evqGetOutput`` ...) are available when a :class:`WorkflowScope` is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeGuard

from lxml import etree

_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
_MAX_DEPTH = 64  # nesting of parentheses, predicates and calls accepted by the parser
#: longest expression accepted (ours: the original has no limit)
MAX_EXPRESSION = 4096
_CACHED_LENGTH = 512  # longer expressions are compiled at each use
#: work units (nodes walked or filtered) one evaluation may spend: some 30 ms
MAX_WORK = 100_000


# --------------------------------------------------------------------------- errors


class XPathError(Exception):
    """An evaluation or parse error, worded like the original.

    ``message`` and ``context`` are the original's two parts; once the error leaves
    :meth:`XPath.evaluate`, ``expression`` is set and ``str()`` gives the full text
    ``XPath expression error in '<expr>'. XPath returned error : <message> (<context>)``.
    ``waiting`` marks an ``evqWait()`` whose condition is not met yet (workflow.md §4.8).
    """

    def __init__(
        self, message: str, context: str = "XPath Eval", *, waiting: bool = False,
        passthrough: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        self.waiting = waiting
        self.passthrough = passthrough  # not wrapped by the enclosing function call
        self.expression: str | None = None

    def __str__(self) -> str:
        text = f"{self.message} ({self.context})"
        if self.expression is None:
            return text
        return f"XPath expression error in '{self.expression}'. XPath returned error : {text}"


class ResultError(XPathError):
    """A result of the wrong kind for its evaluation site. The original raises these after
    the evaluation, so their text has no XPath wrapper ("Evaluation result is not a node")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "DOMXPath")

    def __str__(self) -> str:
        return self.message


def _cast_error(pos: int) -> XPathError:
    return XPathError(f"Incompatible type for operand at character {pos}", "Type Cast")


# --------------------------------------------------------------------------- nodes


class AttrNode:
    """An attribute used as a node (``@x``): lxml has no attribute node objects."""

    __slots__ = ("owner", "name")

    def __init__(self, owner: etree._Element, name: str) -> None:
        self.owner = owner
        self.name = name

    @property
    def value(self) -> str:
        return self.owner.get(self.name, "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttrNode) and other.owner is self.owner and \
            other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.owner), self.name))

    def __repr__(self) -> str:
        return f"AttrNode({self.owner.tag!r}, {self.name!r})"


class TextNode:
    """A text node (only produced by the sibling axes with ``*``): ``owner.text`` or, when
    ``tail`` is true, ``owner.tail``."""

    __slots__ = ("owner", "tail")

    def __init__(self, owner: etree._Element, tail: bool) -> None:
        self.owner = owner
        self.tail = tail

    @property
    def text(self) -> str:
        return (self.owner.tail if self.tail else self.owner.text) or ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextNode) and other.owner is self.owner and \
            other.tail == self.tail

    def __hash__(self) -> int:
        return hash((id(self.owner), self.tail))


class DocNode:
    """The document node above the root element (start of absolute paths)."""

    __slots__ = ("root",)

    def __init__(self, root: etree._Element) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DocNode) and other.root is self.root

    def __hash__(self) -> int:
        return hash(id(self.root))


Node = etree._Element | AttrNode | TextNode | DocNode
_NODE_TYPES = (etree._Element, AttrNode, TextNode, DocNode)


class Seq(list):
    """A sequence value: ordered, may mix nodes and literals, never de-duplicated."""

    __slots__ = ()


Value = str | int | float | bool | Seq


def is_node(item: object) -> TypeGuard[Node]:
    return isinstance(item, _NODE_TYPES)


def _is_element(item: object) -> TypeGuard[etree._Element]:
    return isinstance(item, etree._Element) and isinstance(item.tag, str)


def string_value(node: Node) -> str:
    """Text content: all descendant text of an element, the value of an attribute."""
    if isinstance(node, etree._Element):
        if isinstance(node.tag, str):
            return "".join(node.itertext())
        return node.text or ""
    if isinstance(node, AttrNode):
        return node.value
    if isinstance(node, TextNode):
        return node.text
    return string_value(node.root)


def _qname(tag: str, prefix: str | None) -> str:
    if tag[:1] != "{":
        return tag
    local = tag.rpartition("}")[2]
    return f"{prefix}:{local}" if prefix else local


def node_name(node: Node) -> str:
    """The DOM node name: element/attribute name, ``#text``, ``#comment``, ``#document``."""
    if isinstance(node, etree._Element):
        if isinstance(node.tag, str):
            return _qname(node.tag, node.prefix)
        return "#comment" if isinstance(node, etree._Comment) else str(node.target)
    if isinstance(node, AttrNode):
        return _qname(node.name, None)
    if isinstance(node, TextNode):
        return "#text"
    return "#document"


def document_of(node: Node) -> DocNode:
    if isinstance(node, DocNode):
        return node
    owner = node.owner if isinstance(node, AttrNode | TextNode) else node
    return DocNode(owner.getroottree().getroot())


# --------------------------------------------------------------------------- conversions


_STOI = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")
_STOD = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan))",
    re.IGNORECASE,
)


def _format_float(value: float) -> str:
    return f"{value:f}"


def _item_value(item: object) -> Value:
    """A sequence item as a value: a node gives its string value."""
    return string_value(item) if is_node(item) else item  # type: ignore[return-value]


def _item_string(item: object) -> str:
    if is_node(item):
        return string_value(item)
    return to_string(item, 0)  # type: ignore[arg-type]  # a literal item


def to_string(value: Value, pos: int) -> str:
    """String conversion (§3.1); a sequence of more than one item is an error."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, Seq) and len(value) <= 1:
        return _item_string(value[0]) if value else ""
    raise _cast_error(pos)


def _stoi(text: str, pos: int) -> int:
    if _STOI.fullmatch(text):
        number = int(text)
        if _INT_MIN <= number <= _INT_MAX:
            return number
    raise XPathError(f"Could not cast string to int at character {pos}", "Type Cast")


def _stod(text: str, pos: int) -> float:
    """C++ ``stod`` (longest numeric prefix), then truncated to an integer (quirk Q5)."""
    match = _STOD.match(text)
    if match:
        number = float(match.group(1))
        if math.isfinite(number):
            return float(math.trunc(number))
        if match.group(1).lstrip("+-")[:1] in "iInN":  # written inf/nan, not an overflow
            return number
    raise XPathError(f"Could not cast string to float at character {pos}", "Type Cast")


def to_int(value: Value, pos: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return int(value)
    elif isinstance(value, str):
        return _stoi(value, pos)
    elif isinstance(value, Seq) and len(value) == 1:
        item = value[0]
        if is_node(item):
            return _stoi(string_value(item), pos)
        return to_int(item, pos)
    raise _cast_error(pos)


def to_float(value: Value, pos: int) -> float:
    """Float conversion; a sequence is always an error (quirk Q3)."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        return _stod(value, pos)
    raise _cast_error(pos)


def to_bool(value: Value, pos: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str | Seq):
        return len(value) > 0
    if isinstance(value, int | float):
        return value != 0
    raise _cast_error(pos)


def _wrap32(number: int) -> int:
    return (number - _INT_MIN) % 2**32 + _INT_MIN


def _equals(left: Value, lpos: int, right: Value, rpos: int) -> bool:
    """``=`` with the original's rules (§3.5), in its order."""
    for kind in (str, bool):
        if isinstance(left, kind) and isinstance(right, kind):
            return left == right
    lint = isinstance(left, int) and not isinstance(left, bool)
    rint = isinstance(right, int) and not isinstance(right, bool)
    if lint or rint:
        try:
            return to_int(left, lpos) == to_int(right, rpos)
        except XPathError:
            return False
    if isinstance(left, float) or isinstance(right, float):
        try:
            return to_float(left, lpos) == to_float(right, rpos)
        except XPathError:
            return False
    if isinstance(left, str) and isinstance(right, Seq):
        return any(_item_string(item) == left for item in right)
    if isinstance(left, Seq) and isinstance(right, str):
        return any(_item_string(item) == right for item in left)
    if isinstance(left, Seq) and isinstance(right, Seq):
        strings = {_item_string(item) for item in right}
        return any(_item_string(item) in strings for item in left)
    raise XPathError("Unable to evaluate operator '='", "Operator EQ")


def _float_div(x: float, y: float) -> float:
    if y != 0:
        return x / y
    if x == 0 or math.isnan(x):
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, y)


def _arithmetic(sym: str, left: Value, lpos: int, right: Value, rpos: int) -> Value:
    """Integer arithmetic when both sides convert to int, else float (§3.5)."""
    try:
        a, b = to_int(left, lpos), to_int(right, rpos)
    except XPathError:
        if sym == "mod":
            raise XPathError(
                "Modulus operator can only operate on integers", "Operator MOD") from None
        x, y = to_float(left, lpos), to_float(right, rpos)
        if sym == "+":
            return x + y
        if sym == "-":
            return x - y
        if sym == "*":
            return x * y
        return _float_div(x, y)
    if sym == "+":
        return _wrap32(a + b)
    if sym == "-":
        return _wrap32(a - b)
    if sym == "*":
        return _wrap32(a * b)
    if sym == "div":
        return _float_div(float(a), float(b))
    if b == 0:
        raise XPathError("Division by zero", "Operator MOD")
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


# --------------------------------------------------------------------------- lexer


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:")
_WORD_OPERATORS = frozenset(("and", "or", "div", "mod"))
# tokens after which "*", "and", "or", "div" and "mod" are operators
_OPERAND_END = frozenset(("num", "str", "name", "attr", "axis", "dot", "dotdot", ")", "]"))


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num str name func attr axis dot dotdot / // ( ) [ ] , op
    value: object
    pos: int  # 1-based byte offset in the expression, as in the original's messages


def _parse_error(message: str) -> XPathError:
    return XPathError(message, "XPath Parser")


def _tokenize(text: str) -> list[_Token]:
    if text.isascii():
        def position(i: int) -> int:
            return i + 1
    else:
        def position(i: int) -> int:
            return len(text[:i].encode("utf-8", "surrogatepass")) + 1

    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == " ":
            i += 1
            continue
        pos = position(i)
        prev = tokens[-1].kind if tokens else ""
        if c in "()[],":
            tokens.append(_Token(c, c, pos))
            i += 1
        elif c == "/":
            double = text.startswith("//", i)
            tokens.append(_Token("//" if double else "/", None, pos))
            i += 2 if double else 1
        elif c in "+=|<>":
            tokens.append(_Token("op", c, pos))
            i += 1
        elif c == "!" and text.startswith("!=", i):
            tokens.append(_Token("op", "!=", pos))
            i += 2
        elif c == "*":
            kind, value = ("op", "*") if prev in _OPERAND_END else ("name", "*")
            tokens.append(_Token(kind, value, pos))
            i += 1
        elif c == "-":
            if i + 1 < n and "0" <= text[i + 1] <= "9":
                raise _parse_error(f"Invalid int or float at character {pos}")
            tokens.append(_Token("op", "-", pos))
            i += 1
        elif c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                raise _parse_error(
                    f"Invalid string : end delimiter expected for token at character {pos}")
            tokens.append(_Token("str", text[i + 1:end], pos))
            i = end + 1
        elif "0" <= c <= "9":
            j = i
            while j < n and ("0" <= text[j] <= "9" or text[j] == "."):
                j += 1
            literal = text[i:j]
            if literal.count(".") > 1:
                raise _parse_error(
                    f"Invalid float : only one dot is allowed for token at character {pos}")
            tokens.append(_Token("num", _number(literal, pos), pos))
            i = j
        elif c == ".":
            double = text.startswith("..", i)
            tokens.append(_Token("dotdot" if double else "dot", None, pos))
            i += 2 if double else 1
        elif c == "@":
            if text.startswith("@*", i):
                tokens.append(_Token("attr", "*", pos))
                i += 2
                continue
            j = i + 1
            while j < n and text[j] in _NAME_CHARS:
                j += 1
            if j == i + 1:
                raise _parse_error(f"Invalid node or function name at character {pos}")
            tokens.append(_Token("attr", text[i + 1:j], pos))
            i = j
        elif c in _NAME_CHARS:
            j = i
            while j < n and text[j] in _NAME_CHARS:
                j += 1
            word = text[i:j]
            if "::" in word:
                axis, _, test = word.partition("::")
                if not test and j < n and text[j] == "*":
                    test, j = "*", j + 1
                if not axis or not test:
                    raise _parse_error(f"Invalid node or function name at character {pos}")
                tokens.append(_Token("axis", (axis, test), pos))
            elif word in _WORD_OPERATORS and prev in _OPERAND_END:
                tokens.append(_Token("op", word, pos))
            else:
                k = j
                while k < n and text[k] == " ":
                    k += 1
                kind = "func" if k < n and text[k] == "(" else "name"
                tokens.append(_Token(kind, word, pos))
            i = j
        else:
            raise _parse_error(f"Invalid node or function name at character {pos}")
    return tokens


def _number(literal: str, pos: int) -> int | float:
    if "." in literal:
        number = float(literal)
        if math.isfinite(number):
            return number
    else:
        number = int(literal)
        if number <= _INT_MAX:
            return number
    raise _parse_error(f"Invalid int or float at character {pos}")


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class _Op:
    """An operator token; also the value of an operator used as an operand (``1 <= 2``)."""

    sym: str
    pos: int


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | int | float
    pos: int


@dataclass(frozen=True, slots=True)
class _Expr:
    items: tuple[_Op | _Path, ...]
    pos: int
    index: int | None  # set when the expression is one int literal: a positional predicate


@dataclass(frozen=True, slots=True)
class _Func:
    name: str
    args: tuple[_Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # name attr axis dot dotdot func
    name: str
    axis: str
    func: _Func | None
    filters: tuple[_Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Path:
    """An operand: an absolute path, or a primary (literal, ``(...)``, call, step) with its
    predicates, followed by ``/`` or ``//`` steps."""

    absolute: str  # "", "/" or "//"
    head: _Literal | _Expr | _Func | _Step | None
    filters: tuple[_Expr, ...]
    steps: tuple[tuple[bool, _Step], ...]  # (descendant "//", step)
    pos: int  # position of the last token, reported in type errors


_STEP_KINDS = frozenset(("name", "attr", "axis", "dot", "dotdot", "func"))
_CLOSERS = frozenset((")", "]", ","))
_IN_PARENS = frozenset((")",))
_IN_BRACKETS = frozenset(("]",))
_IN_CALL = frozenset((",", ")"))


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expression(self, closing: frozenset[str], opening: _Token | None) -> _Expr:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            where = opening.pos if opening else 1
            raise _parse_error(f"Expression nested too deeply at character {where}")
        items: list[_Op | _Path] = []
        while True:
            token = self.peek()
            if token is None:
                if opening is not None:
                    what = "bracket" if opening.kind == "[" else "parenthesis"
                    raise _parse_error(f"Unbalanced {what} at character {opening.pos}")
                break
            if token.kind in closing:
                break
            if token.kind in _CLOSERS:
                raise _parse_error(f"Unexpected '{token.kind}' at character {token.pos}")
            if token.kind == "op":
                self.take()
                items.append(_Op(str(token.value), token.pos))
            else:
                items.append(self.operand())
        self.depth -= 1
        index = None
        if len(items) == 1:
            only = items[0]
            if isinstance(only, _Path) and not only.steps and not only.filters and \
                    isinstance(only.head, _Literal) and type(only.head.value) is int:
                index = only.head.value
        pos = items[-1].pos if items else (opening.pos if opening else 1)
        return _Expr(tuple(items), pos, index)

    def filters(self) -> tuple[_Expr, ...]:
        found = []
        while (token := self.peek()) is not None and token.kind == "[":
            self.take()
            found.append(self.expression(_IN_BRACKETS, token))
            self.take()
        return tuple(found)

    def call(self, token: _Token) -> _Func:
        opening = self.take()  # "("
        args: list[_Expr] = []
        if (nxt := self.peek()) is not None and nxt.kind == ")":
            self.take()
            return _Func(str(token.value), (), token.pos)
        while True:
            args.append(self.expression(_IN_CALL, opening))
            if self.take().kind == ")":
                return _Func(str(token.value), tuple(args), token.pos)

    def step(self, token: _Token) -> _Step:
        kind, value = token.kind, token.value
        if kind == "func":
            func = self.call(token)
            return _Step("func", func.name, "", func, self.filters(), token.pos)
        axis, name = value if isinstance(value, tuple) else ("", value or "")
        return _Step(kind, str(name), str(axis), None, self.filters(), token.pos)

    def operand(self) -> _Path:
        token = self.take()
        absolute = ""
        head: _Literal | _Expr | _Func | _Step | None
        filters: tuple[_Expr, ...] = ()
        pos = token.pos
        if token.kind in ("/", "//"):
            absolute = token.kind
            nxt = self.peek()
            if nxt is not None and nxt.kind in _STEP_KINDS:
                head = self.step(self.take())
                pos = head.pos
            elif absolute == "//":
                raise _parse_error(f"Missing node name after '//' at character {token.pos}")
            else:
                head = None
        elif token.kind in ("num", "str"):
            assert isinstance(token.value, str | int | float)
            head = _Literal(token.value, token.pos)
            filters = self.filters()
        elif token.kind == "(":
            head = self.expression(_IN_PARENS, token)
            self.take()
            filters = self.filters()
        elif token.kind == "func":
            head = self.call(token)
            filters = self.filters()
        elif token.kind in _STEP_KINDS:
            head = self.step(token)
        else:
            raise _parse_error(f"Unexpected '{token.kind}' at character {token.pos}")
        steps: list[tuple[bool, _Step]] = []
        while (sep := self.peek()) is not None and sep.kind in ("/", "//"):
            self.take()
            nxt = self.peek()
            if nxt is None or nxt.kind not in _STEP_KINDS:
                raise _parse_error(f"Missing node name after '{sep.kind}' at character {sep.pos}")
            step = self.step(self.take())
            steps.append((sep.kind == "//", step))
            pos = step.pos
        return _Path(absolute, head, filters, tuple(steps), pos)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class WorkflowScope:
    """Bindings of the workflow functions at one evaluation site (workflow.md §3.7).

    ``resolve`` maps an evqid / context-id (``"5"``, ``"5/@n"``) to its node.
    ``job_lookup`` selects the custom-attribute / automatic-tag site, where only
    ``evqGetWorkflowParameter`` and ``evqGetJob`` exist.
    """

    current_job: etree._Element | None
    parent_job: etree._Element | None
    resolve: Callable[[str], Node | None]
    job_lookup: bool = False


@dataclass(frozen=True, slots=True)
class _Frame:
    item: object  # context item (a node, or a literal inside a predicate over literals)
    position: int  # 0 outside predicates (quirk Q8)
    size: int


_Arg = tuple[Value, int]
_Function = Callable[["_Run", _Frame, list[_Arg], "Seq | None"], Value]
_LEVELS = (
    frozenset(("*", "div", "mod")), frozenset(("+", "-")), frozenset(("<", ">")),
    frozenset(("=", "!=")), frozenset(("and",)), frozenset(("or", "|")),
)


class _Run:
    """The state of one evaluation. ``budget`` is the work left (:data:`MAX_WORK`): nested
    descendant steps and predicates cost the product of the document sizes, and the loop
    must not be held for minutes by one ``xpathfilter``."""

    __slots__ = ("context", "scope", "functions", "budget", "_doc_size")

    def __init__(self, context: Node, scope: WorkflowScope | None) -> None:
        self.context = context
        self.scope = scope
        self.budget = MAX_WORK
        self._doc_size = 0
        if scope is None:
            self.functions = _CORE
        else:
            self.functions = _ROOT_SITE if scope.job_lookup else _INSTANCE_SITE

    def charge(self, work: int) -> None:
        """Spend ``work`` units of the budget; an ordinary XPath error once it is gone."""
        self.budget -= work
        if self.budget < 0:
            raise XPathError("Expression too complex to evaluate", "XPath Eval")

    def doc_size(self) -> int:
        """Elements of the context's document: the cost charged for a descendant walk."""
        if not self._doc_size:
            self._doc_size = sum(1 for _ in document_of(self.context).root.iter()) + 1
        return self._doc_size

    # -- expressions and operators
    def expr(self, expr: _Expr, frame: _Frame) -> _Arg:
        items: list[object] = list(expr.items)
        if len(items) == 1 and isinstance(items[0], _Path):
            return self.path(items[0], frame), items[0].pos
        for level in _LEVELS:
            i = 0
            while i < len(items):
                op = items[i]
                if isinstance(op, _Op) and op.sym in level:
                    if i == 0 or i == len(items) - 1:
                        side = "left" if i == 0 else "right"
                        raise XPathError(
                            f"Missing {side} operand of operator {op.sym} at character {op.pos}")
                    items[i - 1:i + 2] = [(self.operator(op, items[i - 1], items[i + 1], frame),
                                           op.pos)]
                    i -= 1
                i += 1
        if len(items) != 1:
            raise XPathError("Error evaluating expression")
        return self.operand(items[0], frame)

    def operand(self, item: object, frame: _Frame) -> _Arg:
        if isinstance(item, _Path):
            return self.path(item, frame), item.pos
        if isinstance(item, _Op):
            return item, item.pos  # type: ignore[return-value]  # fails any conversion
        return item  # type: ignore[return-value]  # an already computed (value, pos)

    def operator(self, op: _Op, left: object, right: object, frame: _Frame) -> Value:
        lvalue, lpos = self.operand(left, frame)
        sym = op.sym
        logical = sym in ("and", "or")
        if logical:
            _check_logical(lvalue, op)
            if lvalue is (sym == "or"):  # decided: the right side is not evaluated
                return lvalue
        rvalue, rpos = self.operand(right, frame)
        if logical:
            _check_logical(rvalue, op)
            return rvalue
        try:
            if sym == "|":
                union = Seq(lvalue) if isinstance(lvalue, Seq) else Seq([lvalue])
                union.extend(rvalue if isinstance(rvalue, Seq) else [rvalue])
                return union
            if sym == "=":
                return _equals(lvalue, lpos, rvalue, rpos)
            if sym == "!=":
                return not _equals(lvalue, lpos, rvalue, rpos)
            if sym in ("<", ">"):
                x, y = to_float(lvalue, lpos), to_float(rvalue, rpos)
                return x < y if sym == "<" else x > y
            return _arithmetic(sym, lvalue, lpos, rvalue, rpos)
        except XPathError as e:
            raise _at_operator(e, op) from None

    # -- paths
    def path(self, path: _Path, frame: _Frame) -> Value:
        head = path.head
        value: Value
        if path.absolute:
            value = Seq([document_of(self.context)])
            if isinstance(head, _Step):
                value = self.step(value, head, path.absolute == "//", frame)
        elif isinstance(head, _Literal):
            value = head.value
        elif isinstance(head, _Expr):
            value = self.expr(head, frame)[0]
        elif isinstance(head, _Func):
            value = self.call(head, frame, None)
        else:
            assert isinstance(head, _Step)
            value = self.step(Seq([frame.item]), head, False, frame)
        for predicate in path.filters:
            value = self.filter(value, predicate)
        for descendant, step in path.steps:
            value = self.step(value, step, descendant, frame)
        return value

    def step(self, value: Value, step: _Step, descendant: bool, frame: _Frame) -> Value:
        if not isinstance(value, Seq):
            raise XPathError(
                f"Path step at character {step.pos} can only be applied to a sequence")
        self.charge(len(value) * (self.doc_size() if descendant else 1))
        if descendant and step.kind == "name":
            result = Seq()
            for item in value:
                result.extend(_descendants(item, step.name))
        else:
            if descendant:
                value = Seq(n for item in value for n in _descendants_or_self(item))
            if step.func is not None:
                result = self.call(step.func, frame, value)
            else:
                result = Seq()
                for item in value:
                    result.extend(self.single_step(item, step))
        for predicate in step.filters:
            result = self.filter(result, predicate)
        return result

    @staticmethod
    def single_step(item: object, step: _Step) -> Iterable[object]:
        kind = step.kind
        if kind == "name":
            return _children(item, step.name)
        if kind == "attr":
            if not _is_element(item):
                return ()
            if step.name == "*":
                return [AttrNode(item, key) for key in item.attrib]
            return [AttrNode(item, step.name)] if item.get(step.name) is not None else ()
        if kind == "dot":
            return (item,)
        if kind == "dotdot":
            parent = _parent(item)
            return (parent,) if parent is not None else ()
        if step.axis == "following-sibling":
            return _siblings(item, step.name, following=True)
        if step.axis == "preceding-sibling":
            return _siblings(item, step.name, following=False)
        raise XPathError(
            f"XPath Eval : Unknown axis : {step.axis} in axis {step.axis} at character "
            f"{step.pos}")

    def filter(self, value: Value, predicate: _Expr) -> Seq:
        if not isinstance(value, Seq):
            raise XPathError("Filters can only be applied on sequences")
        if predicate.index is not None:
            n = predicate.index
            return Seq([value[n - 1]]) if 1 <= n <= len(value) else Seq()
        size = len(value)
        self.charge(size)
        kept = Seq()
        for position, item in enumerate(value, 1):
            result, pos = self.expr(predicate, _Frame(item, position, size))
            if to_bool(result, pos):
                kept.append(item)
        return kept

    def call(self, func: _Func, frame: _Frame, left: Seq | None) -> Value:
        function = self.functions.get(func.name)
        if function is None:
            raise XPathError(f"Unknown function : {func.name} at character {func.pos}")
        args = [self.expr(arg, frame) for arg in func.args]
        try:
            return function(self, frame, args, left)
        except XPathError as e:
            if e.passthrough:
                raise
            raise XPathError(
                f"{e.context} : {e.message} in function {func.name}() at character {func.pos}",
                waiting=e.waiting,
            ) from None


def _check_logical(value: Value, op: _Op) -> None:
    if not isinstance(value, bool):
        raise XPathError(
            f"Logical operator '{op.sym}' can only operate on boolean values while evaluating "
            f"operator at character {op.pos}", f"Operator {op.sym.upper()}")


def _at_operator(error: XPathError, op: _Op) -> XPathError:
    return XPathError(f"{error.message} while evaluating operator at character {op.pos}",
                      error.context)


def _matches(node: object, name: str) -> bool:
    if not _is_element(node):
        return False
    return name == "*" or node.tag == name or (node.tag[:1] == "{" and node_name(node) == name)


def _children(item: object, name: str) -> Iterable[object]:
    if isinstance(item, DocNode):
        return (item.root,) if _matches(item.root, name) else ()
    if not _is_element(item):
        return ()
    return [c for c in item if _matches(c, name)]


def _descendants(item: object, name: str) -> list[object]:
    """Matching descendants in post-order, the way the original's ``//`` lists them."""
    if isinstance(item, DocNode):
        start, include_self = item.root, True
    elif _is_element(item):
        start, include_self = item, False
    else:
        return []
    found = [el for _, el in etree.iterwalk(start, events=("end",)) if _matches(el, name)]
    if not include_self and found and found[-1] is start:
        found.pop()
    return found


def _descendants_or_self(item: object) -> list[object]:
    if isinstance(item, DocNode):
        return [*_descendants(item, "*"), item]
    if _is_element(item):
        return [el for _, el in etree.iterwalk(item, events=("end",))]
    return [item]


def _parent(item: object) -> object | None:
    if isinstance(item, etree._Element):
        parent = item.getparent()
        if parent is None and item.getroottree().getroot() is item:
            return DocNode(item)
        return parent
    if isinstance(item, TextNode):
        return item.owner.getparent() if item.tail else item.owner
    return None


def _siblings(item: object, name: str, *, following: bool) -> list[object]:
    """Sibling axes. With ``*`` text nodes are included (quirk Q7); preceding siblings
    come nearest first."""
    if isinstance(item, TextNode):
        parent = item.owner.getparent() if item.tail else item.owner
    elif isinstance(item, etree._Element):
        parent = item.getparent()
    else:
        return []
    if parent is None:
        if isinstance(item, TextNode):
            return []
        row = [*reversed(list(item.itersiblings(preceding=True))), item, *item.itersiblings()]
    else:
        row = [TextNode(parent, False)] if parent.text else []
        for child in parent:
            row.append(child)
            if child.tail:
                row.append(TextNode(child, True))
    index = next(i for i, node in enumerate(row) if node is item or node == item)
    side = row[index + 1:] if following else row[index - 1::-1] if index else []
    return side if name == "*" else [node for node in side if _matches(node, name)]


# --------------------------------------------------------------------------- functions


def _arity(args: list[_Arg], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise XPathError(f"Expecting {expected} parameter(s), got {len(args)}")


def _sequence_arg(arg: _Arg) -> Seq:
    if not isinstance(arg[0], Seq):
        raise XPathError("Expecting sequence as parameter")
    return arg[0]


def _fn_true(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    return True


def _fn_false(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    return False


def _fn_not(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    return not to_bool(*args[0])


def _fn_count(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    return len(_sequence_arg(args[0]))


def _fn_name(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 0, 1)
    if args:
        items: Iterable[object] = _sequence_arg(args[0])
    elif left is not None:
        items = left
    else:
        items = (frame.item,)
    return Seq(node_name(item) if is_node(item) else "" for item in items)


def _fn_position(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    if left is not None:
        return Seq(range(1, len(left) + 1))
    return frame.position


def _fn_last(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    if left is not None:
        return Seq([len(left)] * len(left))
    return frame.size


def _fn_string_length(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    return len(to_string(*args[0]).encode("utf-8", "surrogatepass"))


def _fn_substring(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    """C++ ``substr``: 0-based, in bytes (quirk Q4)."""
    _arity(args, 2, 3)
    data = to_string(*args[0]).encode("utf-8", "surrogatepass")
    start = to_int(*args[1])
    if start < 0 or start > len(data):
        raise XPathError("Unexpected exception", "substring", passthrough=True)
    length = to_int(*args[2]) if len(args) == 3 else -1
    end = len(data) if length < 0 else start + length  # negative: a huge size_t
    return data[start:end].decode("utf-8", "replace")


def _fn_contains(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 2)
    return to_string(*args[1]) in to_string(*args[0])


def _fn_string_join(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 2)
    items = _sequence_arg(args[0])
    return to_string(*args[1]).join(_item_string(item) for item in items)


def _extremum(args: list[_Arg], pick: Callable[[list[float]], float]) -> Value:
    _arity(args, 1)
    items = _sequence_arg(args[0])
    if not items:
        return Seq()
    pos = args[0][1]
    numbers = [to_float(_item_value(i), pos) for i in items]
    best = pick(numbers)
    return float(math.trunc(best)) if math.isfinite(best) else best


def _fn_min(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    return _extremum(args, min)


def _fn_max(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    return _extremum(args, max)


def _fn_current(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    return Seq([run.context])


_CORE: dict[str, _Function] = {
    "true": _fn_true, "false": _fn_false, "not": _fn_not, "count": _fn_count,
    "name": _fn_name, "position": _fn_position, "last": _fn_last,
    "string-length": _fn_string_length, "substring": _fn_substring,
    "contains": _fn_contains, "string-join": _fn_string_join, "min": _fn_min,
    "max": _fn_max, "current": _fn_current,
}


def job_parent(node: etree._Element) -> etree._Element | None:
    """``node/../..`` when ``node`` is a job or task: its job, or the root ``workflow``."""
    parent = node.getparent()
    if parent is None or parent.tag not in ("subjobs", "tasks"):
        return None
    owner = parent.getparent()
    return owner if owner is not None and owner.tag in ("job", "workflow") else None


def _scope(run: _Run) -> WorkflowScope:
    assert run.scope is not None  # only registered with a scope
    return run.scope


def _base(run: _Run, left: Seq | None) -> etree._Element | None:
    """The node workflow functions start from: the parent job, or the first node of the
    left context when the function is used as a path step."""
    if left is not None:
        base = left[0] if left else None
    else:
        base = _scope(run).parent_job
    return base if _is_element(base) else None


def _fn_parameter(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    name = to_string(*args[0])
    root = document_of(run.context).root
    found = Seq()
    if root.tag == "workflow":
        found.extend(p for p in root.iterfind("parameters/parameter") if p.get("name") == name)
    return to_string(found, args[0][1])


def _fn_current_job(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    job = _scope(run).current_job
    return Seq([job] if job is not None else [])


def _fn_parent_job(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 0, 1)
    job = _scope(run).parent_job
    if job is None:
        raise XPathError("Not enough parents", "evqGetParentJob()")
    if not args:
        return Seq([job])
    value, pos = args[0]
    if isinstance(value, int) and not isinstance(value, bool):
        for _ in range(value):
            job = job_parent(job)
            if job is None:
                raise XPathError("Not enough parents", "evqGetParentJob()")
        return Seq([job])
    name = to_string(value, pos)
    node: etree._Element | None = job
    while node is not None:
        if node.tag == "job" and node.get("name") == name:
            return Seq([node])
        node = job_parent(node)
    raise XPathError(f"Could not find job '{name}' in parents", "evqGetParentJob()")


def _task_children(base: etree._Element | None, child: str,
                   keep: Callable[[etree._Element], bool]) -> Iterator[etree._Element]:
    if base is None:
        return
    for task in base.iterfind("tasks/task"):
        if keep(task):
            yield from task.iterfind(child)


def _fn_output(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    name = to_string(*args[0])
    return Seq(_task_children(_base(run, left), "output",
                              lambda t: t.get("path") == name or t.get("name") == name))


def _fn_input(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 2)
    path, name = to_string(*args[0]), to_string(*args[1])
    inputs = _task_children(_base(run, left), "input", lambda t: t.get("path") == path)
    return Seq(i for i in inputs if i.get("name") == name)


def _fn_context(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    base = _base(run, left)
    ident = base.get("context-id") if base is not None else None
    node = _scope(run).resolve(ident) if ident else None
    return Seq([node] if node is not None else [])


def _fn_wait(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    if to_bool(*args[0]):
        return True
    raise XPathError("Waiting for condition to become true", "evqWait()", waiting=True)


def _fn_job(run: _Run, frame: _Frame, args: list[_Arg], left: Seq | None) -> Value:
    _arity(args, 1)
    name = to_string(*args[0])
    return Seq(job for subjobs in _descendants(document_of(run.context), "subjobs")
               for job in subjobs.iterchildren("job") if job.get("name") == name)


_INSTANCE_SITE: dict[str, _Function] = {
    **_CORE,
    "evqGetWorkflowParameter": _fn_parameter, "evqGetCurrentJob": _fn_current_job,
    "evqGetParentJob": _fn_parent_job, "evqGetOutput": _fn_output, "evqGetInput": _fn_input,
    "evqGetContext": _fn_context, "evqWait": _fn_wait,
}
_ROOT_SITE: dict[str, _Function] = {
    **_CORE, "evqGetWorkflowParameter": _fn_parameter, "evqGetJob": _fn_job,
}


# --------------------------------------------------------------------------- public API


class XPath:
    """A compiled expression. Immutable: share it freely (also between threads)."""

    __slots__ = ("source", "_tree")

    def __init__(self, source: str, tree: _Expr) -> None:
        self.source = source
        self._tree = tree

    def __repr__(self) -> str:
        return f"XPath({self.source!r})"

    def evaluate(self, context: Node, scope: WorkflowScope | None = None) -> Value:
        """The raw result: str, int, float, bool or :class:`Seq`."""
        try:
            return _Run(context, scope).expr(self._tree, _Frame(context, 0, 0))[0]
        except XPathError as e:
            e.expression = self.source
            raise
        except (RecursionError, OverflowError):
            error = XPathError("Unexpected exception", "XPath Eval")
            error.expression = self.source
            raise error from None

    def boolean(self, context: Node, scope: WorkflowScope | None = None) -> bool:
        """Conditions: the result must be a boolean (quirk Q9)."""
        value = self.evaluate(context, scope)
        if not isinstance(value, bool):
            error = XPathError("Expected boolean result", "DOMXPath")
            error.expression = self.source
            raise error
        return value

    def first_string(self, context: Node, scope: WorkflowScope | None = None) -> str | None:
        """``<value select>``: the first item's string, None for an empty sequence."""
        value = self.evaluate(context, scope)
        if isinstance(value, Seq):
            return _item_string(value[0]) if value else None
        return to_string(value, self._tree.pos)

    def nodes(self, context: Node, scope: WorkflowScope | None = None) -> list[Node]:
        """Loops, ``copy`` and custom attributes: every item must be a node."""
        value = self.evaluate(context, scope)
        if not isinstance(value, Seq) or not all(map(is_node, value)):
            raise ResultError("Evaluation result is not a node")
        return list(value)

    def first_node(self, context: Node, scope: WorkflowScope | None = None) -> Node | None:
        """``{xpath}`` templates: the first item, which must be a node (quirk Q10)."""
        value = self.evaluate(context, scope)
        if not isinstance(value, Seq):
            raise ResultError("Evaluation result is not a node")
        if not value:
            return None
        if not is_node(value[0]):
            raise ResultError("Evaluation result is not a node")
        return value[0]


def compile_xpath(expression: str) -> XPath:
    """Parse ``expression``; raises :class:`XPathError` (context ``XPath Parser``).
    Expressions longer than :data:`MAX_EXPRESSION` are refused (a client's 16 MB
    ``xpathfilter`` would hold the event loop for minutes), and only short ones are cached
    (the cache must not keep thousands of large trees alive)."""
    if len(expression) > MAX_EXPRESSION:
        error = XPathError(f"Expression longer than {MAX_EXPRESSION} characters",
                           "XPath Parser")
        error.expression = expression[:64] + "..."
        raise error
    if len(expression) > _CACHED_LENGTH:
        return _compile(expression)
    return _compile_cached(expression)


def _compile(expression: str) -> XPath:
    try:
        parser = _Parser(_tokenize(expression))
        return XPath(expression, parser.expression(frozenset(), None))
    except XPathError as e:
        e.expression = expression
        raise


_compile_cached = lru_cache(maxsize=4096)(_compile)


def evaluate(expression: str, context: Node, scope: WorkflowScope | None = None) -> Value:
    return compile_xpath(expression).evaluate(context, scope)


def parse_check(expression: str) -> str | None:
    """``<xpath action="parse">``: the parser's message, or None when the syntax is valid.
    Unknown functions and type errors are only found by evaluation (errata 8)."""
    try:
        compile_xpath(expression)
    except XPathError as e:
        return e.message
    return None


_TEMPLATE = re.compile(r"\{[^}]+\}")


def expand_template(text: str, context: Node, scope: WorkflowScope | None = None) -> str:
    """Replace each ``{xpath}`` of a ``host``/``user``/``queue_host`` value by the text of the
    node it selects; an empty result leaves the ``{...}`` as is (workflow.md §3.8)."""
    result = text
    for match in _TEMPLATE.finditer(text):
        node = compile_xpath(match.group(0)[1:-1]).first_node(context, scope)
        if node is not None:
            result = result.replace(match.group(0), string_value(node), 1)
    return result
