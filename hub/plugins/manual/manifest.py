"""Manifests: a CSV or a JSON list of rows naming an image (a file or a URL) and what the shop says of it.

A manifest is read as a stream, never whole: at most ``ImportOptions.max_manifest_bytes`` bytes and
``ImportOptions.max_rows`` rows (``ImportTooLarge`` past either), one row of at most ``MAX_ROW_CHARS``
characters in memory at a time. A bad row (too long, a CSV field over the csv module's limit, JSON nested too
deeply) is reported with its line and the rest still come; a file that cannot be read as a whole (not UTF-8, a
JSON array that does not parse) is an ``ImportFileError``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import IO, Any

from hub.connectors import ImportFileError, ImportOptions, ImportRow, ImportTooLarge, RowError
from hub.plugins.manual.files import ZIP_MEMBER_ERRORS

# every spelling a shop is likely to use for a column, normalised (lower case, letters and digits only)
ALIASES = {
    "file": "file", "filename": "file", "path": "file", "photo": "file",
    "imageurl": "image_url", "url": "image_url", "image": "image_url", "src": "image_url",
    "name": "name", "title": "name",
    "description": "description", "desc": "description",
    "category": "category", "categories": "category", "producttype": "category", "type": "category",
    "style": "style", "styles": "style",
    "agegroup": "age_group", "age": "age_group", "agegroups": "age_group",
    "productid": "product_id", "sku": "product_id", "product": "product_id",
    "producturl": "product_url", "link": "product_url", "permalink": "product_url",
}
MAX_ROW_CHARS = 1024 * 1024  # one CSV record, JSON line or JSON array item
SNIFF_CHARS = 4 * 1024  # what the CSV dialect is guessed from: csv.Sniffer is quadratic (64 KiB: 13 s and more)
READ_CHARS = 64 * 1024

Opener = Callable[[], IO[bytes]]


class _RowTooLong(Exception):
    pass


def column(header: str) -> str | None:
    if len(header) > 64:  # not cached: a JSON key can be long
        return ALIASES.get(re.sub(r"[^a-z0-9]", "", header.lower()))
    return _column(header)


@lru_cache(maxsize=4096)
def _column(header: str) -> str | None:
    return ALIASES.get(re.sub(r"[^a-z0-9]", "", header.lower()))


def row_fields(values: dict[str, Any]) -> dict[str, str]:
    """A manifest row's known columns, as trimmed strings (unknown columns are ignored)."""
    fields: dict[str, str] = {}
    for key, value in values.items():
        name = column(str(key))
        if name is None or value is None or name in fields:
            continue
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
        if text.strip():
            fields[name] = text.strip()
    return fields


def sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    sample = sample[:SNIFF_CHARS]
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    sample = sample[:cut] if cut > 0 else sample  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


class _Limited(io.RawIOBase):
    """A binary stream that gives at most ``limit`` bytes: ``ImportTooLarge`` when there are more."""

    def __init__(self, raw: IO[bytes], limit: int, name: str) -> None:
        super().__init__()
        self.raw, self.limit, self.name, self.total = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self.raw.read(len(view))
        except ZIP_MEMBER_ERRORS as exc:  # a damaged ZIP member, a bad CRC, a disk error
            raise ImportFileError(f"cannot read {self.name}: {exc}") from None
        self.total += len(data)
        if self.total > self.limit:
            raise ImportTooLarge(f"{self.name} is larger than the manifest limit of {self.limit} bytes")
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


@contextmanager
def _text(name: str, opener: Opener, options: ImportOptions) -> Iterator[io.TextIOWrapper]:
    """The manifest as UTF-8 text (a BOM dropped), line endings kept, never more than the manifest limit."""
    try:
        raw = opener()
    except OSError as exc:
        raise ImportFileError(f"cannot read {name}: {exc.strerror or exc}") from None
    stream = io.TextIOWrapper(io.BufferedReader(_Limited(raw, options.max_manifest_bytes, name), READ_CHARS),
                              encoding="utf-8-sig", newline="")
    try:
        yield stream
    except UnicodeDecodeError:
        raise ImportFileError(f"{name} is not UTF-8 text") from None
    finally:
        stream.close()


class _Lines:
    """A text stream's physical lines, counted, with at most ``MAX_ROW_CHARS`` characters per row.

    ``csv.reader`` pulls from it; ``new_row`` resets the budget at each row. A row over the budget raises
    ``_RowTooLong`` once the rest of its physical line is skipped, so the next row starts on the next line.
    Lines cost time whether or not they make rows, so the lines that are not rows (blank ones, line breaks in
    quoted fields) are limited too: as many as the row limit (``ImportTooLarge`` past it).
    """

    def __init__(self, stream: io.TextIOWrapper, name: str, options: ImportOptions) -> None:
        self.stream, self.name, self.max_rows = stream, name, options.max_rows
        self.number = self.used = self.rows = 0  # lines read, characters of this row, rows yielded

    def __iter__(self) -> _Lines:
        return self

    def new_row(self) -> None:
        self.used = 0
        if self.number - self.rows > self.max_rows + 1:  # the header is neither
            raise ImportTooLarge(f"{self.name} has more than {self.max_rows} lines that are not rows "
                                 "(blank lines, line breaks in quoted fields), the most one import may have")

    def __next__(self) -> str:
        room = MAX_ROW_CHARS - self.used
        line = self.stream.readline(room + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > room:
            while line and not line.endswith(("\n", "\r")):
                line = self.stream.readline(READ_CHARS)
            raise _RowTooLong
        self.used += len(line)
        return line


TOO_LONG = f"the row is longer than {MAX_ROW_CHARS} characters"


def csv_rows(name: str, opener: Opener, options: ImportOptions) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line number, fields or what is wrong) for each data row; the header is line 1. Quoted fields may span
    lines. The stream is opened twice: once for the dialect's sample, once for the rows."""
    with _text(name, opener, options) as text:
        dialect = sniff_dialect(text.read(SNIFF_CHARS))
    with _text(name, opener, options) as text:
        lines = _Lines(text, name, options)
        reader = csv.reader(lines, dialect)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFileError("the CSV is empty") from None
        except _RowTooLong:
            raise ImportFileError(f"the CSV header is longer than {MAX_ROW_CHARS} characters") from None
        except csv.Error as exc:
            raise ImportFileError(f"the CSV header cannot be read: {exc}") from None
        names = [column(h) for h in header]
        if not any(names):
            raise ImportFileError(
                f"the CSV header names no known column (got {', '.join(header)[:200]}; "
                "expected e.g. file or image_url, name, description, category, style, age_group, product_id)"
            )
        while True:
            start = lines.number + 1
            lines.new_row()
            try:
                values = next(reader)
            except StopIteration:
                return
            except _RowTooLong:
                lines.rows += 1
                yield start, TOO_LONG
                continue
            except csv.Error as exc:
                # e.g. "field larger than field limit (131072)". The reader goes on at the next line; after a
                # quoted field spanning lines, its remaining lines are read as rows (and usually reported).
                lines.rows += 1
                yield start, f"unreadable CSV row: {exc}"
                continue
            if not any(v.strip() for v in values):
                continue
            lines.rows += 1
            yield start, row_fields(dict(zip(header, values, strict=False)))


def _json_item(raw: str) -> dict[str, Any] | str:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg}"
    except RecursionError:
        return "the JSON is nested too deeply"
    except ValueError as exc:  # a number with more digits than Python converts
        return f"not valid JSON: {exc}"[:200]
    return item if isinstance(item, dict) else "each line must be a JSON object"


def _json_lines(name: str, text: io.TextIOWrapper,
                options: ImportOptions) -> Iterator[tuple[int, dict[str, Any] | str]]:
    lines = _Lines(text, name, options)
    while True:
        lines.new_row()
        try:
            raw = next(lines)
        except StopIteration:
            return
        except _RowTooLong:
            lines.rows += 1
            yield lines.number, TOO_LONG
            continue
        if raw.strip():
            lines.rows += 1
            yield lines.number, _json_item(raw)


_SEPARATORS = re.compile(r"[ \t\r\n,]*")


class _JsonArray:
    """The items of a top-level JSON array, decoded one at a time from a window of the stream.

    The window holds the current item and what is read after it (at most ``MAX_ROW_CHARS + READ_CHARS``);
    an item that does not parse is read further until it does, the stream ends, or it is over that size.
    """

    def __init__(self, text: io.TextIOWrapper, buffer: str, first_line: int) -> None:
        self.text, self.buf, self.eof = text, buffer, False
        self.pos = len(buffer) - len(buffer.lstrip()) + 1  # after the "["
        self.line = first_line + buffer.count("\n", 0, self.pos)  # the line at ``pos``

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def _fill(self) -> None:
        chunk = self.text.read(READ_CHARS)
        if not chunk:
            self.eof = True
            return
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any] | str]]:
        decoder = json.JSONDecoder()
        while True:
            self._advance(_SEPARATORS.match(self.buf, self.pos).end())  # type: ignore[union-attr]
            if self.pos >= len(self.buf):
                if self.eof:
                    raise ImportFileError("the JSON array is not closed with ]")
                self._fill()
                continue
            if self.buf[self.pos] == "]":
                return
            try:
                item, end = decoder.raw_decode(self.buf, self.pos)
            except RecursionError:
                raise ImportFileError(f"the JSON item at line {self.line} is nested too deeply") from None
            except json.JSONDecodeError as exc:  # invalid, or not all read yet
                if self.eof:
                    raise ImportFileError(f"invalid JSON at line {self.line + exc.lineno - 1}: {exc.msg}") from None
                if len(self.buf) - self.pos > MAX_ROW_CHARS:
                    raise ImportFileError(f"invalid JSON at line {self.line + exc.lineno - 1}: {exc.msg} "
                                          f"(or an item longer than {MAX_ROW_CHARS} characters)") from None
                self._fill()
                continue
            except ValueError as exc:  # a number with more digits than Python converts
                raise ImportFileError(f"invalid JSON at line {self.line}: {exc}"[:300]) from None
            if len(self.buf) - end < 3 and not self.eof:  # a number may go on ("1" of "1e+5"): read on
                self._fill()
                continue
            yield self.line, item if isinstance(item, dict) else "each item must be a JSON object"
            self._advance(end)


def json_rows(name: str, opener: Opener, options: ImportOptions) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object or what is wrong) for each item of a top-level JSON array, or each line of JSON
    Lines."""
    with _text(name, opener, options) as text:
        head, skipped = "", 0  # what the file begins with; lines of leading white space before it
        while not head.strip():
            skipped += head.count("\n")
            head = text.read(READ_CHARS)
            if not head:
                break
        if head.lstrip().startswith("["):
            yield from _JsonArray(text, head, 1 + skipped)
            return
    with _text(name, opener, options) as text:
        yield from _json_lines(name, text, options)


def manifest_rows(name: str, size: int | None, opener: Opener,
                  options: ImportOptions) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, fields) for each row of the manifest ``name``, or (line, what is wrong with it).

    ``size`` is what the file says it holds (a ZIP member's declared size, a file's size on disk): over the
    manifest limit, it is refused before reading; the bytes are counted while reading all the same.
    """
    if size is not None and size > options.max_manifest_bytes:
        raise ImportTooLarge(f"{name} is {size} bytes, more than the manifest limit of {options.max_manifest_bytes}")
    if name.lower().endswith((".json", ".jsonl", ".ndjson")):
        rows: Iterator[tuple[int, dict[str, Any] | str]] = json_rows(name, opener, options)
    else:
        rows = csv_rows(name, opener, options)
    for count, (line, item) in enumerate(rows, start=1):
        if count > options.max_rows:
            raise ImportTooLarge(f"{name} has more than {options.max_rows} rows, the most one import may have")
        if isinstance(item, dict):
            try:
                item = row_fields(item)
            except (RecursionError, ValueError):
                item = "a value is nested too deeply"
        yield line, item


def to_row(line: int | None, fields: dict[str, str], data: bytes | None = None, item: str = "") -> ImportRow:
    return ImportRow(
        line=line,
        item=item,
        data=data,
        image_url=fields.get("image_url") if data is None else None,
        name=fields.get("name", ""),
        description=fields.get("description", ""),
        category=fields.get("category"),
        style=fields.get("style"),
        age_group=fields.get("age_group"),
        product_id=fields.get("product_id"),
        product_url=fields.get("product_url"),
    )


def url_only(line: int | None, fields: dict[str, str]) -> ImportRow | RowError:
    """A row of a manifest with no files beside it: it must give an image URL."""
    if fields.get("image_url"):
        return to_row(line, fields)
    if fields.get("file"):
        return RowError(line, f"file {fields['file']!r}: a manifest uploaded alone has no files; "
                              "upload a ZIP with the images and the manifest, or give image_url")
    return RowError(line, "the row has neither a file nor an image_url")
