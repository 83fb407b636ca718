"""Feed items made products: the variants that share a ``g:item_group_id`` are one product (their photos its
images, the lowest price its price, in stock if any is), an item without a group is a product of its own.

Variants of a group usually come one after the other; those that come later still join their product, which is
then given again, whole (a ``ProductUpserted`` carries the complete list of images). So kept in memory are the
groups still open (the last ``OPEN_GROUPS``), every item id seen (a duplicate is refused), and of every group
already given what giving it again needs (its description only in part): memory grows with the number of
products, never with the feed's bytes.
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
MAX_LINKS = 200  # image links of one item looked at
MAX_TAGS = 30
MAX_ERRORS = 1000  # item problems kept per read (the job keeps fewer); the rest are counted
MAX_PRICE = Decimal("1e10")  # (what the catalog stores: 12 digits, 2 of them decimals)
KEPT_DESCRIPTION = 500  # characters of a given group's description kept for a late variant without one
GROUP_PREFIX = "group:"  # a group's product id
# availability, lower case without spaces, underscores or dashes (schema.org's URLs: their last part)
UNAVAILABLE = {"outofstock", "discontinued", "soldout", "unavailable"}
AGE_GROUPS = {"newborn": "Babies", "infant": "Babies", "toddler": "Kids", "kids": "Kids", "adult": "Adults"}
TAG_ATTRIBUTES = ("color", "material", "pattern", "gender")
CURRENCY_SIGNS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "₺": "TRY", "zł": "PLN"}


class ItemError(Exception):
    """An item that cannot be a product (no id, no usable image…): reported, the rest goes on."""


def image_id(url: str) -> str:
    """A stable id of an image of the feed: its URL's hash (a feed names no image ids; a new URL is a new image)."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def parse_price(value: str) -> tuple[Decimal | None, str | None]:
    """"15.00 USD", "USD 15.00", "1,299.50 EUR", "1.299,50 EUR", "1 299,50 €" or "15,00 EUR" → (amount, currency);
    a negative or unreadable amount is None."""
    codes = re.findall(r"(?<![A-Za-z])[A-Za-z]{3}(?![A-Za-z])", value)
    currency = codes[0].upper() if codes else next((code for sign, code in CURRENCY_SIGNS.items() if sign in value),
                                                   None)
    if re.search(r"-\s*\d", value):
        return None, currency
    number = re.search(r"\d[\d.,\s\u00a0\u202f']*", value)
    if number is None:
        return None, currency
    digits = re.sub(r"[\s\u00a0\u202f']", "", number.group(0)).rstrip(".,")
    last_dot, last_comma = digits.rfind("."), digits.rfind(",")
    if last_comma > last_dot and len(digits) - last_comma - 1 in (1, 2):  # a decimal comma: 15,00 / 1.299,50
        digits = digits.replace(".", "").replace(",", ".")
    else:  # a decimal point, or none: commas group thousands, and so do points if there are several
        digits = digits.replace(",", "")
        if digits.count(".") > 1:
            digits = digits.replace(".", "")
    try:
        amount = Decimal(digits)
    except InvalidOperation:
        return None, currency
    return (amount if amount.is_finite() and amount < MAX_PRICE else None), currency


def available(value: str) -> bool:
    """In stock unless the feed says otherwise ("out of stock", "out_of_stock", schema.org's OutOfStock…)."""
    word = re.sub(r"[\s_\-]", "", value.rsplit("/", 1)[-1].lower())
    return word not in UNAVAILABLE


def _url_ok(url: str) -> bool:
    return url.startswith(("http://", "https://")) and len(url) <= MAX_URL and "@" not in url.split("/")[2]


@dataclass
class Given:
    """What a product keeps once it has been given: enough to give it again, whole, but its description."""

    title: str = ""
    url: str | None = None
    category_hint: str | None = None
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    price: Decimal | None = None
    currency: str | None = None
    available: bool = False
    description: str = ""  # (its first KEPT_DESCRIPTION characters)


@dataclass
class Draft:
    external_id: str
    kept: Given = field(default_factory=Given)
    description: str = ""

    def event(self) -> ProductUpserted:
        kept = self.kept
        images = tuple(CatalogImage(external_id=image_id(url), url=url, position=n) for n, url in enumerate(kept.images))
        return ProductUpserted(
            external_id=self.external_id, title=kept.title[:500], description=self.description, url=kept.url,
            images=images, category_hint=kept.category_hint, tags=tuple(dict.fromkeys(kept.tags))[:MAX_TAGS],
            price=kept.price, currency=kept.currency, available=kept.available)


class Products:
    """Feed items in, products out (``add`` gives what is complete, ``finish`` the rest); ``errors`` collects
    the items that could not be read (at most ``MAX_ERRORS``; ``more_errors`` counts the rest)."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, Draft] = OrderedDict()
        self._given: dict[str, Given] = {}  # groups already given: a later variant brings them back
        self._item_ids: set[str] = set()
        self.errors: list[RowError] = []
        self.more_errors = 0
        self._reported = 0

    def add(self, item: FeedItem) -> list[ProductUpserted]:
        try:
            self._merge(item)
        except ItemError as exc:
            self._report(item, str(exc))
            return []
        ready = []
        while len(self._open) > OPEN_GROUPS:
            ready.append(self._give(next(iter(self._open))))
        return ready

    def finish(self) -> list[ProductUpserted]:
        return [self._give(key) for key in list(self._open)]

    def _report(self, item: FeedItem, error: str) -> None:
        if self._reported >= MAX_ERRORS:
            self.more_errors += 1
            return
        self._reported += 1
        self.errors.append(RowError(item.position, error[:500], item=item.first("id")[:MAX_EXTERNAL_ID]))

    def _give(self, key: str) -> ProductUpserted:
        draft = self._open.pop(key)
        if key.startswith(GROUP_PREFIX):
            draft.kept.description = draft.description[:KEPT_DESCRIPTION]
            self._given[key] = draft.kept
        return draft.event()

    def _merge(self, item: FeedItem) -> None:
        if item.problem:
            raise ItemError(item.problem)
        ident = item.first("id")
        if not ident:
            raise ItemError("the item has no id (g:id)")
        if len(ident) > MAX_EXTERNAL_ID or ident.startswith(GROUP_PREFIX):
            raise ItemError(f"the item's id must be 1-{MAX_EXTERNAL_ID} characters and not start with "
                            f"{GROUP_PREFIX!r}")
        if ident in self._item_ids:
            raise ItemError(f"item {ident} comes twice in the feed; the first one counts")
        main = item.first("image_link")
        if not main or not _url_ok(main):
            raise ItemError(f"item {ident} has no image_link (an absolute http(s) URL)" if not main else
                            f"item {ident}: image_link is not an absolute http(s) URL without credentials")
        self._item_ids.add(ident)
        extra = item.fields.get("additional_image_link", [])
        links = list(dict.fromkeys([main, *extra[:MAX_LINKS]]))
        usable = [url for url in links if _url_ok(url)]
        bad = len(links) - len(usable) + max(0, len(extra) - MAX_LINKS)
        if bad:
            self._report(item, f"item {ident}: {bad} additional_image_link value(s) are not absolute http(s) URLs "
                               f"without credentials, or past the first {MAX_LINKS}; left out")
        group = item.first("item_group_id")
        key = f"{GROUP_PREFIX}{group[:MAX_EXTERNAL_ID - len(GROUP_PREFIX)]}" if group else ident
        draft = self._open.get(key)
        if draft is None:
            kept = self._given.pop(key, Given())
            draft = Draft(key, kept, kept.description)
            self._open[key] = draft
        self._open.move_to_end(key)
        kept = draft.kept
        if not draft.description:
            draft.description = html_to_text(item.first("description"))
        if not kept.title:
            kept.title = (item.first("title") or ident)[:500]
            kept.url = item.first("link") if _url_ok(item.first("link")) else None
            types = [part.strip() for value in item.fields.get("product_type", [])[:3] for part in value.split(">")]
            google = [part.strip() for part in item.first("google_product_category").split(">")
                      if part.strip() and not part.strip().isdigit()]
            kept.category_hint = next((p[:200] for p in [*reversed(types), *reversed(google)] if p), None)
            age = AGE_GROUPS.get(item.first("age_group").lower())
            kept.tags = [p[:100] for p in [*reversed(types), *reversed(google), *([age] if age else [])] if p]
            kept.tags = kept.tags[:MAX_TAGS]
        words = [item.first(name)[:100] for name in TAG_ATTRIBUTES if item.first(name)]
        kept.tags += [w for w in dict.fromkeys(words) if w not in kept.tags][:max(0, MAX_TAGS - len(kept.tags))]
        known = set(kept.images)
        kept.images += [url for url in usable if url not in known][:max(0, MAX_IMAGES - len(kept.images))]
        price, currency = parse_price(item.first("sale_price") or item.first("price"))
        if price is not None and (kept.price is None or price < kept.price):
            kept.price, kept.currency = price, currency
        kept.available = kept.available or available(item.first("availability"))
