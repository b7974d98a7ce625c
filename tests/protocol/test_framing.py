"""Framer: byte stream → XML documents, fed the way sockets deliver bytes."""

from __future__ import annotations

import json
import re
import resource
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from evqueue.protocol.framing import Framer, FramingError, parse_document
from evqueue.protocol.xmlout import serialize

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden.json").read_text())["transcripts"]
GOLDEN_MALFORMED = re.compile(r"this is not xml|<queuepool action=list|.*</queue>")
GOLDEN_QUERIES = [
    data.encode()
    for exchange in GOLDEN.values()
    for kind, data in exchange
    if kind == "REQUEST" and not GOLDEN_MALFORMED.match(data)
]
MB = 1 << 20


def feed_all(framer: Framer, chunks: list[bytes]) -> list[etree._Element]:
    docs: list[etree._Element] = []
    for chunk in chunks:
        docs += framer.feed(chunk)
    return docs


def texts(docs: list[etree._Element]) -> list[bytes]:
    return [serialize(doc) for doc in docs]


def error_of(data: bytes, max_size: int = MB) -> str:
    framer = Framer(max_size)
    with pytest.raises(FramingError) as info:
        framer.feed(data)
        framer.close()
    return info.value.message


@pytest.mark.parametrize("query", GOLDEN_QUERIES, ids=lambda q: q[:30].decode())
def test_golden_query_every_split_point(query: bytes) -> None:
    whole = texts(Framer(MB).feed(query))
    assert len(whole) == 1
    step = max(1, len(query) // 200)  # long base64 queries: every 1/200th of the text
    for cut in range(0, len(query) + 1, step):
        framer = Framer(MB)
        first = framer.feed(query[:cut])
        assert texts(first + framer.feed(query[cut:])) == whole


@pytest.mark.parametrize("query", GOLDEN_QUERIES[:6], ids=lambda q: q[:30].decode())
def test_golden_query_byte_by_byte(query: bytes) -> None:
    framer = Framer(MB)
    docs = feed_all(framer, [query[i : i + 1] for i in range(len(query))])
    assert texts(docs) == texts(Framer(MB).feed(query))
    assert not framer.pending


def test_document_attributes_and_parameters() -> None:
    (doc,) = Framer(MB).feed(GOLDEN["08-instance-launch"][0][1].encode())
    assert doc.tag == "instance"
    assert doc.get("name") == "golden_wf"
    assert [(p.get("name"), p.get("value")) for p in doc] == [
        ("greeting", "hello world"),
        ("items", "a,b"),
    ]


def test_pipelined_documents_in_one_write_are_all_returned_in_order() -> None:
    data = b"<ping />\n<status action='query' type='workflows' />\n<a><b/></a><c/>"
    docs = Framer(MB).feed(data)
    assert [d.tag for d in docs] == ["ping", "status", "a", "c"]
    assert docs[1].get("type") == "workflows"


def test_surplus_bytes_are_kept_for_the_next_document() -> None:
    framer = Framer(MB)
    assert [d.tag for d in framer.feed(b"<ping/><status action='q")] == ["ping"]
    assert framer.pending
    (doc,) = framer.feed(b"uery' type='x'/>")
    assert (doc.tag, doc.get("action")) == ("status", "query")


@pytest.mark.parametrize("query", [b"<ping/>", b"<a/>", b"<quit/>", b"<ping></ping>", b"<a\n/>"])
def test_short_query_is_returned_at_once(query: bytes) -> None:
    (doc,) = Framer(MB).feed(query)
    assert doc.tag == query[1:].split(b"/")[0].split(b">")[0].strip().decode()


def test_xml_declaration_after_leftover_newline() -> None:
    framer = Framer(MB)
    php = b'<?xml version="1.0" encoding="utf-8"?>\n<ping/>\n'
    assert [d.tag for d in framer.feed(php)] == ["ping"]
    assert [d.tag for d in framer.feed(b"\n" + php)] == ["ping"]
    assert [d.tag for d in Framer(MB).feed(b"  \r\n\t" + php + php)] == ["ping", "ping"]


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf<ping/>",
        b"<!-- a comment <ping/> --><ping/>",
        b"<!DOCTYPE ping><ping/>",
        b"<?xml version='1.0'?><!DOCTYPE ping ><!--c--><?pi data?><ping/>",
        b"<ping><!-- </ping> --><![CDATA[</ping>]]><?pi ?></ping>",
        b"<ping a='>' b=\"'/>\"/>",
    ],
)
def test_accepted_prologs_and_markup(data: bytes) -> None:
    expected = texts(Framer(MB).feed(data))
    assert [etree.fromstring(d).tag for d in expected] == ["ping"]
    # Same result when every byte arrives alone (BOM and markup split across reads).
    assert texts(feed_all(Framer(MB), [data[i : i + 1] for i in range(len(data))])) == expected


def test_cdata_and_quoted_markup_do_not_end_the_document() -> None:
    (doc,) = Framer(MB).feed(b"<ping a='>' b=\"'/>\"><![CDATA[</ping>]]></ping>")
    assert doc.get("a") == ">"
    assert doc.get("b") == "'/>"
    assert doc.text == "</ping>"


def test_latin1_declared_encoding_is_decoded() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><ping v="é€"/>'.replace("€", "")
    raw = data.encode("latin-1")
    (doc,) = Framer(MB).feed(raw)
    assert doc.get("v") == "é"
    (doc,) = feed_all(Framer(MB), [raw[i : i + 1] for i in range(len(raw))])
    assert doc.get("v") == "é"


def test_utf8_is_the_default_encoding() -> None:
    (doc,) = Framer(MB).feed('<ping v="é→"/>'.encode())
    assert doc.get("v") == "é→"


def test_namespaces_are_stripped_to_local_names() -> None:
    data = (
        b'<e:instance xmlns:e="urn:evq" xmlns="urn:default" e:action="launch" name="w">'
        b'<e:parameter e:name="p" value="1"/><parameter name="q"/></e:instance>'
    )
    (doc,) = Framer(MB).feed(data)
    assert doc.tag == "instance"
    assert dict(doc.attrib) == {"action": "launch", "name": "w"}
    assert [(p.tag, p.get("name")) for p in doc] == [("parameter", "p"), ("parameter", "q")]
    assert serialize(doc) == (
        b'<instance action="launch" name="w"><parameter name="p" value="1"/>'
        b'<parameter name="q"/></instance>'
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<queuepool action=list />\n", "attribute value expected"),
        (b"this is not xml\n", "invalid document structure"),
        (b"<queuepool action='list'></queue>\n", "expected end of tag 'queuepool'"),
        (b"<a></b>", "expected end of tag 'a'"),
        (b"</a>", "invalid document structure"),
        (b'<a x="1" x="2"/>', "Attribute x redefined"),
        (b"<a>&nope;</a>", "Entity 'nope' not defined"),
        (b"<a>\x00</a>", "Char 0x0 out of allowed range"),
        (b"<a><![CDATA[x]]></a><![CDATA[y]]>", "invalid document structure"),
        (b"<!-- no root -->", "invalid document structure"),
        (b"<a><b></a>", "expected end of tag 'b'"),
    ],
)
def test_malformed_input_messages(data: bytes, message: str) -> None:
    assert message in error_of(data)


def test_attribute_error_is_reported_before_the_root_closes() -> None:
    framer = Framer(MB)
    with pytest.raises(FramingError, match="attribute value expected"):
        framer.feed(b"<queuepool action=list>")


def test_error_keeps_documents_completed_before_it() -> None:
    framer = Framer(MB)
    with pytest.raises(FramingError) as info:
        framer.feed(b"<ping/>\n<status/>garbage")
    assert [d.tag for d in info.value.documents] == ["ping", "status"]
    assert info.value.message == "invalid document structure"
    with pytest.raises(FramingError, match="invalid document structure"):
        framer.feed(b"<ping/>")  # the stream cannot be resynchronised


def test_close_reports_an_unfinished_document() -> None:
    framer = Framer(MB)
    framer.feed(b"\n \n")
    framer.close()  # only whitespace: nothing pending
    framer = Framer(MB)
    framer.feed(b"<a><b/>")
    with pytest.raises(FramingError, match="Premature end of data"):
        framer.close()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ping a="&lol9;">&lol9;</ping>
"""


@pytest.mark.parametrize(
    "data",
    [
        BILLION_LAUGHS,
        b'<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><p>&xxe;</p>',
        b'<!DOCTYPE p SYSTEM "http://127.0.0.1:1/evil.dtd"><p>&xxe;</p>',
        b'<!DOCTYPE p PUBLIC "-//x//y" "file:///etc/passwd"><p/>',
        b"<!DOCTYPE p" + b" " * 2000 + b"><p/>",
    ],
)
def test_entity_expansion_and_external_dtds_are_refused(data: bytes) -> None:
    framer = Framer(MB)
    with pytest.raises(FramingError, match="DOCTYPE .* not allowed"):
        framer.feed(data)


def test_external_entity_without_doctype_is_an_error_not_a_file_read() -> None:
    assert "Entity 'xxe' not defined" in error_of(b"<p>&xxe;</p>")


def test_oversized_document_streamed_in_chunks_is_refused_with_bounded_memory() -> None:
    max_size = 4 * MB
    framer = Framer(max_size)
    chunk = b"a" * 65536
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    framer.feed(b'<workflow action="create" content="')
    sent = 0
    with pytest.raises(FramingError) as info:
        while sent < 100 * MB:
            framer.feed(chunk)
            sent += len(chunk)
    assert info.value.message == f"Query exceeds maximum size of {max_size} bytes"
    assert sent <= max_size + len(chunk)
    rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert rss_growth_kb < 64 * 1024


def test_oversized_single_write_fails_fast() -> None:
    data = b"<a>" + b"<b>x</b>" * (2 * MB)  # 16 MB in one feed, many tags
    started = time.monotonic()
    with pytest.raises(FramingError, match="maximum size of 1048576 bytes"):
        Framer(MB).feed(data)
    assert time.monotonic() - started < 2.0


def test_size_limit_counts_each_document_not_the_stream() -> None:
    framer = Framer(64)
    query = b'<status action="query" type="workflows" />\n'
    for _ in range(100):
        assert len(framer.feed(query * 3)) == 3
    with pytest.raises(FramingError, match="maximum size of 64 bytes"):
        framer.feed(b'<status action="query" type="workflows" limit="1000000000" offset="0" />')


def test_whitespace_flood_between_documents_is_dropped() -> None:
    framer = Framer(1024)
    blank = b" \n" * 32768
    for _ in range(100):
        assert framer.feed(blank) == []
    assert not framer.pending
    assert [d.tag for d in framer.feed(b"<ping/>")] == ["ping"]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    data = b"<a>" * 100000
    assert "depth" in error_of(data, max_size=MB).lower()


def test_parse_document_for_websocket_messages() -> None:
    assert parse_document(b"<ping/>").tag == "ping"
    assert parse_document("\n<?xml version='1.0'?><ping v='é'/>\n").get("v") == "é"
    # A decoded text message is UTF-8 whatever its declaration says.
    text = '<?xml version="1.0" encoding="ISO-8859-1"?><ping v="é"/>'
    assert parse_document(text).get("v") == "é"
    for bad, message in [
        (b"<ping>", "Premature end of data"),
        (b"<ping/><ping/>", "Extra content"),
        (b"", "invalid document structure"),
        (b"<a b=c/>", "attribute value expected"),
        (BILLION_LAUGHS, "not allowed"),
    ]:
        with pytest.raises(FramingError, match=message):
            parse_document(bad)
    with pytest.raises(FramingError, match="maximum size of 10 bytes"):
        parse_document(b"<ping a='123456789'/>", max_size=10)


# -- property tests ---------------------------------------------------------------------------


def outcome(chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Documents produced and whether the stream failed (feeding then closing)."""
    framer = Framer(MB)
    docs: list[etree._Element] = []
    try:
        for chunk in chunks:
            docs += framer.feed(chunk)
        framer.close()
    except FramingError as err:
        return texts(docs + err.documents), True
    return texts(docs), False


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_give_documents_or_framing_error(data: bytes, cuts: list[int]) -> None:
    whole = outcome([data])
    assert outcome(split(data, cuts)) == whole


XMLISH = st.lists(
    st.sampled_from(
        [b"<", b">", b"/", b"a", b"b", b" ", b"\n", b"=", b'"', b"'", b"!", b"?", b"-", b"[",
         b"]", b"&", b";", b"<a>", b"</a>", b"<b/>", b"<!--", b"-->", b"<![CDATA[", b"]]>",
         b"<?xml version='1.0'?>", b"<!DOCTYPE a>", b"x='1'", b"\xef\xbb\xbf", b"\xc3\xa9"]
    ),
    max_size=30,
).map(b"".join)


@PROPERTY
@given(XMLISH, st.lists(st.integers(min_value=0), max_size=8))
def test_xml_like_noise_gives_documents_or_framing_error(data: bytes, cuts: list[int]) -> None:
    whole = outcome([data])
    assert outcome(split(data, cuts)) == whole


@PROPERTY
@given(
    st.sampled_from(GOLDEN_QUERIES),
    st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=3)), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=5),
)
def test_mutated_golden_queries(
    query: bytes, edits: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    data = bytearray(query)
    for where, replacement in edits:
        at = where % (len(data) + 1)
        data[at : at + len(replacement) % 3] = replacement
    mutated = bytes(data)
    docs, failed = outcome([mutated])
    assert outcome(split(mutated, cuts)) == (docs, failed)
    for doc in docs:
        assert etree.fromstring(doc) is not None
