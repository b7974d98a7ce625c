"""Split a byte stream into XML documents (sans-I/O).

The original has no delimiter: a document ends when its root element closes (protocol.md §1.3).
A small byte scanner finds that point (tracking tags, quotes, comments, PIs, CDATA and depth)
so that surplus bytes stay for the next document; lxml's feed parser does the real parsing
incrementally, so a large document is never held twice and errors surface early. The scanner
only relies on ASCII delimiters, which is right for UTF-8 and every ASCII-compatible encoding.

Security: entities are never expanded, no DTD or network access, and any DOCTYPE other than a
bare ``<!DOCTYPE name>`` is refused before lxml sees it (billion laughs, XXE).
"""

from __future__ import annotations

import re

from lxml import etree

__all__ = ["Framer", "FramingError", "parse_document"]

_CHUNK = 65536  # bytes scanned per step, so the size limit is checked often enough
_BOM = b"\xef\xbb\xbf"
_LT, _GT, _SLASH, _QMARK, _BANG = b"<>/?!"
_NONSPACE = re.compile(rb"[^ \t\r\n]")
_TAG_STOP = re.compile(rb"[>\"']")
_DOCTYPE_STOP = re.compile(rb"[\[>]")
_DOCTYPE_OK = re.compile(rb"<!DOCTYPE[ \t\r\n]+[^ \t\r\n>\[\"']+[ \t\r\n]*>")
_DOCTYPE_MAX = 1024
_MARKUP_DECLS = (b"<!--", b"<![CDATA[", b"<!DOCTYPE")
# A whole document that is one empty root element with plain attributes (``<ping />``,
# ``<status action="query" type="workflows" />``, most queries): parsed without the scanner.
_SIMPLE = re.compile(
    rb"[ \t\r\n]*(<[A-Za-z_][-\w.]*(?:[ \t\r\n]+[-\w.:]+[ \t\r\n]*=[ \t\r\n]*"
    rb"""(?:"[^"<>]*"|'[^'<>]*'))*[ \t\r\n]*/>)[ \t\r\n]*"""
)
_BAD_STRUCTURE = "invalid document structure"  # Xerces' text for misplaced top-level content
_DOCTYPE_REFUSED = "DOCTYPE with an external identifier or an internal subset is not allowed"

# Scanner modes
_TEXT, _TAG, _UNTIL = range(3)

_LOCATION = re.compile(r", line \d+, column \d+$")
_MISMATCH = re.compile(r"Opening and ending tag mismatch: (\S+) line \d+ and ")
_XERCES_TEXTS = {
    "AttValue: \" or ' expected": "attribute value expected",
    "Start tag expected, '<' not found": _BAD_STRUCTURE,
    "Document is empty": _BAD_STRUCTURE,
}


class FramingError(Exception):
    """Input that is not a well-formed (or acceptable) XML document.

    ``documents`` holds the documents completed before the error in the same ``feed()``
    call, so that the caller can still answer them, in order, before failing.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.documents: list[etree._Element] = []


def _new_parser(encoding: str | None) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        encoding=encoding,
    )


def _xerces_message(parser: etree.XMLParser, err: etree.XMLSyntaxError) -> str:
    """libxml2's first fatal message, reworded as Xerces words it where clients saw the text.

    The feed parser's own message is sometimes a generic "no element found"; its error log
    for the current run holds the real cause.
    """
    fatal = next((e.message for e in parser.feed_error_log if e.level_name == "FATAL"), None)
    msg = fatal.strip() if fatal else _LOCATION.sub("", (err.msg or str(err)).strip())
    mismatch = _MISMATCH.match(msg)
    if mismatch:
        return f"expected end of tag '{mismatch.group(1)}'"
    return _XERCES_TEXTS.get(msg, msg)


def _localize(root: etree._Element) -> None:
    """Drop namespaces from element and attribute names: queries are read by local name."""
    for el in root.iter(etree.Element):
        tag = el.tag
        if tag[0] == "{":
            el.tag = tag[tag.index("}") + 1 :]
        attrib = el.attrib
        if any(key[0] == "{" for key in attrib):
            items = [(key[key.find("}") + 1 :], value) for key, value in attrib.items()]
            attrib.clear()
            for key, value in items:
                attrib[key] = value
    etree.cleanup_namespaces(root)


def _doctype_end(buf: bytes, pos: int) -> int | None:
    """Accept only ``<!DOCTYPE name>``: return the offset after it, None if more is needed."""
    limit = pos + _DOCTYPE_MAX
    m = _DOCTYPE_STOP.search(buf, pos + 9, limit)
    if m is None:
        if len(buf) >= limit:
            raise FramingError(_DOCTYPE_REFUSED)
        return None
    if buf[m.start()] != _GT or not _DOCTYPE_OK.fullmatch(buf, pos, m.end()):
        raise FramingError(_DOCTYPE_REFUSED)
    return m.end()


class Framer:
    """Incremental splitter: ``feed(bytes)`` returns the documents completed so far.

    After a ``FramingError`` the stream cannot be resynchronised: every later call raises it
    again. ``max_size`` bounds each document (and any pending unfinished data).
    """

    def __init__(self, max_size: int, *, encoding: str | None = None) -> None:
        self._max = max_size
        self._parser = _new_parser(encoding)
        self._buf = b""  # bytes the scanner has not finished with (already fed or not)
        self._pos = 0  # scanner position in _buf
        self._fed = 0  # bytes of _buf already given to the parser
        self._size = 0  # bytes of the current document given to the parser
        self._started = False  # the current document has begun (bytes go to the parser)
        self._mode = _TEXT
        self._depth = 0
        self._closing = False  # the tag being scanned is an end tag
        self._quote = b""  # open quote inside a tag
        self._term = b""  # terminator searched in _UNTIL mode
        self._failure: FramingError | None = None

    def feed(self, data: bytes) -> list[etree._Element]:
        """Consume ``data``; return the documents whose root element closed, in order."""
        if self._failure is not None:
            raise FramingError(self._failure.message)
        docs: list[etree._Element] = []
        try:
            if not self._started and not self._buf and len(data) <= self._max:
                simple = _SIMPLE.fullmatch(data)
                if simple is not None:  # the frequent case: one small query per read
                    self._size = 0
                    docs.append(self._finish(simple.group(1)))
                    return docs
            for start in range(0, len(data), _CHUNK):
                self._feed_chunk(data[start : start + _CHUNK] if len(data) > _CHUNK else data, docs)
        except FramingError as err:
            self._fail(err)
            err.documents = docs
            raise
        return docs

    def close(self) -> None:
        """Declare the end of input: an unfinished document is an error."""
        if self._failure is not None:
            raise FramingError(self._failure.message)
        if not self._started:
            return
        try:
            self._parser.close()  # the root is still open, so libxml2 reports what is missing
        except etree.XMLSyntaxError as err:
            failure = FramingError(_xerces_message(self._parser, err))
        else:
            failure = FramingError(_BAD_STRUCTURE)
        self._fail(failure)
        raise failure

    @property
    def pending(self) -> bool:
        """True while part of a document has been received."""
        return self._started

    @property
    def idle(self) -> bool:
        """True between documents, with no byte kept (the next byte starts a document)."""
        return not self._started and not self._buf and self._failure is None

    def _fail(self, err: FramingError) -> None:
        self._failure = err
        self._buf = b""

    def _feed_chunk(self, data: bytes, docs: list[etree._Element]) -> None:
        buf = self._buf + data if self._buf else data
        pos, fed = self._pos, self._fed
        while True:
            if not self._started:
                m = _NONSPACE.search(buf, pos)
                if m is None:
                    self._buf, self._pos, self._fed = b"", 0, 0
                    return
                pos = m.start()
                if buf[pos] == _BOM[0]:
                    if len(buf) - pos < len(_BOM) and _BOM.startswith(buf[pos:]):
                        self._buf, self._pos, self._fed = buf[pos:], 0, 0
                        return
                    fed = pos
                    if buf.startswith(_BOM, pos):
                        pos += len(_BOM)
                else:
                    fed = pos
                self._started = True
                self._size = 0
            end, pos = self._scan(buf, pos, fed)
            if end is None:
                break
            docs.append(self._finish(buf[fed:end]))
            fed = pos = end
        # The document is unfinished: all of buf belongs to it, give it to the parser now.
        self._give(buf[fed:])
        keep = max(pos - 1, 0)  # one byte of look-behind for "/>" split across chunks
        self._buf = buf[keep:]
        self._pos = pos - keep
        self._fed = len(self._buf)

    def _give(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            raise FramingError(f"Query exceeds maximum size of {self._max} bytes")
        if data:
            try:
                self._parser.feed(data)
            except etree.XMLSyntaxError as err:
                raise FramingError(_xerces_message(self._parser, err)) from None

    def _finish(self, tail: bytes) -> etree._Element:
        """Give the last bytes of a document to the parser and return its root."""
        self._give(tail)
        self._started = False
        self._mode, self._depth = _TEXT, 0
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as err:
            raise FramingError(_xerces_message(self._parser, err)) from None
        # Without these bytes a document has no namespace (but a document given in several
        # pieces may hide them across a boundary).
        if self._size != len(tail) or b"xmlns" in tail or b"xml:" in tail:
            _localize(root)
        return root

    def _malformed(self, buf: bytes, fed: int) -> FramingError:
        """Let lxml word the error for input the scanner already knows is not XML."""
        try:
            self._parser.feed(buf[fed:])
            self._parser.close()
        except etree.XMLSyntaxError as err:
            return FramingError(_xerces_message(self._parser, err))
        return FramingError(_BAD_STRUCTURE)

    def _scan(self, buf: bytes, pos: int, fed: int) -> tuple[int | None, int]:
        """Advance to the end of the current root element.

        Returns ``(end, pos)``: ``end`` is the offset just after the document, or None when
        more data is needed (``pos`` is then where scanning resumes).
        """
        n = len(buf)
        mode, depth = self._mode, self._depth
        try:
            while pos < n:
                if mode == _TAG:
                    if self._quote:
                        j = buf.find(self._quote, pos)
                        if j < 0:
                            return None, n
                        self._quote = b""
                        pos = j + 1
                        continue
                    m = _TAG_STOP.search(buf, pos)
                    if m is None:
                        return None, n
                    j = m.start()
                    if buf[j] != _GT:
                        self._quote = buf[j : j + 1]
                        pos = j + 1
                        continue
                    pos = j + 1
                    mode = _TEXT
                    if self._closing:
                        depth -= 1
                    elif buf[j - 1] != _SLASH:
                        depth += 1
                    if depth == 0:
                        return pos, pos
                    continue
                if mode == _UNTIL:
                    j = buf.find(self._term, pos)
                    if j < 0:
                        return None, max(pos, n - len(self._term) + 1)
                    pos = j + len(self._term)
                    mode = _TEXT
                    continue
                # _TEXT: find the next markup.
                if depth == 0:
                    m = _NONSPACE.search(buf, pos)
                    if m is None:
                        return None, n
                    pos = m.start()
                    if buf[pos] != _LT:
                        raise FramingError(_BAD_STRUCTURE)
                else:
                    pos = buf.find(b"<", pos)
                    if pos < 0:
                        return None, n
                if n - pos < 2:
                    return None, pos
                kind = buf[pos + 1]
                if kind == _SLASH:
                    if depth == 0:
                        raise FramingError(_BAD_STRUCTURE)
                    mode, self._closing = _TAG, True
                    pos += 2
                elif kind == _QMARK:
                    mode, self._term = _UNTIL, b"?>"
                    pos += 2
                elif kind == _BANG:
                    if buf.startswith(b"<!--", pos):
                        mode, self._term = _UNTIL, b"-->"
                        pos += 4
                    elif depth > 0 and buf.startswith(b"<![CDATA[", pos):
                        mode, self._term = _UNTIL, b"]]>"
                        pos += 9
                    elif depth == 0 and buf.startswith(b"<!DOCTYPE", pos):
                        after = _doctype_end(buf, pos)
                        if after is None:
                            return None, pos
                        pos = after
                    elif n - pos < 9 and any(d.startswith(buf[pos:]) for d in _MARKUP_DECLS):
                        return None, pos
                    elif depth == 0:
                        raise FramingError(_BAD_STRUCTURE)
                    else:
                        raise self._malformed(buf, fed)
                else:
                    mode, self._closing = _TAG, False
                    pos += 1
            return None, pos
        finally:
            self._mode, self._depth = mode, depth


def parse_document(data: bytes | str, max_size: int | None = None) -> etree._Element:
    """Parse one complete document (a websocket message) with the same rules as ``Framer``.

    Text (already decoded) is parsed as UTF-8 whatever its declaration says.
    """
    if isinstance(data, str):
        raw, encoding = data.encode("utf-8", "surrogatepass"), "utf-8"
    else:
        raw, encoding = data, None
    framer = Framer(max_size if max_size is not None else max(len(raw), 1), encoding=encoding)
    docs = framer.feed(raw)
    framer.close()
    if not docs:
        raise FramingError(_BAD_STRUCTURE)
    if len(docs) > 1:
        raise FramingError("Extra content at the end of the document")
    return docs[0]
