"""Shopify products — webhook (REST JSON) and GraphQL shapes — as catalog events.

Both shapes map to the same values, so a sync after a webhook changes nothing: ids are the numeric part of
Shopify's ids kept as strings (they exceed 2^53), images are keyed by their media id, the product URL is built
from the handle, the description is ``body_html`` as plain text.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.connectors import CatalogImage, ProductUpserted, html_to_text

def numeric_id(value: Any) -> str:
    """``gid://shopify/Product/123`` or ``123`` → ``"123"`` (exact: never through a float)."""
    text = str(value)
    return text.rsplit("/", 1)[-1] if text.startswith("gid://") else text


def timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def product_url(shop_domain: str, handle: str | None) -> str | None:
    return f"https://{shop_domain}/products/{handle}" if handle else None


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _variant_available(variant: dict[str, Any]) -> bool:
    if not variant.get("inventory_management"):
        return True  # Shopify does not track stock for it
    return variant.get("inventory_policy") == "continue" or int(variant.get("inventory_quantity") or 0) > 0


def from_webhook(product: dict[str, Any], shop_domain: str) -> ProductUpserted:
    """A ``products/create`` or ``products/update`` payload."""
    if "media" in product:
        images = tuple(
            CatalogImage(numeric_id(m["id"]), str(m["preview_image"]["src"]), m.get("alt") or "",
                         int(m.get("position") or n))
            for n, m in enumerate(product["media"] or [])
            if m.get("media_content_type", "IMAGE") == "IMAGE" and (m.get("preview_image") or {}).get("src")
        )
    else:  # older API versions: no media array, the product images
        images = tuple(CatalogImage(numeric_id(i["id"]), str(i["src"]), i.get("alt") or "", int(i.get("position") or n))
                       for n, i in enumerate(product.get("images") or []))
    variants = product.get("variants") or []
    prices = [p for p in (_decimal(v.get("price")) for v in variants) if p is not None]
    tags = product.get("tags") or ""
    return ProductUpserted(
        external_id=numeric_id(product["id"]),
        title=str(product.get("title") or ""),
        description=html_to_text(product.get("body_html")),
        url=product_url(shop_domain, product.get("handle")),
        category_hint=product.get("product_type") or None,
        tags=tuple(t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags) if t.strip()),
        price=min(prices) if prices else None,
        available=any(_variant_available(v) for v in variants) if variants else True,
        status=str(product.get("status") or "active").lower(),
        updated_at=timestamp(product.get("updated_at")),
        images=images,
    )


def from_graphql(node: dict[str, Any], media: list[dict[str, Any]], shop_domain: str) -> ProductUpserted:
    """A node of the GraphQL ``products`` connection, with its ``media`` nodes."""
    price = ((node.get("priceRangeV2") or {}).get("minVariantPrice") or {}).get("amount")
    tracked = node.get("tracksInventory")
    return ProductUpserted(
        external_id=numeric_id(node["id"]),
        title=str(node.get("title") or ""),
        description=html_to_text(node.get("descriptionHtml")),
        url=product_url(shop_domain, node.get("handle")),
        category_hint=node.get("productType") or None,
        tags=tuple(t for t in node.get("tags") or [] if t),
        price=_decimal(price),
        available=not tracked or int(node.get("totalInventory") or 0) > 0,
        status=str(node.get("status") or "ACTIVE").lower(),
        updated_at=timestamp(node.get("updatedAt")),
        images=tuple(
            CatalogImage(numeric_id(m["id"]), str(m["image"]["url"]), m.get("alt") or m["image"].get("altText") or "", n)
            for n, m in enumerate(media) if (m.get("image") or {}).get("url")
        ),
    )
