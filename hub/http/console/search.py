"""The console's search page: the shop's default ranking (mode, lexical weight) and its merchandising rules —
synonyms, boosts, pins and hides — with the API's rules (``PATCH /api/v1/shop``, ``/api/v1/rules``)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter
from litestar.response import Redirect
from pydantic import ValidationError

from hub.db.models import Shop
from hub.domain.merchandising import RULE_CREATE, create_rule, delete_rule, list_rules
from hub.domain.shops import update_shop
from hub.errors import HubError, validation_detail
from hub.domain.console import SignedIn
from hub.http.console import (CONSOLE_ERRORS, FORM_BYTES, HEADERS, _checked_form, _session, lexical_weight,
                               page)
from hub.http.deps import Db
from hub.http.errors import status_of
from hub.http.validation import PathId

KINDS = ("synonyms", "boost", "pin", "hide")


def _number(value: str | None) -> Any:
    """A form's number as a JSON number (what is not one stays text, and the rule's check says so)."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _rule_body(kind: str, form: dict[str, Any]) -> dict[str, Any]:
    """A rule as the API takes it, from the console's form for its kind (empty fields left out)."""
    def text(name: str) -> str | None:
        value = str(form.get(name) or "").strip()
        return value or None

    body: dict[str, Any] = {"kind": kind}
    if kind == "synonyms":
        body["words"] = [w.strip() for w in (text("words") or "").split(",") if w.strip()]
    elif kind == "boost":
        body |= {"condition": text("condition"), "weight": _number(text("weight")), "days": _number(text("days"))}
    else:
        target = text("target") or ""
        field = "image_id" if target.lower().startswith("image ") else "product_id"
        body[field] = _number(target.split()[-1]) if target else None
        body["query"] = text("query")
        if kind == "pin":
            body["position"] = _number(text("position"))
    return {key: value for key, value in body.items() if value is not None}


class SearchSettingsController(Controller):
    path = "/console/search"
    include_in_schema = False
    exception_handlers = CONSOLE_ERRORS

    @get("/")
    async def search_settings(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        """How the shop's recommendations rank, and its merchandising rules."""
        return await self._page(db, await _session(request, db))

    async def _page(self, db: Any, me: SignedIn, status: int = 200, **context: Any) -> Response[Any]:
        shop = await db.get(Shop, me.shop_id)
        rules = await list_rules(db, me.shop_id)
        return page("search.html", status, me=me, page="search", shop=shop,
                    rules={kind: [r for r in rules if r.kind == kind] for kind in KINDS}, **context)

    @post("/defaults", status_code=303, request_max_body_size=FORM_BYTES)
    async def defaults(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        """The mode and lexical weight a request that does not say gets."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        mode = str(form.get("mode") or "")
        weight = lexical_weight(str(form.get("weight") or ""))
        if mode not in ("vector", "lexical", "hybrid") or weight is None:
            return await self._page(db, me, 400, error="choose a mode, and a lexical weight between 0 and 1")
        await update_shop(db, me.shop_id, None, None, mode, weight)
        return Redirect("/console/search", status_code=303, headers=HEADERS)

    @post("/rules/{kind:str}", status_code=303, request_max_body_size=FORM_BYTES)
    async def add_rule(self, request: Request[Any, Any, Any], db: Db,
                       kind: Annotated[str, PathParameter(max_length=20)]) -> Response[Any]:
        """A new rule of this kind, checked as the API checks it."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        if kind not in KINDS:
            raise NotFoundException("no such kind of rule")
        try:
            await create_rule(db, me.shop_id, RULE_CREATE.validate_python(_rule_body(kind, form)))
        except ValidationError as exc:
            return await self._page(db, me, 400, error=validation_detail(exc))
        except HubError as exc:
            return await self._page(db, me, status_of(exc), error=exc.detail)
        return Redirect("/console/search", status_code=303, headers=HEADERS)

    @post("/rules/{rule_id:int}/delete", status_code=303, request_max_body_size=FORM_BYTES)
    async def remove_rule(self, request: Request[Any, Any, Any], db: Db, rule_id: PathId) -> Response[Any]:
        me = await _session(request, db)
        await _checked_form(request, me)
        try:
            await delete_rule(db, me.shop_id, rule_id)
        except HubError as exc:
            return await self._page(db, me, status_of(exc), error=exc.detail)
        return Redirect("/console/search", status_code=303, headers=HEADERS)

