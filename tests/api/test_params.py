"""Query attribute parsing rules (protocol.md §3.0, errata "checked" list, golden 41/44)."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from evqueue.api.params import Params
from evqueue.protocol.errors import ApiError


def params(**attrs: str) -> Params:
    return Params(etree.Element("query", attrs))


def error(call: object) -> tuple[str | None, str]:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    assert not info.value.fatal
    return info.value.code, info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1abc", 1), (" 1", 1), ("+1", 1), ("1.9", 1), ("-12x", -12), ("\t\n 7", 7), ("007", 7),
     ("2147483647", 2**31 - 1), ("-2147483648", -(2**31)), ("0x10", 0)],
)
def test_int_like_stoi(value: str, expected: int) -> None:
    assert params(id=value).int("id") == expected


@pytest.mark.parametrize("value", ["", "abc", " ", "+", "-", "+-1", "99999999999", "2147483648",
                                   "-2147483649", "\u0661", ".5"])
def test_invalid_integers(value: str) -> None:
    assert error(lambda: params(id=value).int("id")) == (
        "INVALID_INTEGER",
        "Attribute 'id' has invalid integer value",  # golden 41
    )


def test_missing_and_defaults() -> None:
    p = params(name="x")
    assert error(lambda: p.int("id")) == ("MISSING_PARAMETER", "Missing 'id' attribute")
    assert error(lambda: p.str("comment")) == ("MISSING_PARAMETER", "Missing 'comment' attribute")
    assert error(lambda: p.bool("active")) == ("MISSING_PARAMETER", "Missing 'active' attribute")
    assert error(lambda: p.base64("content")) == ("MISSING_PARAMETER",
                                                  "Missing 'content' attribute")
    assert error(lambda: p.uint("id")) == ("MISSING_PARAMETER", "Missing 'id' attribute")
    assert p.int("id", 0) == 0
    assert p.int("id", None) is None
    assert p.uint("id", 5) == 5
    assert p.str("comment", "") == ""
    assert p.bool("active", True) is True
    assert p.base64("content", b"") == b""
    assert p.str("name") == "x"


def test_uint_wraps_like_an_unsigned_int() -> None:
    assert params(id="-1").uint("id") == 4294967295
    assert params(id="12").uint("id") == 12
    assert error(lambda: params(id="x").uint("id"))[0] == "INVALID_INTEGER"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", True), ("no", False), ("1", True), ("0", False), ("2", True), ("-1", True),
     ("1x", True), (" 0", False)],
)
def test_booleans(value: str, expected: bool) -> None:
    assert params(active=value).bool("active") is expected


@pytest.mark.parametrize("value", ["YES", "true", "false", "", "No", "on", "99999999999"])
def test_invalid_booleans(value: str) -> None:
    assert error(lambda: params(active=value).bool("active")) == (
        "INVALID_BOOLEAN",
        "Attribute 'active' has invalid boolean value",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbA==", b"hell"),
        ("aGVs bG8=", b"hello"),
        ("aGVs\r\n\tbG8=\n", b"hello"),
        ("aGVsbG8", b"hel"),  # trailing partial quantum dropped
        ("aGVsbA", b"hel"),
        ("aGVsb", b"hel"),
        ("", b""),
        ("eyJhIjoxfT==", b'{"a":1}'),  # the original's non-canonical padding (errata 10)
        ("PHdvcmtmbG93PjxzdWJqb2JzLz48L3dvcmtmbG93Pg==", b"<workflow><subjobs/></workflow>"),
    ],
)
def test_base64_lenient(value: str, expected: bytes) -> None:
    assert params(content=value).base64("content") == expected


@pytest.mark.parametrize("value", ["!!!", "aGVs-bG8=", "aGVsbG8=x", "aG=Vs", "é", "aGVs_bG8"])
def test_base64_invalid(value: str) -> None:
    assert error(lambda: params(content=value).base64("content")) == (
        "INVALID_PARAMETER",
        "Invalid base64 sequence",  # golden 44
    )


def test_base64_large_content() -> None:
    payload = bytes(range(256)) * 4096
    assert params(content=base64.b64encode(payload).decode()).base64("content") == payload


def test_workflow_parameters() -> None:
    query = etree.fromstring(
        b'<instance action="launch" name="wf"><parameter name="greeting" value="hello" />'
        b'<parameter name="items" /><parameter name="greeting" value="second" />'
        b'<other name="x" value="y"/><parameter value="noname"/>'
        b'<nested><parameter name="deep" value="no"/></nested></instance>'
    )
    assert Params(query).workflow_parameters() == [
        ("greeting", "hello"),
        ("items", ""),
        ("", "noname"),
    ]
    assert params().workflow_parameters() == []


def test_prefixed_attributes() -> None:
    p = params(action="list", parameter_greeting="hi", parameter_items="a",
               customattribute_host="h1", parameters="x")
    assert p.prefixed("parameter_") == {"greeting": "hi", "items": "a"}
    assert p.prefixed("customattribute_") == {"host": "h1"}
    assert p.prefixed("filter_") == {}
