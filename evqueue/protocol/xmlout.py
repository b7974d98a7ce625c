"""Serialise response elements byte-compatibly with the original (Xerces) writer.

Rules (errata §6): no XML declaration, UTF-8, attributes sorted by name, attribute values
escape ``& < "`` and LF/CR/TAB as ``&#xA; &#xD; &#x9;`` (``>`` and ``'`` literal), text escapes
``& < >`` (and CR, so that it survives the client's line-end normalisation), ``<x/>`` for an
element without content, ``<x></x>`` for an element whose text is the empty string.

A small recursive writer is used rather than ``etree.tostring``: lxml neither sorts attributes
nor escapes like Xerces (``>`` in attributes, ``&#10;``), and the writer measured faster than
C14N plus fix-ups on typical responses (bench/serialize.py).
"""

from __future__ import annotations

import copy
import re

from lxml import etree

from evqueue.protocol.errors import ApiError

__all__ = ["error_response", "response", "sanitize_xml_text", "serialize"]

_ATTR_SPECIAL = re.compile('[&<"\n\r\t]')
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", '"': "&quot;", "\n": "&#xA;", "\r": "&#xD;", "\t": "&#x9;"}
)
_ATTR_PLAIN = re.compile("[&<\n\r\t{]")  # with the count of '"': see _attributes
_TEXT_SPECIAL = re.compile("[&<>\r]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"})
# Characters XML 1.0 forbids (lxml refuses them in text and attribute values).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def sanitize_xml_text(text: str) -> str:
    """Replace characters that XML 1.0 forbids (e.g. NULs in task output) by U+FFFD.

    One regex pass over the whole string: the original logged every replaced character.
    """
    return _NOT_XML.sub("\ufffd", text) if _NOT_XML.search(text) else text


def _text(value: str) -> str:
    return value.translate(_TEXT_ESCAPES) if _TEXT_SPECIAL.search(value) else value


def _local(name: str) -> str:
    """Queries lose their namespaces on input; never write Clark names either (a namespaced
    attribute keeps the rank of its Clark name in the sorted order)."""
    return name[name.index("}") + 1 :] if name[0] == "{" else name


def _attributes(items: list[tuple[str, str]]) -> str:
    """`` key="value"`` for each attribute, sorted and escaped."""
    items.sort()
    joined = "".join([f' {key}="{value}"' for key, value in items])
    # one check for the frequent case: no value needs escaping, no Clark name
    if _ATTR_PLAIN.search(joined) is None and joined.count('"') == 2 * len(items):
        return joined
    parts = []
    for key, value in items:
        if _ATTR_SPECIAL.search(value):
            value = value.translate(_ATTR_ESCAPES)
        if key[0] == "{":
            key = _local(key)
        parts.append(f' {key}="{value}"')
    return "".join(parts)


def _write(el: etree._Element, out: list[str]) -> None:
    tag = el.tag
    if tag.__class__ is not str:  # comment or processing instruction
        out.append(etree.tostring(el, encoding="unicode", with_tail=False))
        return
    if tag[0] == "{":
        tag = _local(tag)
    items = el.items()
    head = f"<{tag}{_attributes(items)}" if items else f"<{tag}"
    text = el.text
    if text is None and not len(el):
        out.append(head + "/>")
        return
    out.append(f"{head}>{_text(text)}" if text else head + ">")
    for child in el:
        _write(child, out)
        tail = child.tail
        if tail:
            out.append(_text(tail))
    out.append(f"</{tag}>")


def serialize(elem: etree._Element) -> bytes:
    """One element (without its tail) as UTF-8 bytes, without XML declaration."""
    out: list[str] = []
    _write(elem, out)
    return "".join(out).encode()


def response(node: str, status: str = "OK", **attrs: str) -> etree._Element:
    """A ``<response>`` root carrying ``node`` and ``status`` (present on every answer)."""
    if attrs:
        return etree.Element("response", attrs, node=node, status=status)
    template = _TEMPLATES.get((node, status))
    if template is None:
        template = etree.Element("response", node=node, status=status)
        if len(_TEMPLATES) < 16:
            _TEMPLATES[node, status] = template
    return copy.copy(template)  # copying beats setting the attributes again


_TEMPLATES: dict[tuple[str, str], etree._Element] = {}


def error_response(node: str, err: ApiError) -> etree._Element:
    """The KO answer for ``err``; ``error-code`` only when the original has one."""
    el = etree.Element("response", error=sanitize_xml_text(err.message), node=node, status="KO")
    if err.code is not None:
        el.set("error-code", err.code)
    return el
