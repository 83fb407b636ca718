"""Google Merchant Center product feeds read as a stream: RSS 2.0 and Atom XML with the ``g:`` namespace, or the
same attributes as tab- (or comma-) separated columns; gzip-compressed or not. Memory stays bounded whatever the
feed's size: only the item being read is kept, each item is handed on, and what is not an item is dropped.

An item comes out as a ``FeedItem``: its position (the item's number in the feed, or the line of a delimited
file) and its attributes by Google's names without the namespace (``id``, ``title``, ``image_link``…), each a
list of values (``additional_image_link`` may repeat); ``problem`` says why a record could not be read at all.

A feed is whatever its host sends, so the reader refuses what could make it work without bound: a DTD (so no
entity can be declared, let alone expanded: checked by expat itself, whatever the encoding), more than
``MAX_ITEM_BYTES`` between two items, a delimited record over ``MAX_LINE_CHARS``, more than
``MAX_INFLATED_BYTES`` out of a gzip file. A feed that ends early (a truncated gzip file, XML that stops, a
quoted value that never closes) is an error, never a shorter catalog.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from hub.connectors import ConnectorError

GOOGLE = "{http://base.google.com/ns/1.0}"
ATOM = "{http://www.w3.org/2005/Atom}"
PROLOG_BYTES = 64 * 1024  # what may come before the feed's first character that is not white space
MAX_ITEM_BYTES = 4 * 1024 * 1024  # XML bytes between the ends of two items (and before the first)
MAX_LINE_CHARS = 1024 * 1024  # characters of one delimited record (quoted newlines included)
MAX_DEPTH = 64  # elements nested in a feed
MAX_INFLATED_BYTES = 2 * 1024**3  # out of one gzip file (HUB_MAX_IMPORT_BYTES' default)
INFLATE_STEP = 1024 * 1024  # inflated at a time, so a small compressed chunk never becomes a huge one


@dataclass(frozen=True)
class FeedItem:
    position: int
    fields: dict[str, list[str]]
    problem: str = ""

    def first(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""


async def decompressed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes of the feed, gunzipped if they are a gzip file (a ``.xml.gz`` served as it is; a feed sent with
    ``Content-Encoding: gzip`` arrives decoded already). Every member of a multi-member file is read; a file that
    ends before its last member does is an error."""
    inflater: Any = None
    gzipped: bool | None = None
    inflated = 0
    start = b""
    async for chunk in chunks:
        if gzipped is None:  # (decided on the first two bytes, however the first chunks are cut)
            start += chunk
            if len(start) < 2:
                continue
            gzipped, chunk = start[:2] == b"\x1f\x8b", start
        if not chunk:
            continue
        if not gzipped:
            yield chunk
            continue
        data = chunk
        while data:
            if inflater is None:
                if inflated and data[:2] != b"\x1f\x8b" and not data.strip(b"\x00"):
                    break  # (zeros padding the file after its last member, as gzip itself allows)
                inflater = zlib.decompressobj(wbits=31)
            try:
                out = inflater.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise ConnectorError(f"the feed is a damaged gzip file ({exc})") from None
            inflated += len(out)
            if inflated > MAX_INFLATED_BYTES:
                raise ConnectorError(f"the feed inflates to more than {MAX_INFLATED_BYTES // 1024**3} GB")
            if out:
                yield out
                await asyncio.sleep(0)  # (inflating never holds the event loop for long)
            if inflater.eof:
                data, inflater = inflater.unused_data, None  # (the next member, if any)
            else:
                data = inflater.unconsumed_tail
    if gzipped is None and start:
        yield start
    if inflater is not None:
        raise ConnectorError("the feed's gzip file ends before its end (it was cut off, or is still being written)")


def _is_html(start: bytes) -> bool:
    head = start.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:2048]


def _looks_like_xml(text: bytes) -> bool:
    return text.startswith((b"<", b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<"))


async def feed_items(chunks: AsyncIterator[bytes]) -> AsyncGenerator[FeedItem, None]:
    """Every item of the feed, in order; ``ConnectorError`` if it is not a product feed at all (an HTML page,
    JSON, an XML document with neither items nor entries) or stops being readable part way."""
    source = decompressed(chunks)
    head = b""
    async for chunk in source:
        head += chunk
        if len(head.lstrip()) >= 512 or len(head) > PROLOG_BYTES:
            break
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise ConnectorError("the feed is empty" if len(head) <= PROLOG_BYTES else
                             "the feed's first 64 KB are white space")
    if _is_html(head[:PROLOG_BYTES]):
        raise ConnectorError("the feed URL answers an HTML page, not a product feed (is it the shop's page rather "
                             "than its feed?)")
    if _looks_like_xml(text):  # (white space before the XML declaration, as PHP often writes it, goes)
        async for item in _xml_items(_chained(text if text.startswith(b"<") else head, source)):
            yield item
        return
    if text[:1] in (b"{", b"["):
        raise ConnectorError("the feed is JSON; give the URL of its XML (RSS or Atom) or tab-separated version")
    async for item in _delimited_items(_chained(head, source)):
        yield item


async def _chained(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def _clark(name: str) -> str:
    """expat's "uri}local" (namespace_separator "}") as ElementTree's "{uri}local"."""
    return "{" + name if "}" in name else name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Items:
    """expat driven directly: a DTD or an entity declaration is refused the moment expat meets it, and of the
    document only the item being read is kept."""

    def __init__(self) -> None:
        parser = expat.ParserCreate(namespace_separator="}")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._entity
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        self.parser = parser
        self.depth = 0
        self.item_tag: str | None = None
        self.item_depth = 0  # where items are (RSS: rss > channel > item; Atom: feed > entry)
        self.atom = False
        self.inside = False
        self.child: tuple[str, dict[str, str], list[str]] | None = None
        self.plain: dict[str, list[str]] = {}
        self.google: dict[str, list[str]] = {}
        self.count = 0
        self.ready: list[FeedItem] = []

    def _doctype(self, *_: Any) -> None:
        raise ConnectorError("the feed declares a DTD; product feeds have none, and the hub reads none")

    def _entity(self, *_: Any) -> None:
        raise ConnectorError("the feed declares an entity; product feeds declare none")

    def _start(self, raw: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConnectorError(f"the feed nests elements more than {MAX_DEPTH} deep")
        name = _clark(raw)
        if self.depth == 1:
            if _local(name).lower() == "html":
                raise ConnectorError("the feed URL answers an HTML page, not a product feed")
            if name == "rss":
                self.item_tag, self.item_depth = "item", 3
            elif name in (f"{ATOM}feed", "feed"):
                self.item_tag, self.item_depth, self.atom = name[:-4] + "entry", 2, True
            else:
                raise ConnectorError(f"the feed's root element is <{_local(name)}>; a product feed is RSS 2.0 "
                                     "(<rss>) or Atom (<feed>)")
        elif self.inside:
            if self.depth == self.item_depth + 1:
                self.child = (name, {k: v for k, v in attrs.items() if k in ("href", "rel")}, [])
        elif self.depth == self.item_depth and name == self.item_tag:
            self.inside, self.plain, self.google = True, {}, {}

    def _end(self, raw: str) -> None:
        if self.inside and self.depth == self.item_depth + 1 and self.child is not None:
            self._field(*self.child)
            self.child = None
        elif self.inside and self.depth == self.item_depth:
            self.inside = False
            self.count += 1
            self.ready.append(FeedItem(self.count, self.plain | self.google))
        self.depth -= 1

    def _text(self, data: str) -> None:
        if self.child is not None:  # (the text of an item's attribute, nested elements' included)
            self.child[2].append(data)

    def _field(self, name: str, attrs: dict[str, str], parts: list[str]) -> None:
        """``g:`` attributes win over the plain RSS/Atom ones of the same name (``g:title`` over ``title``); an
        Atom link is its ``href``."""
        if name.startswith(GOOGLE):
            target, key = self.google, name[len(GOOGLE):]
        else:
            target, key = self.plain, _local(name)
            if self.atom and key == "id":
                return  # an Atom entry's id is a URI of the entry, not the product's id
        value = "".join(parts)
        if self.atom and key == "link":
            if attrs.get("rel") not in (None, "alternate"):
                return
            value = attrs.get("href") or value
        elif self.atom and key in ("summary", "content"):
            key = "description"
        value = value.strip()
        if value:
            target.setdefault(key, []).append(value)


async def _xml_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[FeedItem]:
    items = _Items()
    since_item = 0  # bytes fed since the last item ended: what expat and the item being read may hold
    async for chunk in chunks:
        for start in range(0, len(chunk), INFLATE_STEP):
            piece = chunk[start:start + INFLATE_STEP]
            before = items.count
            try:
                items.parser.Parse(piece, False)
            except expat.ExpatError as exc:
                raise ConnectorError(f"the feed is not well-formed XML after {items.count} item(s): "
                                     f"{expat.ErrorString(exc.code)} (line {exc.lineno})") from None
            since_item = 0 if items.count > before else since_item + len(piece)
            for item in items.ready:
                yield item
            items.ready.clear()
            if since_item > MAX_ITEM_BYTES:
                raise ConnectorError(f"more than {MAX_ITEM_BYTES // 1024 // 1024} MB of the feed after item "
                                     f"{items.count} hold no complete item")
    try:
        items.parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise ConnectorError(f"the feed ends before its XML does, after {items.count} item(s): "
                             f"{expat.ErrorString(exc.code)}") from None
    for item in items.ready:
        yield item
    if items.item_tag is None:
        raise ConnectorError("the feed has no XML element")
    if not items.count:
        raise ConnectorError("the feed has no item (an RSS feed lists them as <item> in <rss><channel>, an Atom feed "
                             "as <entry> in <feed>)")


def _column(name: str) -> str:
    """A header as Google names the attribute: "g:image_link", "Image Link" and "image link" are image_link."""
    name = name.strip().strip('"').lower()
    name = name.removeprefix("g:")
    return re.sub(r"[\s-]+", "_", name)


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.rstrip("\r")
        if len(pending) > MAX_LINE_CHARS:
            raise ConnectorError(f"a line of the feed is longer than {MAX_LINE_CHARS:,} characters")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.rstrip("\r")


def _ends_quoted(line: str, delimiter: str, quoted: bool) -> bool:
    """Whether a CSV record is inside a quoted value at the end of this line, as the csv module reads it: a
    quote opens a value only at its start (``12" wide`` is text), ``""`` inside one is a quote. Linear."""
    i, n = 0, len(line)
    while True:
        if quoted:
            j = line.find('"', i)
            while j != -1 and j + 1 < n and line[j + 1] == '"':
                j = line.find('"', j + 2)
            if j == -1:
                return True
            quoted = False
            k = line.find(delimiter, j + 1)
            if k == -1:
                return False
            i = k + 1
            continue
        if i < n and line[i] == '"':
            quoted, i = True, i + 1
            continue
        k = line.find(delimiter, i)
        if k == -1:
            return False
        i = k + 1


async def _delimited_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[FeedItem]:
    """Tab-separated (Google's own) or comma-/semicolon-separated with quotes; the first line names the columns.
    ``additional_image_link`` may hold several URLs separated by commas."""
    header: list[str] | None = None
    delimiter = "\t"
    record: list[str] = []  # the lines of a record a quoted value spans (joined once, when it ends)
    size, started, quoted = 0, 0, False
    number = 0
    async for line in _lines(chunks):
        number += 1
        if header is None:
            if not line.strip():
                continue
            delimiter = "\t" if "\t" in line else (";" if line.count(";") > line.count(",") else ",")
            header = [_column(c) for c in next(csv.reader([line], delimiter=delimiter))]
            if "id" not in header:
                raise ConnectorError("the feed's first line names no id column; a product feed has id, title, "
                                     "link and image_link columns")
            continue
        if not record:
            started, size = number, 0
        record.append(line)
        size += len(line) + 1
        if delimiter != "\t":
            quoted = _ends_quoted(line, delimiter, quoted)
            if quoted:
                if size > MAX_LINE_CHARS:
                    raise ConnectorError(f"a quoted value at line {started} goes on for more than "
                                         f"{MAX_LINE_CHARS:,} characters")
                continue  # a quoted value goes on on the next line
        row, record = "\n".join(record), []
        if not row.strip():
            continue
        yield _record(row, header, delimiter, started)
    if quoted:
        raise ConnectorError(f"the feed ends inside a quoted value that starts at line {started}")
    if header is None:
        raise ConnectorError("the feed is empty")


def _record(row: str, header: list[str], delimiter: str, line: int) -> FeedItem:
    if delimiter == "\t":  # (Google's TSV has no quoting; a value may still come wrapped in quotes)
        cells = [c[1:-1].replace('""', '"') if len(c) > 1 and c[0] == c[-1] == '"' else c for c in row.split("\t")]
    else:
        try:
            cells = next(csv.reader([row], delimiter=delimiter))
        except csv.Error as exc:
            return FeedItem(line, {}, f"line {line} cannot be read ({exc})")
    fields: dict[str, list[str]] = {}
    for name, cell in zip(header, cells, strict=False):
        values = [v.strip() for v in cell.split(",")] if name == "additional_image_link" else [cell.strip()]
        values = [v for v in values if v]
        if values:
            fields.setdefault(name, []).extend(values)
    return FeedItem(line, fields)
