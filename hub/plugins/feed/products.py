"""Feed items made products: the variants that share a ``g:item_group_id`` are one product (their photos its
images, the lowest price its price, in stock if any is), an item without a group is a product of its own.

Variants of a group usually come one after the other; those that come later still join their product, which is
then given again with every image so far (a ``ProductUpserted`` carries the complete list). Only the groups still
open, and for groups already given their images and offers, are kept in memory: never the feed.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from hub.connectors import MAX_EXTERNAL_ID, MAX_URL, CatalogImage, ProductUpserted, RowError, html_to_text
from hub.plugins.feed.formats import FeedItem

OPEN_GROUPS = 200  # groups kept open for more variants before they are given
MAX_IMAGES = 50  # photos of one product (its variants' together)
MAX_TAGS = 30
GROUP_PREFIX = "group:"  # a group's product id (an item id never collides with it)
AVAILABLE = {"in stock", "in_stock", "instock", "preorder", "pre_order", "backorder", "back_order",
             "available for order", "limited availability"}
UNAVAILABLE = {"out of stock", "out_of_stock", "outofstock", "discontinued", "sold out", "soldout"}
AGE_GROUPS = {"newborn": "Babies", "infant": "Babies", "toddler": "Kids", "kids": "Kids", "adult": "Adults"}
TAG_ATTRIBUTES = ("color", "material", "pattern", "gender")


class ItemError(Exception):
    """An item that cannot be a product (no id, no usable image…): reported, the rest goes on."""


def image_id(url: str) -> str:
    """A stable id of an image of the feed: its URL's hash (a feed names no image ids; a new URL is a new image)."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def _price(value: str) -> tuple[Decimal | None, str | None]:
    """"15.00 USD", "USD 15.00", "1,299.50 EUR" or "15,00 EUR" → (amount, currency)."""
    currency = next(iter(re.findall(r"\b[A-Z]{3}\b", value)), None)
    number = re.search(r"\d[\d.,]*", value)
    if number is None:
        return None, currency
    digits = number.group(0).rstrip(".,")
    if "," in digits and "." not in digits and re.fullmatch(r"\d+,\d{1,2}", digits):
        digits = digits.replace(",", ".")  # a decimal comma
    try:
        return Decimal(digits.replace(",", "")), currency
    except InvalidOperation:
        return None, currency


def _url_ok(url: str) -> bool:
    return url.startswith(("http://", "https://")) and len(url) <= MAX_URL and "@" not in url.split("/")[2]


@dataclass
class Offer:
    """What a product keeps of its variants once it has been given: enough to give it again, whole."""

    images: list[str] = field(default_factory=list)
    price: Decimal | None = None
    currency: str | None = None
    available: bool = False


@dataclass
class Draft:
    external_id: str
    title: str = ""
    description: str = ""
    url: str | None = None
    category_hint: str | None = None
    tags: list[str] = field(default_factory=list)
    offer: Offer = field(default_factory=Offer)

    def event(self) -> ProductUpserted:
        images = tuple(CatalogImage(external_id=image_id(url), url=url, position=n)
                       for n, url in enumerate(self.offer.images))
        return ProductUpserted(
            external_id=self.external_id, title=self.title[:500], description=self.description, url=self.url,
            images=images, category_hint=self.category_hint, tags=tuple(dict.fromkeys(self.tags))[:MAX_TAGS],
            price=self.offer.price, currency=self.offer.currency, available=self.offer.available)


class Products:
    """Feed items in, products out (``add`` gives what is complete, ``finish`` the rest); ``errors`` collects
    the items that could not be read."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, Draft] = OrderedDict()
        self._given: dict[str, Offer] = {}  # groups already given: a later variant brings them back
        self._item_ids: set[str] = set()
        self.errors: list[RowError] = []

    def add(self, item: FeedItem) -> list[ProductUpserted]:
        try:
            self._merge(item)
        except ItemError as exc:
            self.errors.append(RowError(item.position, str(exc), item=item.first("id")[:MAX_EXTERNAL_ID]))
            return []
        ready = []
        while len(self._open) > OPEN_GROUPS:
            ready.append(self._give(next(iter(self._open))))
        return ready

    def finish(self) -> list[ProductUpserted]:
        return [self._give(key) for key in list(self._open)]

    def _give(self, key: str) -> ProductUpserted:
        draft = self._open.pop(key)
        if key.startswith(GROUP_PREFIX):
            self._given[key] = draft.offer
        return draft.event()

    def _merge(self, item: FeedItem) -> None:
        ident = item.first("id")
        if not ident:
            raise ItemError("the item has no id (g:id)")
        if len(ident) > MAX_EXTERNAL_ID - len(GROUP_PREFIX):
            raise ItemError(f"the item's id is longer than {MAX_EXTERNAL_ID - len(GROUP_PREFIX)} characters")
        if ident in self._item_ids:
            raise ItemError(f"item {ident} comes twice in the feed; the first one counts")
        links = [*item.fields.get("image_link", [])[:1], *item.fields.get("additional_image_link", [])]
        usable = [url for url in links if _url_ok(url)]
        if not item.fields.get("image_link") or not _url_ok(item.first("image_link")):
            raise ItemError(f"item {ident} has no image_link (an absolute http(s) URL)" if not
                            item.fields.get("image_link") else
                            f"item {ident}: image_link is not an absolute http(s) URL without credentials")
        self._item_ids.add(ident)
        for url in links:
            if url not in usable:
                self.errors.append(RowError(item.position, f"item {ident}: additional_image_link {url[:200]!r} is "
                                            "not an absolute http(s) URL without credentials; left out", item=ident))
        group = item.first("item_group_id")
        key = f"{GROUP_PREFIX}{group[:MAX_EXTERNAL_ID - len(GROUP_PREFIX)]}" if group else ident
        draft = self._open.get(key)
        if draft is None:
            draft = Draft(key, offer=self._given.pop(key, Offer()))
            self._open[key] = draft
        self._open.move_to_end(key)
        if not draft.title:
            draft.title = item.first("title") or ident
            draft.description = html_to_text(item.first("description"))
            draft.url = item.first("link") if _url_ok(item.first("link")) else None
            types = [part.strip() for value in item.fields.get("product_type", []) for part in value.split(">")]
            google = [part.strip() for part in item.first("google_product_category").split(">")
                      if part.strip() and not part.strip().isdigit()]
            draft.category_hint = next((p for p in [*reversed(types), *reversed(google)] if p), None)
            age = AGE_GROUPS.get(item.first("age_group").lower())
            draft.tags = [p for p in [*reversed(types), *reversed(google), *([age] if age else [])] if p]
        words = [item.first(name)[:100] for name in TAG_ATTRIBUTES if item.first(name)]
        draft.tags += [w for w in dict.fromkeys(words) if w not in draft.tags][:max(0, MAX_TAGS - len(draft.tags))]
        offer = draft.offer
        offer.images += [url for url in dict.fromkeys(usable) if url not in offer.images][
            :max(0, MAX_IMAGES - len(offer.images))]
        price, currency = _price(item.first("sale_price") or item.first("price"))
        if price is not None and (offer.price is None or price < offer.price):
            offer.price, offer.currency = price, currency
        availability = item.first("availability").lower().replace("-", " ")
        offer.available = offer.available or availability not in UNAVAILABLE
