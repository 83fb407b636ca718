"""Google Merchant Center product feeds read as a stream: RSS 2.0 and Atom XML with the ``g:`` namespace, or the
same attributes as tab- (or comma-) separated columns; gzip-compressed or not. Memory stays bounded whatever the
feed's size: each item is read, handed on and dropped.

An item comes out as a ``FeedItem``: its position (the item's number in the feed, or the line of a delimited
file) and its attributes by Google's names without the namespace (``id``, ``title``, ``image_link``…), each a
list of values (``additional_image_link`` may repeat).
"""

from __future__ import annotations

import codecs
import csv
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, cast
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from hub.connectors import ConnectorError

GOOGLE = "{http://base.google.com/ns/1.0}"
ATOM = "{http://www.w3.org/2005/Atom}"
PROLOG_BYTES = 64 * 1024  # the XML declaration and comments before the root element: no more than this
MAX_ITEM_BYTES = 4 * 1024 * 1024  # bytes between the end of one item and the end of the next
MAX_LINE_CHARS = 1024 * 1024  # characters of one delimited record (quoted newlines included)


@dataclass(frozen=True)
class FeedItem:
    position: int
    fields: dict[str, list[str]]

    def first(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""


async def decompressed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes of the feed, gunzipped if they are a gzip file (a ``.xml.gz`` served as it is; a feed sent with
    ``Content-Encoding: gzip`` arrives decoded already)."""
    inflater: zlib._Decompress | None = None
    first = True
    async for chunk in chunks:
        if not chunk:
            continue
        if first:
            first = False
            if chunk[:2] == b"\x1f\x8b":
                inflater = zlib.decompressobj(wbits=31)
        if inflater is None:
            yield chunk
            continue
        try:
            out = inflater.decompress(chunk)
        except zlib.error as exc:
            raise ConnectorError(f"the feed is a damaged gzip file ({exc})") from None
        if out:
            yield out
    if inflater is not None:
        rest = inflater.flush()
        if rest:
            yield rest


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is_html(start: bytes) -> bool:
    head = start.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:2048]


async def feed_items(chunks: AsyncIterator[bytes]) -> AsyncGenerator[FeedItem, None]:
    """Every item of the feed, in order; ``ConnectorError`` if it is not a product feed at all (an HTML page,
    JSON, an XML document with neither items nor entries) or stops being readable part way."""
    source = decompressed(chunks)
    head = b""
    async for chunk in source:
        head += chunk
        if len(head.lstrip()) >= 512:
            break
    if not head.strip():
        raise ConnectorError("the feed is empty")
    if _is_html(head[:PROLOG_BYTES]):
        raise ConnectorError("the feed URL answers an HTML page, not a product feed (is it the shop's page rather "
                             "than its feed?)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    rest = _chained(head, source)
    if text.startswith(b"<"):
        async for item in _xml_items(rest):
            yield item
    elif text[:1] in (b"{", b"["):
        raise ConnectorError("the feed is JSON; give the URL of its XML (RSS or Atom) or tab-separated version")
    else:
        async for item in _delimited_items(rest):
            yield item


async def _chained(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def _item_fields(item: Element, atom: bool) -> dict[str, list[str]]:
    """An item's attributes: ``g:`` ones win over the plain RSS/Atom ones of the same name (``g:title`` over
    ``title``); an Atom link is its ``href``."""
    plain: dict[str, list[str]] = {}
    google: dict[str, list[str]] = {}
    for child in item:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag.startswith(GOOGLE):
            target, name = google, tag[len(GOOGLE):]
        else:
            target, name = plain, _local(tag)
            if atom and name == "id":
                continue  # an Atom entry's id is a URI of the entry, not the product's id
        if atom and name == "link":
            value = child.get("href") or (child.text or "")
            if child.get("rel") not in (None, "alternate"):
                continue
        elif atom and name in ("summary", "content"):
            name, value = "description", "".join(child.itertext())
        else:
            value = child.text or ""
        value = value.strip()
        if value:
            target.setdefault(name, []).append(value)
    return plain | google


async def _xml_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[FeedItem]:
    parser: Any = XMLPullParser(events=("start", "end"))
    prolog = b""
    rooted = False
    stack: list[Element] = []
    item_tag: str | None = None
    count = 0
    since_item = 0
    async for chunk in chunks:
        if not rooted:  # no DTD, so no entity can be declared: a feed has none, an attack would
            prolog += chunk
            scan = prolog.decode("utf-16") if prolog[:2] in (b"\xff\xfe", b"\xfe\xff") else prolog.decode(
                "latin-1")
            root_at = re.search(r"<[A-Za-z_]", scan)
            before = scan[:root_at.start()] if root_at else scan
            if "<!DOCTYPE" in before.upper() or "<!ENTITY" in before.upper():
                raise ConnectorError("the feed declares a DTD; product feeds have none, and the hub reads none")
            if root_at is None:
                if len(prolog) > PROLOG_BYTES:
                    raise ConnectorError("the feed has no XML element in its first 64 KB")
                continue
            rooted, chunk, prolog = True, prolog, b""
        since_item += len(chunk)
        try:
            parser.feed(chunk)
            events = [(event, cast(Element, element)) for event, element in parser.read_events()]
        except ParseError as exc:
            raise ConnectorError(f"the feed is not well-formed XML after {count} item(s): {exc}") from None
        for event, element in events:
            if event == "start":
                if not stack:
                    root = _local(element.tag).lower()
                    if root == "html":
                        raise ConnectorError("the feed URL answers an HTML page, not a product feed")
                    if element.tag not in ("rss", f"{ATOM}feed", "feed"):
                        raise ConnectorError(f"the feed's root element is <{_local(element.tag)}>; a product feed "
                                             "is RSS 2.0 (<rss>) or Atom (<feed>)")
                    item_tag = "item" if element.tag == "rss" else (
                        f"{ATOM}entry" if element.tag.startswith(ATOM) else "entry")
                stack.append(element)
                continue
            stack.pop()
            if element.tag == item_tag:
                count += 1
                since_item = 0
                yield FeedItem(count, _item_fields(element, atom=item_tag != "item"))
                if stack:
                    stack[-1].remove(element)  # what was read goes: memory stays bounded
        if since_item > MAX_ITEM_BYTES:
            raise ConnectorError(f"item {count + 1} of the feed is larger than {MAX_ITEM_BYTES // 1024 // 1024} MB")
    try:
        parser.close()
    except ParseError as exc:
        raise ConnectorError(f"the feed ends before its XML does, after {count} item(s): {exc}") from None
    if not rooted:
        raise ConnectorError("the feed has no XML element")
    if item_tag is None:
        raise ConnectorError("the feed has neither RSS items nor Atom entries")


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


async def _delimited_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[FeedItem]:
    """Tab-separated (Google's own) or comma-/semicolon-separated with quotes; the first line names the columns.
    ``additional_image_link`` may hold several URLs separated by commas."""
    header: list[str] | None = None
    delimiter = "\t"
    record, started = "", 0
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
            started = number
        record = f"{record}\n{line}" if record else line
        if delimiter != "\t" and record.count('"') % 2:
            if len(record) > MAX_LINE_CHARS:
                raise ConnectorError(f"a quoted value at line {started} never ends")
            continue  # a quoted value goes on on the next line
        row, record = record, ""
        if not row.strip():
            continue
        if delimiter == "\t":  # (Google's TSV has no quoting; a value may still come wrapped in quotes)
            cells = [c[1:-1].replace('""', '"') if len(c) > 1 and c[0] == c[-1] == '"' else c
                     for c in row.split("\t")]
        else:
            cells = next(csv.reader([row], delimiter=delimiter))
        fields: dict[str, list[str]] = {}
        for name, cell in zip(header, cells, strict=False):
            values = [v.strip() for v in cell.split(",")] if name == "additional_image_link" else [cell.strip()]
            values = [v for v in values if v]
            if values:
                fields.setdefault(name, []).extend(values)
        yield FeedItem(started, fields)
    if header is None:
        raise ConnectorError("the feed is empty")
