"""A shop that publishes a Google Merchant Center product feed, as a real HTTP server on loopback: the feed as
RSS 2.0, Atom or tab-separated text (``/feed.xml``, ``/feed.atom``, ``/feed.tsv``; ``.gz`` for a gzipped file),
answering conditional requests with 304 as web servers do, optionally behind basic auth, and the product photos
(``/img/N.jpg``). Tests change its items, add malformed ones, or make the feed disappear or turn into HTML."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from hub.testing import FakePlatform, PlatformHandler
from tests.images import photo


@dataclass
class Item:
    """One feed item (a variant when ``group`` is set): ``image`` and ``extra`` are photo seeds."""

    id: str
    title: str
    image: int
    extra: list[int] = field(default_factory=list)
    group: str = ""
    price: str = "49.90 EUR"
    availability: str = "in stock"
    product_type: str = "Apparel & Accessories > Clothing > Dresses"
    age_group: str = "adult"
    color: str = ""
    description: str = "<p>A <b>summer</b> dress &amp; more</p>"


class MerchantFeed(FakePlatform):
    def __init__(self, username: str = "", password: str = "") -> None:
        self.items: list[Item] = []
        self.raw_items: list[str] = []  # extra items as written (malformed ones), XML or TSV lines
        self.mode = "feed"  # feed | gone | html | cut | unusable
        self.auth = (username, password)
        self.requests: list[tuple[str, int]] = []  # (path, status) of every feed request
        self.modified = formatdate(1_700_000_000, usegmt=True)
        self.lock = threading.Lock()
        platform = self

        class Handler(PlatformHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.route
                if path.startswith("/img/"):
                    self.send(200, photo(int(path.removeprefix("/img/").split(".")[0])), "image/jpeg")
                    return
                status, body, headers = platform.answer(path, dict(self.headers.items()))
                with platform.lock:
                    platform.requests.append((path, status))
                self.send(status, body, headers.pop("Content-Type", "application/xml"), headers=headers)

        super().__init__(Handler)

    def url(self, path: str = "/feed.xml") -> str:
        return f"{self.base}{path}"

    def image(self, seed: int) -> str:
        return f"{self.base}/img/{seed}.jpg"

    def changed(self) -> None:
        """The shop's platform wrote the feed again (a new Last-Modified)."""
        self.modified = formatdate(1_700_000_000 + len(self.requests) + 1, usegmt=True)

    def statuses(self) -> list[int]:
        with self.lock:
            return [status for _, status in self.requests]

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if self.auth[0]:
            expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if headers.get("Authorization") != expected:
                return 401, b"", {"WWW-Authenticate": 'Basic realm="feed"'}
        if self.mode == "gone":
            return 404, b"<html><body>Not found</body></html>", {"Content-Type": "text/html"}
        if self.mode == "html":
            return 200, b"<!DOCTYPE html><html><head><title>Shop</title></head><body>Welcome</body></html>", \
                {"Content-Type": "text/html; charset=utf-8"}
        base = path.removesuffix(".gz")
        render = {"/feed.xml": self.rss, "/feed.atom": self.atom, "/feed.tsv": self.tsv}.get(base)
        if render is None:
            return 404, b"", {}
        body = render().encode()
        if self.mode == "unusable":  # every item without its photo (a column renamed in the shop's export, say)
            body = re.sub(rb"<g:image_link>[^<]*</g:image_link>", b"", body)
        if self.mode == "cut":  # the connection breaks off after the first item (a server restarting, say)
            body = body[:body.index(b"</item>") + len(b"</item>") + 40]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        validators = {"ETag": etag, "Last-Modified": self.modified}
        if headers.get("If-None-Match") == etag or (
                "If-None-Match" not in headers and headers.get("If-Modified-Since") == self.modified):
            return 304, b"", validators
        kind = "text/tab-separated-values" if base.endswith(".tsv") else "application/xml"
        if path.endswith(".gz"):
            body, kind = gzip.compress(body), "application/gzip"
        return 200, body, {"Content-Type": kind, **validators}

    def _g(self, item: Item) -> str:
        tags = [("g:id", item.id), ("g:image_link", self.image(item.image)),
                *(("g:additional_image_link", self.image(seed)) for seed in item.extra),
                ("g:availability", item.availability), ("g:price", item.price),
                ("g:product_type", item.product_type), ("g:age_group", item.age_group),
                ("g:google_product_category", "Apparel &amp; Accessories &gt; Clothing")]
        if item.group:
            tags.append(("g:item_group_id", item.group))
        if item.color:
            tags.append(("g:color", item.color))
        return "".join(f"<{t}>{v if t == 'g:google_product_category' else escape(v)}</{t}>" for t, v in tags)

    def rss(self) -> str:
        items = "".join(
            f"<item><title>{escape(i.title)}</title><link>{self.base}/p/{i.id}</link>"
            f"<description>{escape(i.description)}</description>{self._g(i)}</item>\n" for i in self.items)
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'
                f"<channel><title>Shop</title><link>{self.base}</link><description>Products</description>\n"
                f"{items}{''.join(self.raw_items)}</channel></rss>\n")

    def atom(self) -> str:
        entries = "".join(
            f'<entry><id>tag:shop,2026:{i.id}</id><title>{escape(i.title)}</title>'
            f'<link rel="alternate" href="{self.base}/p/{i.id}"/><summary>{escape(i.description)}</summary>'
            f"<updated>2026-11-30T10:00:00Z</updated>{self._g(i)}</entry>\n" for i in self.items)
        return ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
                'xmlns:g="http://base.google.com/ns/1.0"><title>Shop</title><updated>2026-11-30T10:00:00Z</updated>'
                f"\n{entries}{''.join(self.raw_items)}</feed>\n")

    def tsv(self) -> str:
        columns = ["id", "title", "description", "link", "image_link", "additional_image_link", "availability",
                   "price", "item_group_id", "product_type", "age_group", "color"]
        lines = ["\t".join(columns)]
        for i in self.items:
            values: dict[str, Any] = {
                "id": i.id, "title": i.title, "description": i.description.replace("\t", " "),
                "link": f"{self.base}/p/{i.id}", "image_link": self.image(i.image),
                "additional_image_link": ",".join(self.image(s) for s in i.extra), "availability": i.availability,
                "price": i.price, "item_group_id": i.group, "product_type": i.product_type,
                "age_group": i.age_group, "color": i.color}
            lines.append("\t".join(str(values[c]) for c in columns))
        return "\r\n".join([*lines, *self.raw_items]) + "\r\n"
