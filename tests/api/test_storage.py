"""``storage`` (variables of the storage module, errata 19): addressing, typed JSON values,
every action and error, events, and the USER-profile rights."""

from __future__ import annotations

import pytest
from admintest import ok_text, user_events
from apitest import Api, text

FIRST_ID = 38  # the original's DDL starts t_storage's auto-increment there


def set_(address: str, type_: str, structure: str, value: str) -> str:
    return (f'<storage action="set" {address} type="{type_}" structure="{structure}" '
            f"value='{value}'/>")


async def test_set_and_get(any_api: Api) -> None:
    api = any_api
    assert text(await api.ok(set_('path="a/b" name="c"', "INT", "NONE", "5"))) == ok_text()
    expected = ok_text(id=str(FIRST_ID), name="c", path="a/b", structure="NONE", type="INT",
                       value="5")
    for address in ('path="a/b" name="c"', 'path="a/b/c"', f'id="{FIRST_ID}"'):
        assert text(await api.ok(f'<storage action="get" {address}/>')) == expected, address
    await api.ok(set_('name="top"', "BOOLEAN", "MAP", '{"b": true, "a": false}'))
    top = await api.ok('<storage action="get" path="top"/>')
    assert (top.get("path"), top.get("name"), top.get("value")) == (
        "", "top", '{"a":false,"b":true}')
    assert user_events(api) == [("VARIABLE_SET", FIRST_ID), ("VARIABLE_SET", FIRST_ID + 1)]


async def test_set_replaces(api: Api) -> None:
    await api.ok(set_('path="a/c"', "INT", "NONE", "5"))
    await api.ok(set_('path="a/c"', "STRING", "ARRAY", '["x", "é"]'))
    answer = await api.ok('<storage action="get" path="a/c"/>')
    assert (answer.get("id"), answer.get("type"), answer.get("structure"),
            answer.get("value")) == (str(FIRST_ID), "STRING", "ARRAY", '["x","é"]')
    # type and structure default to the variable's own
    await api.ok(f"<storage action=\"set\" id=\"{FIRST_ID}\" value='[\"y\"]'/>")
    assert (await api.ok('<storage action="get" path="a/c"/>')).get("value") == '["y"]'
    assert await api.ko('<storage action="set" id="99" value="1"/>') == (
        None, "Variable not found : « 99 »")


@pytest.mark.parametrize(("query", "error"), [
    ('<storage action="set" path="a/b" value="1" structure="NONE"/>',
     ("INVALID_PARAMETER", "Type must be set before value")),
    ('<storage action="set" path="a/b" value="1" type="INT"/>',
     ("INVALID_PARAMETER", "Structure must be set before value")),
    ('<storage action="set" path="a/b" type="INT" structure="NONE"/>',
     ("MISSING_PARAMETER", "Missing 'value' attribute")),
    ('<storage action="set" type="INT" structure="NONE" value="1"/>',
     ("MISSING_PARAMETER", "You must provied either « id », « path » and/or « name »")),
    (set_('path="a/b"', "FLOAT", "NONE", "1"), ("INVALID_PARAMETER", "Invalid type « FLOAT »")),
    (set_('path="a/b"', "INT", "LIST", "1"), ("INVALID_PARAMETER", "Invalid structure « LIST »")),
    (set_('path="a/b"', "INT", "NONE", "{"), ("INVALID_PARAMETER", "Invalid json")),
    (set_('path="a/b"', "INT", "NONE", '"str"'),
     ("INVALID_PARAMETER", 'Invalid json : expecting Integer based on given type for « "str" »')),
    (set_('path="a/b"', "INT", "NONE", "1.5"),
     ("INVALID_PARAMETER", "Invalid json : expecting Integer based on given type for « 1.5 »")),
    (set_('path="a/b"', "BOOLEAN", "NONE", "1"),
     ("INVALID_PARAMETER", "Invalid json : expecting Boolean based on given type for « 1 »")),
    (set_('path="a/b"', "INT", "ARRAY", '[1, "x"]'),
     ("INVALID_PARAMETER", 'Invalid json : expecting Integer based on given type for « "x" »')),
    (set_('path="a/b"', "INT", "ARRAY", "1"),
     ("INVALID_PARAMETER", "Invalid json : expecting Array based on given structure")),
    (set_('path="a/b"', "STRING", "MAP", '{"k": 1}'),
     ("INVALID_PARAMETER", "Invalid json : expecting String based on given type for « 1 »")),
    (set_('path="a/b"', "STRING", "MAP", '["x"]'),
     ("INVALID_PARAMETER", "Invalid json : expecting Map based on given structure")),
    (set_('path="a/b"', "STRING", "NONE", '"\\ud800"'),
     ("INVALID_PARAMETER", "Invalid json : invalid Unicode string")),
    (set_('path="/a/b"', "INT", "NONE", "1"), ("INVALID_PARAMETER", "Invalid path « /a »")),
    (set_('path="a//b"', "INT", "NONE", "1"), ("INVALID_PARAMETER", "Invalid path « a/ »")),
    (set_('path="a/" name="b"', "INT", "NONE", "1"), ("INVALID_PARAMETER", "Invalid path « a/ »")),
    (set_(f'path="{"p" * 256}" name="b"', "INT", "NONE", "1"),
     ("INVALID_PARAMETER", f"Invalid path « {'p' * 256} »")),
    (set_('path="a" name="b/c"', "INT", "NONE", "1"),
     ("INVALID_PARAMETER", "Invalid name « b/c »")),
    (set_('path="a/"', "INT", "NONE", "1"), ("INVALID_PARAMETER", "Invalid name «  »")),
    (set_(f'name="{"n" * 65}"', "INT", "NONE", "1"),
     ("INVALID_PARAMETER", f"Invalid name « {'n' * 65} »")),
])
async def test_set_errors(api: Api, query: str, error: tuple[str, str]) -> None:
    assert await api.ko(query) == error
    assert await api.server.storage.query("SELECT * FROM t_storage") == []
    assert api.events == []


async def test_longest_path_and_name(api: Api) -> None:
    await api.ok(set_(f'path="{"p" * 255}" name="{"n" * 64}"', "INT", "NONE", "1"))


async def test_append(api: Api) -> None:
    await api.ok(set_('path="arr"', "INT", "ARRAY", "[1]"))
    await api.ok('<storage action="append" path="arr" value="2"/>')
    await api.ok('<storage action="append" path="arr" value="3" key="ignored"/>')
    assert (await api.ok('<storage action="get" path="arr"/>')).get("value") == "[1,2,3]"
    await api.ok(set_('path="map"', "STRING", "MAP", "{}"))
    await api.ok('<storage action="append" path="map" key="k" value=\'"v"\'/>')
    assert (await api.ok('<storage action="get" path="map"/>')).get("value") == '{"k":"v"}'
    await api.ok(set_('path="one"', "INT", "NONE", "1"))
    not_array = ("TYPE_ERROR", "Append can only be used on array")
    assert await api.ko('<storage action="append" path="one" value="1"/>') == not_array
    assert await api.ko('<storage action="append" path="map" value=\'"v"\'/>') == not_array
    assert await api.ko('<storage action="append" path="arr" value=\'"x"\'/>') == (
        "INVALID_PARAMETER", 'Invalid json : expecting Integer based on given type for « "x" »')
    assert await api.ko('<storage action="append" path="arr"/>') == (
        "MISSING_PARAMETER", "Missing 'value' attribute")
    assert await api.ko('<storage action="append" path="nope" value="1"/>') == (
        None, "Variable not found : « nope »")
    assert (await api.ok('<storage action="get" path="arr"/>')).get("value") == "[1,2,3]"
    arr = FIRST_ID
    assert [e for e in user_events(api) if e[1] == arr] == [("VARIABLE_SET", arr)] * 3


async def test_inc_dec_add(any_api: Api) -> None:
    api = any_api
    await api.ok(set_('path="n"', "INT", "NONE", "10"))
    assert text(await api.ok('<storage action="inc" path="n"/>')) == ok_text(value="11")
    assert (await api.ok('<storage action="dec" path="n"/>')).get("value") == "10"
    assert (await api.ok('<storage action="add" path="n" value="-15"/>')).get("value") == "-5"
    assert (await api.ok('<storage action="get" path="n"/>')).get("value") == "-5"
    assert user_events(api) == [("VARIABLE_SET", FIRST_ID)] * 4
    await api.ok(set_('path="s"', "STRING", "NONE", '"x"'))
    await api.ok(set_('path="a"', "INT", "ARRAY", "[]"))
    assert await api.ko('<storage action="inc" path="a"/>') == (
        "TYPE_ERROR", "Add can only be used on unstructured variables")
    assert await api.ko('<storage action="dec" path="s"/>') == (
        "TYPE_ERROR", "Add can only be used on integer variables")
    assert await api.ko('<storage action="add" path="n"/>') == (
        "MISSING_PARAMETER", "Missing 'value' attribute")
    assert await api.ko('<storage action="add" path="n" value="x"/>') == (
        "INVALID_INTEGER", "Attribute 'value' has invalid integer value")
    assert await api.ko('<storage action="inc" path="zz"/>') == (
        None, "Variable not found : « zz »")


async def test_head_tail(api: Api) -> None:
    await api.ok(set_('path="s"', "STRING", "ARRAY", '["first", "x\\u0001", "last"]'))
    assert text(await api.ok('<storage action="head" path="s"/>')) == ok_text(value="first")
    assert (await api.ok('<storage action="tail" path="s"/>')).get("value") == "last"
    await api.ok(set_('path="i"', "INT", "ARRAY", "[4, 5]"))  # crashed the original (§6.4)
    assert (await api.ok('<storage action="head" path="i"/>')).get("value") == "4"
    await api.ok(set_('path="c"', "STRING", "ARRAY", '["a\\u0001"]'))
    assert (await api.ok('<storage action="tail" path="c"/>')).get("value") == "a\ufffd"
    await api.ok(set_('path="e"', "INT", "ARRAY", "[]"))
    await api.ok(set_('path="n"', "INT", "NONE", "1"))
    for action in ("head", "tail"):
        assert await api.ko(f'<storage action="{action}" path="e"/>') == (
            "TYPE_ERROR", "Array is empty")
        assert await api.ko(f'<storage action="{action}" path="n"/>') == (
            "TYPE_ERROR", "Tail can only be used on array")


async def test_unset(api: Api) -> None:
    await api.ok(set_('path="a/b/c"', "INT", "NONE", "1"))
    await api.ok('<storage action="unset" path="a/b" name="c"/>')
    assert await api.ko('<storage action="get" path="a/b/c"/>') == (
        None, "Variable not found : « a/b/c »")
    assert await api.ko('<storage action="unset" path="a/b/c"/>') == (
        None, "Variable not found : « a/b/c »")
    assert user_events(api) == [("VARIABLE_SET", FIRST_ID), ("VARIABLE_UNSET", FIRST_ID)]


async def test_list(any_api: Api) -> None:
    api = any_api
    for path, value in (("a/x", "1"), ("a/b/y", "2"), ("a/b/z/w", "3"), ("ab/v", "4"),
                        ("top", "5")):
        await api.ok(set_(f'path="{path}"', "INT", "NONE", value))
    assert text(await api.ok('<storage action="list" path="a"/>')) == ok_text(
        f'<var id="{FIRST_ID}" name="x" value="1"/>')
    assert text(await api.ok('<storage action="list" path="a" recursive="yes"/>')) == ok_text(
        f'<var id="{FIRST_ID}" name="x" path="a" value="1"/>'
        f'<var id="{FIRST_ID + 1}" name="y" path="a/b" value="2"/>'
        f'<var id="{FIRST_ID + 2}" name="w" path="a/b/z" value="3"/>')
    assert [v.get("name") for v in await api.ok('<storage action="list" path=""/>')] == ["top"]
    every = await api.ok('<storage action="list" path="" recursive="1"/>')
    assert [v.get("name") for v in every] == ["top", "x", "y", "w", "v"]
    assert len(await api.ok('<storage action="list" path="nope" recursive="yes"/>')) == 0
    assert await api.ko('<storage action="list" recursive="yes"/>') == (
        "MISSING_PARAMETER", "Missing 'path' attribute")


async def test_actions(api: Api) -> None:
    assert await api.ko('<storage action="nope"/>') == (
        "UNKNOWN_COMMAND", "Unknown command or action")
    assert await api.ko('<storage/>') == ("MISSING_PARAMETER", "Missing 'action' attribute")
    assert await api.ko('<storage action="get"/>') == (
        "MISSING_PARAMETER", "You must provied either « id », « path » and/or « name »")


async def test_user_profile(api: Api) -> None:
    await api.ok(set_('path="a"', "INT", "ARRAY", "[1]"))
    bob = await api.add_user("bob")
    for action in ("get", "head", "tail"):
        await api.ok(f'<storage action="{action}" path="a"/>', bob)
    await api.ok('<storage action="list" path=""/>', bob)
    for query in (set_('path="b"', "INT", "NONE", "1"),
                  '<storage action="append" path="a" value="2"/>',
                  '<storage action="inc" path="a"/>', '<storage action="dec" path="a"/>',
                  '<storage action="add" path="a" value="1"/>',
                  '<storage action="unset" path="a"/>'):
        assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights"), query
    assert (await api.ok('<storage action="get" path="a"/>')).get("value") == "[1]"
