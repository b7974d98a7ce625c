"""Serializer: byte-exact with the original's Xerces output (errata §6, golden responses)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from lxml import etree

from evqueue.protocol.errors import ApiError
from evqueue.protocol.xmlout import error_response, response, sanitize_xml_text, serialize

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden.json").read_text())["transcripts"]
GOLDEN_RESPONSES = sorted(
    {data for exchange in GOLDEN.values() for kind, data in exchange if kind == "RESPONSE"}
)


@pytest.mark.parametrize("text", GOLDEN_RESPONSES, ids=lambda t: t[:40])
def test_golden_responses_round_trip_byte_exact(text: str) -> None:
    assert serialize(etree.fromstring(text.encode())) == text.encode()


def test_errata_attribute_escaping() -> None:
    el = etree.Element("response")
    el.set("preferences", "a\nb\rc\td>e'f\"g<h&i")
    assert serialize(el) == b'<response preferences="a&#xA;b&#xD;c&#x9;d>e\'f&quot;g&lt;h&amp;i"/>'


def test_errata_text_escaping() -> None:
    el = etree.Element("output")
    el.text = "a<b>c&d\"e'f\tg\rh"
    assert serialize(el) == b"<output>a&lt;b&gt;c&amp;d\"e'f\tg&#xD;h</output>"


def test_attributes_are_sorted_by_name() -> None:
    el = etree.Element("response")
    for name in ["status", "workflow-instance-id", "node", "error-code", "error", "Z", "a"]:
        el.set(name, name)
    assert serialize(el) == (
        b'<response Z="Z" a="a" error="error" error-code="error-code" node="node" '
        b'status="status" workflow-instance-id="workflow-instance-id"/>'
    )


def test_empty_element_forms() -> None:
    el = etree.Element("response", node="localhost", status="OK")
    assert serialize(el) == b'<response node="localhost" status="OK"/>'
    el.text = ""  # processmanager tail of an empty log
    assert serialize(el) == b'<response node="localhost" status="OK"></response>'
    el.text = None
    etree.SubElement(el, "x")
    assert serialize(el) == b'<response node="localhost" status="OK"><x/></response>'


def test_tails_comments_pis_and_non_ascii() -> None:
    root = etree.fromstring("<r>é<a/>tail &amp; <!-- c --><?pi x?>→<b>ü</b></r>".encode())
    root.tail = "not part of the document"
    assert serialize(root) == "<r>é<a/>tail &amp; <!-- c --><?pi x?>→<b>ü</b></r>".encode()


def test_namespaced_names_are_written_as_local_names() -> None:
    el = etree.Element("{urn:x}workflow", {"{urn:x}b": "1", "a": "2"})
    assert serialize(el) == b'<workflow a="2" b="1"/>'


def test_response_helpers() -> None:
    ok = response("node1", **{"uptime": "3"})
    ok.set("workflow-instance-id", "7")
    assert serialize(ok) == (
        b'<response node="node1" status="OK" uptime="3" workflow-instance-id="7"/>'
    )
    ko = error_response("localhost", ApiError("MISSING_PARAMETER", "Missing 'id' attribute"))
    assert serialize(ko) == (
        b'<response error="Missing \'id\' attribute" error-code="MISSING_PARAMETER" '
        b'node="localhost" status="KO"/>'
    )
    uncoded = error_response("localhost", ApiError(None, "Tag not found"))
    assert serialize(uncoded) == b'<response error="Tag not found" node="localhost" status="KO"/>'


def test_sanitize_replaces_control_characters_in_bulk() -> None:
    assert sanitize_xml_text("ok\ttext\n") == "ok\ttext\n"
    assert sanitize_xml_text("a\x00b\x1bc\x7f") == "a\ufffdb\ufffdc\x7f"
    nuls = "\x00" * 400_000
    started = time.monotonic()
    clean = sanitize_xml_text(nuls)
    assert time.monotonic() - started < 0.5
    el = etree.Element("output")
    el.text = clean  # lxml accepts it now
    assert serialize(el).count("\ufffd".encode()) == 400_000


def test_error_response_sanitizes_the_message() -> None:
    ko = error_response("n", ApiError(None, "bad \x01 output"))
    assert ko.get("error") == "bad \ufffd output"
