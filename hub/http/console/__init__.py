"""The merchant console at ``/console``: server-rendered pages (Jinja2, autoescaped) with a little script, signed
in with a secret key. The session cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the hub is served
over https; every form carries the session's CSRF token (sign-in a double-submit one), and a form without it
changes nothing. Pages call the same domain functions as the API."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import secrets
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import PathParameter
from litestar.response import Redirect, Stream
from PIL import Image as PILImage
from pydantic import ValidationError

from hub.db.models import Image
from hub.domain.console import (
    SignedIn,
    csrf_matches,
    find_session,
    link_shop,
    mail_sign_in_link,
    overview,
    sign_in,
    sign_in_by_link,
    sign_out,
)
from hub.connectors import OAuthConnector, secret_fields
from hub.domain.connections import (
    connection_json,
    find_connector,
    get_connection,
    image_fetch_headers,
    list_connections,
    open_connection,
    remove_connection,
    sync_connection,
    update_connection,
)
from hub.domain.jobs import job_json, list_jobs
from hub.domain.webhooks import list_deliveries
from hub.domain.fetching import FetchError, fetch_image, make_client
from hub.domain.imports import start_import
from hub.domain.oauth import start_install
from hub.domain.insights import insights, prompt_log_csv, svg_timeline
from hub.domain.images import (
    ImageFields,
    ImageFilters,
    ImagePatch,
    RetryFailed,
    add_upload,
    get_shop_image,
    image_sources,
    list_images,
    retry_failed_images,
    retry_image,
    update_image,
)
from hub.domain.media import DECODES, check_image, thumbnail_path
from hub.domain.shops import image_counts
from hub.domain.taxonomy import TaxonCreate, TaxonUpdate, age_groups, categories, styles
from hub.domain.keys import Principal, add_key, list_keys, revoke_key
from hub.domain.recommendations import prompt_text, recommend, similar_images
from hub.errors import HubError, Invalid, validation_detail
from hub.http.auth import client_address
from hub.http.deps import Db, Svc
from hub.http.errors import status_of
from hub.http.routes.images import read_upload
from hub.http.routes.imports import MAX_IMPORT_UPLOAD, content_length
from hub.http.validation import PathId

SESSION_COOKIE = "hub_console"
SIGN_IN_COOKIE = "hub_console_signin"  # the double-submit CSRF token of the sign-in form
THUMB_SIZE = 320
CATALOG_PAGE = 48
MAX_PROMPT = 1000
FORM_BYTES = 64 * 1024  # a console form without a file
TAXONOMIES = {"categories": ("Categories", categories), "styles": ("Styles", styles),
              "age-groups": ("Age groups", age_groups)}
STATIC = {name: files("hub.http.console").joinpath("static", name).read_bytes()
          for name in ("console.css", "console.js")}
TEMPLATES = Environment(loader=PackageLoader("hub.http.console", "templates"), autoescape=select_autoescape(),
                        trim_blocks=True, lstrip_blocks=True)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def page(name: str, status: int = 200, cookies: list[Cookie] | None = None, **context: Any) -> Response[str]:
    return Response(TEMPLATES.get_template(name).render(**context), status_code=status, media_type="text/html",
                    headers=HEADERS, cookies=cookies or [])


def _secure(services: Any) -> bool:
    return str(services.settings.public_url).startswith("https://")


async def _signed_in(request: Request[Any, Any, Any], db: Any) -> SignedIn | None:
    return await find_session(db, request.cookies.get(SESSION_COOKIE))


def _pre_session_cookie(services: Any, token: str) -> Cookie:
    return Cookie(key=SIGN_IN_COOKIE, value=token, path="/console", httponly=True, samesite="strict",
                  secure=_secure(services))


def _sign_in_page(services: Any, status: int = 200, **context: Any) -> Response[str]:
    """The sign-in page with a fresh double-submit CSRF token (its cookie and its form field)."""
    token = secrets.token_urlsafe(32)
    return page("sign_in.html", status, csrf=token, mail=bool(services.settings.smtp_url),
                cookies=[_pre_session_cookie(services, token)], **context)


async def _pre_session_form(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A form posted before there is a session (sign-in, a link): its token must match its cookie's."""
    form = await _form(request)
    expected = request.cookies.get(SIGN_IN_COOKIE) or ""
    if not expected or not secrets.compare_digest(expected.encode(), str(form.get("csrf") or "").encode()):
        raise _Leave(_refused(None))
    return form


def _opened(services: Any, token: str) -> Response[Any]:
    """Signed in: the session's cookie, the pre-session one cleared, on to the overview."""
    return Redirect("/console/overview", status_code=303, headers=HEADERS, cookies=[
        Cookie(key=SESSION_COOKIE, value=token, path="/console", httponly=True, samesite="strict",
               secure=_secure(services), max_age=12 * 3600),
        Cookie(key=SIGN_IN_COOKIE, value="", path="/console", max_age=0)])


def _to_sign_in() -> Response[Any]:
    return Redirect("/console", status_code=303, headers=HEADERS)


def _refused(me: SignedIn | None) -> Response[str]:
    return page("problem.html", 403, me=me, title="Not done",
                detail="This form expired or came from another page (its security token did not match); nothing "
                       "was changed. Reload the page and try again.")


async def _form(request: Request[Any, Any, Any]) -> dict[str, Any]:
    form = await request.form()
    return {key: form.get(key) for key in form}


class _Leave(Exception):
    """Answer with this response instead (signed out: to sign-in; a form without its token: refused)."""

    def __init__(self, response: Response[Any]) -> None:
        self.response = response


async def _session(request: Request[Any, Any, Any], db: Any) -> SignedIn:
    """The signed-in browser, or leave for the sign-in page."""
    me = await _signed_in(request, db)
    if me is None:
        raise _Leave(_to_sign_in())
    return me


async def _checked_form(request: Request[Any, Any, Any], me: SignedIn) -> dict[str, Any]:
    """The posted form, if it carries the session's CSRF token; otherwise leave with a refusal (nothing done)."""
    form = await _form(request)
    if not csrf_matches(me, form.get("csrf")):
        raise _Leave(_refused(me))
    return form


def _problem_page(request: Request[Any, Any, Any], exc: HubError | HTTPException) -> Response[str]:
    """A console error as a console page (with the console's headers), not the API's JSON."""
    status = status_of(exc) if isinstance(exc, HubError) else exc.status_code
    detail = str(exc.detail)
    titles = {400: "That did not work", 404: "Not found", 429: "Too many tries", 503: "Try again shortly"}
    return page("problem.html", status, title=titles.get(status, "That did not work"), detail=detail)


# every console controller answers errors as console pages, and leaves (sign-in, refusals) as they say
CONSOLE_ERRORS: dict[Any, Any] = {HubError: _problem_page, HTTPException: _problem_page,
                                  _Leave: lambda request, exc: exc.response}


class ConsoleController(Controller):
    path = "/console"
    include_in_schema = False
    exception_handlers = CONSOLE_ERRORS

    @get("/")
    async def home(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """The sign-in form, or the overview for a signed-in browser."""
        if await _signed_in(request, db):
            return Redirect("/console/overview", status_code=303, headers=HEADERS)
        return _sign_in_page(services)

    @post("/sign-in", status_code=303, request_max_body_size=FORM_BYTES)
    async def sign_in(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        form = await _pre_session_form(request)
        state = request.app.state
        try:
            token, _ = await sign_in(db, str(form.get("key") or ""))
        except HubError as exc:
            await state.limiter.hit(state.auth_failure_limits, "auth-failure", client_address(request))
            return _sign_in_page(services, status_of(exc), error=exc.detail)
        return _opened(services, token)

    @post("/sign-in-link", status_code=200, request_max_body_size=FORM_BYTES)
    async def sign_in_link(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """Mail a one-use sign-in link to the shop with this address (the answer never says whether one has it);
        limited per client address like signups."""
        form = await _pre_session_form(request)
        state = request.app.state
        await state.limiter.hit(state.signup_limits, "sign-in-link", client_address(request))
        try:
            await mail_sign_in_link(db, services.settings, str(form.get("email") or "")[:254])
        except HubError as exc:
            return _sign_in_page(services, status_of(exc), error=exc.detail)
        return _sign_in_page(services, notice="If a shop uses this address, a sign-in link is on its way (it works "
                                              "once, for 15 minutes).")

    @get("/link")
    async def link(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """A mailed link asks to confirm with a button (a mail scanner opening it must not use it up)."""
        token = (request.query_params.get("token") or "")[:200]
        shop_name = await link_shop(db, token) if token else None
        if shop_name is None:
            return _sign_in_page(services, 401, error="This sign-in link was used already or has expired; ask for "
                                                      "a new one.")
        fresh = secrets.token_urlsafe(32)
        return page("link.html", csrf=fresh, token=token, shop_name=shop_name,
                    cookies=[_pre_session_cookie(services, fresh)])

    @post("/link", status_code=303, request_max_body_size=FORM_BYTES)
    async def use_link(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        form = await _pre_session_form(request)
        try:
            token, _ = await sign_in_by_link(db, str(form.get("token") or ""))
        except HubError as exc:
            return _sign_in_page(services, status_of(exc), error=exc.detail)
        return _opened(services, token)

    @post("/sign-out", status_code=303, request_max_body_size=FORM_BYTES)
    async def sign_out(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _session(request, db)
        await _checked_form(request, me)
        await sign_out(db, me)
        return Redirect("/console", status_code=303, headers=HEADERS,
                        cookies=[Cookie(key=SESSION_COOKIE, value="", path="/console", max_age=0)])

    @get("/overview")
    async def overview_page(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _session(request, db)
        notice = ("Uploaded: it will be ready in a moment." if request.query_params.get("uploaded") else
                  "Import started: its progress is below." if request.query_params.get("import") else None)
        return page("overview.html", me=me, page="overview", data=await overview(db, me.shop_id), notice=notice)

    @get("/overview.json")
    async def overview_data(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return Response({"detail": "signed out"}, status_code=401, headers=HEADERS)
        return Response(dataclasses.asdict(await overview(db, me.shop_id)), headers=HEADERS)

    @post("/images", status_code=303)
    async def upload(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        me = await _session(request, db)
        form = await _checked_form(request, me)
        try:
            data = await read_upload(form.get("file"), services.settings.max_upload_bytes)
            fields = ImageFields(name=str(form.get("name") or "")[:500])
            img = await add_upload(db, services, me.shop_id, data, fields)
        except HubError as exc:
            return page("overview.html", status_of(exc), me=me, page="overview", error=exc.detail,
                        data=await overview(db, me.shop_id))
        return Redirect(f"/console/overview?uploaded={img.id}", status_code=303, headers=HEADERS)

    @post("/imports", status_code=303, request_max_body_size=MAX_IMPORT_UPLOAD)
    async def import_file(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """A ZIP of photos (with an optional manifest) or a CSV/JSON list of image URLs, streamed to disk as it
        arrives (the same import as ``POST /api/v1/imports``); its progress shows on the overview. The CSRF token
        comes in the query: the body is streamed, not parsed first."""
        me = await _session(request, db)
        if not csrf_matches(me, request.query_params.get("csrf")):
            return _refused(me)
        try:
            job = await start_import(db, services, me.shop_id, request.stream(),
                                     request.headers.get("content-type", ""), content_length(request), None)
        except HubError as exc:
            return page("overview.html", status_of(exc), me=me, page="overview", error=exc.detail,
                        data=await overview(db, me.shop_id))
        return Redirect(f"/console/overview?import={job.id}", status_code=303, headers=HEADERS)

    @get("/try")
    async def try_it(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """A prompt ranked exactly as the storefront would get it (a publishable key's view), with timings."""
        me = await _session(request, db)
        prompt = (request.query_params.get("prompt") or "").strip()[:MAX_PROMPT]
        raw_limit = request.query_params.get("limit") or "12"
        limit = min(max(_number(raw_limit) or 12, 1), 100)
        chosen = {f"{field}_id": _number(request.query_params.get(field)) for field in ("category", "style", "age_group")}
        chosen = {key: value for key, value in chosen.items() if value}
        mode = request.query_params.get("mode") or None  # none: the shop's default
        raw_weight = (request.query_params.get("weight") or "").strip()
        common = {"me": me, "page": "try", "prompt": prompt, "limit": limit, "taxa": await _taxa(db, me.shop_id),
                  "f": {key.removesuffix("_id"): value for key, value in chosen.items()}, "mode": mode,
                  "weight": raw_weight}
        if not prompt:
            return page("try.html", results=None, **common)
        try:
            if mode not in (None, "vector", "lexical", "hybrid"):
                raise Invalid("mode must be vector, lexical or hybrid")
            weight = lexical_weight(raw_weight) if raw_weight else None
            if raw_weight and weight is None:
                raise Invalid("the weight of words is a number from 0 to 1")
            state = request.app.state  # the session's key pays for its searches, as through the API
            await state.limiter.hit(state.key_limits, "key", str(me.key_id) if me.key_id else f"console:{me.shop_id}")
            storefront = Principal(shop_id=me.shop_id, key_id=me.key_id or 0, kind="publishable")
            found = await recommend(db, services, storefront, prompt_text(prompt), limit, chosen, mode=mode,
                                    weight=weight, log_prompt=False)
        except HubError as exc:
            return page("try.html", status_of(exc), results=None, error=exc.detail, **common)
        results = [{"name": r.image.name, "score": r.score, "thumb": _thumb_url(r.image), "steps": r.steps,
                    "others": len(r.other_image_ids)} for r in found.results]
        return page("try.html", results=results, timings=found.timings_ms, applied=found, **common)

    @get("/thumbs/{image_id:int}")
    async def thumb(self, request: Request[Any, Any, Any], db: Db, services: Svc, image_id: PathId) -> Response[Any]:
        """The image resized for the console: made once from the stored photo or the image URL (checked like any
        image: size, pixels, formats, a bounded decode), then served from the media store. A picture that cannot
        be had is a placeholder, and is not tried again for a while."""
        me = await _signed_in(request, db)
        img = await db.get(Image, image_id) if me else None
        if me is None or img is None or img.shop_id != me.shop_id or not (img.photo or img.image_url):
            raise NotFoundException("no such thumbnail")
        media = services.media
        relative = thumbnail_path(img.shop_id, img.id)
        try:
            data = await media.read(relative)
        except FileNotFoundError:
            failed_for = await media.age(relative + FAILED)
            if (img.status == "failed" and not img.photo) or (failed_for is not None
                                                             and failed_for < RETRY_THUMB_AFTER):
                return _placeholder()
            settings = services.settings
            try:
                original = await media.read(img.photo) if img.photo else await _fetch_original(services, img)
                data = await anyio.to_thread.run_sync(
                    lambda: _make_thumb(check_image(original, max_bytes=settings.max_upload_bytes,
                                                    max_pixels=settings.max_image_pixels).data))
            except (FileNotFoundError, FetchError, OSError, ValueError, HubError, TimeoutError):
                await media.write(relative + FAILED, b"")
                return _placeholder()
            await media.write(relative, data)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @get("/static/{name:str}")
    async def static(self, name: Annotated[str, PathParameter(max_length=50)]) -> Response[bytes]:
        """The console's own stylesheet and script (no third-party code, no CDN)."""
        if name not in STATIC:
            raise NotFoundException("no such file")
        return Response(STATIC[name], media_type="text/css" if name.endswith(".css") else "text/javascript",
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})

    @get("/catalog")
    async def catalog(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        """The shop's images as thumbnails, filtered by status, taxonomy, source and name, newest first."""
        me = await _session(request, db)
        query = request.query_params
        filters = ImageFilters(
            status=query.get("status") or None, source=query.get("source") or None, q=(query.get("q") or "")[:200]
            or None, connection_id=_number(query.get("connection")),
            **{f"{field}_id": _number(query.get(field)) for field in ("category", "style", "age_group")})
        rows, next_cursor = await list_images(db, me.shop_id, CATALOG_PAGE, query.get("cursor") or None, filters)
        shown = {"q": filters.q, "status": filters.status, "source": filters.source, "connection": filters.connection_id,
                 **{field: getattr(filters, f"{field}_id") for field in ("category", "style", "age_group")}}
        next_query = urlencode({**{k: v for k, v in shown.items() if v}, "cursor": next_cursor or ""})
        return page("catalog.html", me=me, page="catalog", images=rows, f=shown, taxa=await _taxa(db, me.shop_id),
                    sources=await image_sources(db, me.shop_id), connections=await list_connections(db, me.shop_id),
                    failed=(await image_counts(db, me.shop_id)).get(
                        "failed", 0), next_cursor=next_cursor, next_query=next_query, thumb=_thumb_url)

    @get("/images/{image_id:int}")
    async def image(self, request: Request[Any, Any, Any], db: Db, services: Svc, image_id: PathId) -> Response[Any]:
        """One image: what is known of it, why it failed, its details to edit, and the images most like it."""
        me = await _session(request, db)
        return await self._image_page(db, services, me, image_id)

    async def _image_page(self, db: Any, services: Any, me: SignedIn, image_id: int, status: int = 200,
                          **context: Any) -> Response[Any]:
        img = await get_shop_image(db, me.shop_id, image_id)
        similar = None
        if img.status == "ready":
            with contextlib.suppress(HubError):
                owner = Principal(shop_id=me.shop_id, key_id=me.key_id or 0, kind="secret")
                similar = await similar_images(db, services, owner, image_id, 8, {})
        return page("image.html", status, me=me, page="catalog", img=img, taxa=await _taxa(db, me.shop_id),
                    similar=similar, thumb=_thumb_url, **context)

    @post("/images/{image_id:int}", status_code=200, request_max_body_size=FORM_BYTES)
    async def edit_image(self, request: Request[Any, Any, Any], db: Db, services: Svc,
                         image_id: PathId) -> Response[Any]:
        me = await _session(request, db)
        form = await _checked_form(request, me)
        try:
            patch = ImagePatch.model_validate({
                "name": str(form.get("name") or ""), "description": str(form.get("description") or ""),
                "product_url": str(form.get("product_url") or "").strip() or None,
                **{f"{field}_id": _number(form.get(field)) for field in ("category", "style", "age_group")}})
            await update_image(db, services, me.shop_id, image_id, patch)
        except ValidationError as exc:
            return await self._image_page(db, services, me, image_id, 400, error=validation_detail(exc))
        except HubError as exc:
            return await self._image_page(db, services, me, image_id, status_of(exc), error=exc.detail)
        return await self._image_page(db, services, me, image_id, notice="Saved.")

    @post("/images/{image_id:int}/retry", status_code=303, request_max_body_size=FORM_BYTES)
    async def retry(self, request: Request[Any, Any, Any], db: Db, services: Svc, image_id: PathId) -> Response[Any]:
        me = await _session(request, db)
        await _checked_form(request, me)
        try:
            await retry_image(db, services, me.shop_id, image_id)
        except HubError as exc:
            return await self._image_page(db, services, me, image_id, status_of(exc), error=exc.detail)
        return Redirect(f"/console/images/{image_id}", status_code=303, headers=HEADERS)

    @post("/images/retry-failed", status_code=303, request_max_body_size=FORM_BYTES)
    async def retry_all(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        me = await _session(request, db)
        await _checked_form(request, me)
        _, more = await retry_failed_images(db, services, me.shop_id, RetryFailed())  # one batch, as the API does
        return Redirect("/console/catalog" + ("?more_failed=1" if more else ""), status_code=303, headers=HEADERS)

    @get("/insights")
    async def insights_page(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """What shoppers asked in the last 30 days: per day (a plot), most asked, worst answered, filters."""
        me = await _session(request, db)
        await services.prompt_log.flush()
        data = await insights(db, me.shop_id)
        return page("insights.html", me=me, page="insights", data=data, plot=svg_timeline(data.days))

    @get("/insights.csv")
    async def insights_csv(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """The whole prompt log, streamed as CSV (from a session of its own: the request's ends before)."""
        me = await _session(request, db)
        shop_id = me.shop_id
        await services.prompt_log.flush()

        async def rows() -> AsyncIterator[str]:
            async with services.sessions() as session:
                async for chunk in prompt_log_csv(session, shop_id):
                    yield chunk

        return Stream(rows(), media_type="text/csv; charset=utf-8", headers={
            **HEADERS, "Content-Disposition": 'attachment; filename="prompts.csv"'})

    @get("/connections")
    async def connections(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """The shop's stores, and a form per installed connector (the fields its settings model declares)."""
        me = await _session(request, db)
        return await self._connections_page(db, services, me)

    async def _connections_page(self, db: Any, services: Any, me: SignedIn, status: int = 200,
                                **context: Any) -> Response[Any]:
        installed = services.plugins.connectors()
        rows = [connection_json(row, installed.get(row.connector), services)
                for row in await list_connections(db, me.shop_id)]
        forms = [{"name": name, "fields": _setting_fields(connector), "oauth": isinstance(connector, OAuthConnector)}
                 for name, connector in sorted(installed.items())]
        context.setdefault("values", {})
        return page("connections.html", status, me=me, page="connections", connections=rows, connectors=forms,
                    **context)

    @post("/connections", status_code=303, request_max_body_size=FORM_BYTES)
    async def connect(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """Connect a store with the connector's settings: the same checks as ``POST /api/v1/connections``."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        name, values = _connector_form(form)
        try:
            connector = find_connector(services.plugins, name)
            made = await open_connection(db, services, me.shop_id, connector, str(form.get("name") or "")[:200],
                                         values, bool(form.get("sync")))
        except HubError as exc:
            public = {k: v for k, v in values.items() if k not in _secrets_of(services, name)}
            return await self._connections_page(db, services, me, status_of(exc), error=exc.detail, chosen=name,
                                                values=public)
        return Redirect(f"/console/connections/{made['id']}", status_code=303, headers=HEADERS)

    @post("/connections/authorize", status_code=200, request_max_body_size=FORM_BYTES)
    async def authorize(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """Install a store through the platform's app (OAuth): a link to the platform's approval page, which sends
        the merchant back to this console (a link, not a redirect: the console's pages only post to the hub)."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        name, params = _connector_form(form)
        try:
            url = start_install(services, me.shop_id, name, str(form.get("name") or "")[:200], params, True,
                                from_console=True)
        except HubError as exc:
            return await self._connections_page(db, services, me, status_of(exc), error=exc.detail, chosen=name)
        return page("authorize.html", me=me, page="connections", url=url, connector=name)

    @get("/connections/{connection_id:int}")
    async def connection(self, request: Request[Any, Any, Any], db: Db, services: Svc,
                         connection_id: PathId) -> Response[Any]:
        """One store: its syncs, its webhook deliveries, and what can be done with it."""
        me = await _session(request, db)
        return await self._connection_page(db, services, me, connection_id)

    async def _connection_page(self, db: Any, services: Any, me: SignedIn, connection_id: int, status: int = 200,
                               **context: Any) -> Response[Any]:
        row = await get_connection(db, me.shop_id, connection_id)
        shown = connection_json(row, services.plugins.connectors().get(row.connector), services)
        syncs, _ = await list_jobs(db, me.shop_id, 20, None, None, "sync", connection_id)
        deliveries, _ = await list_deliveries(db, me.shop_id, connection_id, 50, None, None)
        return page("connection.html", status, me=me, page="connections", c=shown,
                    syncs=[job_json(job) for job in syncs], deliveries=deliveries, **context)

    @post("/connections/{connection_id:int}/{action:str}", status_code=303, request_max_body_size=FORM_BYTES)
    async def connection_action(self, request: Request[Any, Any, Any], db: Db, services: Svc,
                                connection_id: PathId, action: Annotated[str, PathParameter(max_length=20)],
                                ) -> Response[Any]:
        """``sync`` now, change the ``schedule``, or ``delete`` (disconnect) one store."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        try:
            if action == "sync":
                await sync_connection(db, services, me.shop_id, connection_id)
            elif action == "schedule":
                await update_connection(db, me.shop_id, connection_id, None, _number(form.get("minutes")) or 0)
            elif action == "delete":
                await remove_connection(db, services, me.shop_id, connection_id)
                return Redirect("/console/connections", status_code=303, headers=HEADERS)
            else:
                raise NotFoundException("no such action")
        except HubError as exc:
            return await self._connection_page(db, services, me, connection_id, status_of(exc), error=exc.detail)
        return Redirect(f"/console/connections/{connection_id}", status_code=303, headers=HEADERS)

    @get("/taxonomy")
    async def taxonomy(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _session(request, db)
        return await self._taxonomy_page(db, me)

    async def _taxonomy_page(self, db: Any, me: SignedIn, status: int = 200, **context: Any) -> Response[Any]:
        groups = [(kind, label, await taxonomy.list(db, me.shop_id)) for kind, (label, taxonomy) in TAXONOMIES.items()]
        return page("taxonomy.html", status, me=me, page="taxonomy", groups=groups, **context)

    @post("/taxonomy/{kind:str}/add", status_code=303, request_max_body_size=FORM_BYTES)
    async def add_taxon(self, request: Request[Any, Any, Any], db: Db,
                        kind: Annotated[str, PathParameter(max_length=20)]) -> Response[Any]:
        return await self._taxon_change(request, db, kind, None, "add")

    @post("/taxonomy/{kind:str}/{taxon_id:int}/{action:str}", status_code=303, request_max_body_size=FORM_BYTES)
    async def change_taxon(self, request: Request[Any, Any, Any], db: Db, services: Svc,
                           kind: Annotated[str, PathParameter(max_length=20)], taxon_id: PathId,
                           action: Annotated[str, PathParameter(max_length=20)]) -> Response[Any]:
        return await self._taxon_change(request, db, kind, taxon_id, action, services)

    async def _taxon_change(self, request: Request[Any, Any, Any], db: Any, kind: str, taxon_id: int | None,
                            action: str, services: Any = None) -> Response[Any]:
        """Add, rename or delete a category, style or age group (the API's rules: names unique ignoring case;
        a deleted group's images stay, without it)."""
        me = await _session(request, db)
        form = await _checked_form(request, me)
        if kind not in TAXONOMIES or action not in ("add", "rename", "delete"):
            raise NotFoundException("no such taxonomy or action")
        taxonomy = TAXONOMIES[kind][1]
        try:
            if action == "add":
                await taxonomy.add(db, me.shop_id, TaxonCreate(name=str(form.get("name") or "")))
            elif action == "rename" and taxon_id is not None:
                await taxonomy.update(db, me.shop_id, taxon_id, TaxonUpdate(name=str(form.get("name") or "")))
            elif taxon_id is not None:
                await taxonomy.remove(db, services.pipeline, me.shop_id, taxon_id)
        except ValidationError as exc:
            return await self._taxonomy_page(db, me, 400, error=validation_detail(exc))
        except HubError as exc:
            return await self._taxonomy_page(db, me, status_of(exc), error=exc.detail)
        return Redirect("/console/taxonomy", status_code=303, headers=HEADERS)

    @get("/keys")
    async def keys(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _session(request, db)
        return page("keys.html", me=me, page="keys", keys=await list_keys(db, me.shop_id))

    @post("/keys", status_code=200, request_max_body_size=FORM_BYTES)
    async def create_key(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        me = await _session(request, db)
        form = await _checked_form(request, me)
        kind = form.get("kind") if form.get("kind") in ("secret", "publishable") else "publishable"
        try:
            new = await add_key(db, me.shop_id, str(kind), str(form.get("name") or "")[:100],
                                services.settings.max_keys_per_shop)
        except HubError as exc:
            return page("keys.html", status_of(exc), me=me, page="keys", keys=await list_keys(db, me.shop_id),
                        error=exc.detail)
        return page("keys.html", me=me, page="keys", keys=await list_keys(db, me.shop_id),
                    new_key={"kind": kind, "raw": new.raw})

    @post("/keys/{key_id:int}/revoke", status_code=303, request_max_body_size=FORM_BYTES)
    async def revoke(self, request: Request[Any, Any, Any], db: Db, key_id: PathId) -> Response[Any]:
        me = await _session(request, db)
        await _checked_form(request, me)
        try:
            await revoke_key(db, me.shop_id, key_id)
        except HubError as exc:
            return page("keys.html", status_of(exc), me=me, page="keys", keys=await list_keys(db, me.shop_id),
                        error=exc.detail)
        if key_id == me.key_id:  # the session's own key: it ended with it
            return _to_sign_in()
        return Redirect("/console/keys", status_code=303, headers=HEADERS)


def _thumb_url(img: Image) -> str:
    return f"/console/thumbs/{img.id}"


def _setting_fields(connector: Any) -> list[dict[str, Any]]:
    """A connector's settings as form fields: title, description, required, secret (a password field), choices."""
    schema = connector.settings_model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "title": spec.get("title", name), "description": spec.get("description", ""),
             "required": name in required, "secret": bool(spec.get("secret")), "choices": spec.get("enum"),
             "default": spec.get("default") if not isinstance(spec.get("default"), (dict, list)) else None}
            for name, spec in schema.get("properties", {}).items()]


def _connector_form(form: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A connection form's connector name and the settings filled in (``setting:<name>`` fields, blanks left out)."""
    values = {key.removeprefix("setting:"): str(value).strip() for key, value in form.items()
              if key.startswith("setting:") and str(value).strip() != ""}
    return str(form.get("connector") or ""), values


def _secrets_of(services: Any, name: str) -> set[str]:
    connector = services.plugins.connectors().get(name)
    return secret_fields(connector.settings_model) if connector is not None else set()


def lexical_weight(text: str) -> float | None:
    """A weight of words typed in a form, 0 to 1 (None: not one)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


def _number(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None


async def _taxa(db: Any, shop_id: int) -> list[tuple[str, str, list[Any]]]:
    return [("category", "Category", await categories.list(db, shop_id)),
            ("style", "Style", await styles.list(db, shop_id)),
            ("age_group", "Age group", await age_groups.list(db, shop_id))]


async def _fetch_original(services: Any, img: Image) -> bytes:
    """A URL image's picture, for its thumbnail: through the same guarded fetch as indexing (limits, deadline,
    address checks, the connection's image credentials)."""
    settings = services.settings
    headers = await image_fetch_headers(services, img)
    async with make_client(settings.fetch_timeout, settings.allow_private_fetch, max_bytes=settings.max_upload_bytes,
                           deadline=settings.fetch_deadline, min_rate=settings.fetch_min_rate) as http:
        with anyio.fail_after(settings.fetch_deadline):
            return await fetch_image(http, img.image_url or "", max_bytes=settings.max_upload_bytes,
                                     allow_private=settings.allow_private_fetch,
                                     max_redirects=settings.fetch_max_redirects, headers=headers)


FAILED = ".failed"  # beside a thumbnail's path: the picture could not be had (at that file's time)
RETRY_THUMB_AFTER = 600  # seconds
PLACEHOLDER = (b'<svg xmlns="http://www.w3.org/2000/svg" width="240" height="320" viewBox="0 0 240 320">'
               b'<rect width="240" height="320" fill="#e5e7eb"/><text x="120" y="165" font-family="sans-serif" '
               b'font-size="16" fill="#6b7280" text-anchor="middle">no picture</text></svg>')


def _placeholder() -> Response[bytes]:
    return Response(PLACEHOLDER, status_code=404, media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})



def _make_thumb(data: bytes) -> bytes:
    """A checked image's thumbnail (one more decode, reduced by the JPEG draft, in a decode slot)."""
    with DECODES.slot(), PILImage.open(io.BytesIO(data)) as pil:
        pil.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        pil = pil.convert("RGB")
        pil.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out = io.BytesIO()
        pil.save(out, "JPEG", quality=82)
        return out.getvalue()

