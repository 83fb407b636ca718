"""Manifests: a CSV or a JSON list of rows naming an image (a file or a URL) and what the shop says of it."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

from hub.connectors import ImportFileError, ImportRow, RowError

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
MAX_ROWS = 1_000_000


def column(header: str) -> str | None:
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
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def csv_rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, fields) for each data row; the header is line 1. Quoted fields may span lines."""
    dialect = sniff_dialect(text[:64 * 1024])
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the CSV is empty") from None
    names = [column(h) for h in header]
    if not any(names):
        raise ImportFileError(
            f"the CSV header names no known column (got {', '.join(header)[:200]}; "
            "expected e.g. file or image_url, name, description, category, style, age_group, product_id)"
        )
    line = reader.line_num + 1
    for values in reader:
        start, line = line, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        yield start, row_fields(dict(zip(header, values, strict=False)))


def json_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object) for each item of a top-level JSON array (or each line of JSON Lines).

    An item that is not an object comes back as a string saying why.
    """
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    if not stripped.startswith("["):  # JSON Lines
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError as exc:
                    yield number, f"not valid JSON: {exc.msg}"
                    continue
                yield number, item if isinstance(item, dict) else "each line must be a JSON object"
        return
    pos = len(text) - len(stripped) + 1
    line = 1 + text.count("\n", 0, pos)
    counted = pos
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise ImportFileError("the JSON array is not closed with ]")
        if text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ImportFileError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        yield line, item if isinstance(item, dict) else "each item must be a JSON object"
        pos = end


def manifest_rows(name: str, data: bytes) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFileError(f"{name} is not UTF-8 text") from None
    if name.lower().endswith((".json", ".jsonl", ".ndjson")):
        for line, item in json_rows(text):
            yield line, row_fields(item) if isinstance(item, dict) else item
    else:
        yield from csv_rows(text)


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
