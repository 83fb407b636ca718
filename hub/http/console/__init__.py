"""The merchant console at ``/console``: server-rendered pages (Jinja2, autoescaped) with a little script, signed
in with a secret key. The session cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the hub is served
over https; every form carries the session's CSRF token (sign-in a double-submit one), and a form without it
changes nothing. Pages call the same domain functions as the API."""

from __future__ import annotations

import dataclasses
import io
import secrets
from importlib.resources import files
from typing import Annotated, Any

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter
from litestar.response import Redirect
from PIL import Image as PILImage

from hub.db.models import Image
from hub.domain.console import SignedIn, csrf_matches, find_session, overview, sign_in, sign_out
from hub.domain.images import ImageFields, add_upload
from hub.domain.keys import Principal, add_key, list_keys, revoke_key
from hub.domain.recommendations import prompt_text, recommend
from hub.errors import HubError
from hub.http.auth import client_address
from hub.http.deps import Db, Svc
from hub.http.errors import status_of
from hub.http.routes.images import read_upload
from hub.http.validation import PathId

SESSION_COOKIE = "hub_console"
SIGN_IN_COOKIE = "hub_console_signin"  # the double-submit CSRF token of the sign-in form
THUMB_SIZE = 320
STATIC = {name: files("hub.http.console").joinpath("static", name).read_bytes()
          for name in ("console.css", "console.js")}
TEMPLATES = Environment(loader=PackageLoader("hub.http.console", "templates"), autoescape=select_autoescape(),
                        trim_blocks=True, lstrip_blocks=True)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: http: data:; style-src 'self'; "
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


def _to_sign_in() -> Response[Any]:
    return Redirect("/console", status_code=303, headers=HEADERS)


def _refused(me: SignedIn | None) -> Response[str]:
    return page("problem.html", 403, me=me, title="Not done",
                detail="This form expired or came from another page (its security token did not match); nothing "
                       "was changed. Reload the page and try again.")


async def _form(request: Request[Any, Any, Any]) -> dict[str, Any]:
    form = await request.form()
    return {key: form.get(key) for key in form}


class ConsoleController(Controller):
    path = "/console"
    include_in_schema = False

    @get("/")
    async def home(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """The sign-in form, or the overview for a signed-in browser."""
        if await _signed_in(request, db):
            return Redirect("/console/overview", status_code=303, headers=HEADERS)
        token = secrets.token_urlsafe(32)
        return page("sign_in.html", csrf=token, cookies=[Cookie(key=SIGN_IN_COOKIE, value=token, path="/console", httponly=True, samesite="strict", secure=_secure(services))])

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        form = await _form(request)
        expected = request.cookies.get(SIGN_IN_COOKIE) or ""
        if not expected or not secrets.compare_digest(expected.encode(), str(form.get("csrf") or "").encode()):
            return _refused(None)
        state = request.app.state
        try:
            token, me = await sign_in(db, str(form.get("key") or ""))
        except HubError as exc:
            await state.limiter.hit(state.auth_failure_limits, "auth-failure", client_address(request))
            fresh = secrets.token_urlsafe(32)
            return page("sign_in.html", status_of(exc), error=exc.detail, csrf=fresh, cookies=[Cookie(key=SIGN_IN_COOKIE, value=fresh, path="/console", httponly=True, samesite="strict", secure=_secure(services))])
        return Redirect("/console/overview", status_code=303, headers=HEADERS, cookies=[
            Cookie(key=SESSION_COOKIE, value=token, path="/console", httponly=True, samesite="strict",
                   secure=_secure(services), max_age=12 * 3600),
            Cookie(key=SIGN_IN_COOKIE, value="", path="/console", max_age=0)])

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        if not csrf_matches(me, (await _form(request)).get("csrf")):
            return _refused(me)
        await sign_out(db, me)
        return Redirect("/console", status_code=303, headers=HEADERS,
                        cookies=[Cookie(key=SESSION_COOKIE, value="", path="/console", max_age=0)])

    @get("/overview")
    async def overview_page(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        notice = "Uploaded: it will be ready in a moment." if request.query_params.get("uploaded") else None
        return page("overview.html", me=me, page="overview", data=await overview(db, me.shop_id), notice=notice)

    @get("/overview.json")
    async def overview_data(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return Response({"detail": "signed out"}, status_code=401, headers=HEADERS)
        return Response(dataclasses.asdict(await overview(db, me.shop_id)), headers=HEADERS)

    @post("/images", status_code=303)
    async def upload(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        form = await request.form()
        if not csrf_matches(me, form.get("csrf")):
            return _refused(me)
        try:
            data = await read_upload(form.get("file"), services.settings.max_upload_bytes)
            fields = ImageFields(name=str(form.get("name") or "")[:500])
            img = await add_upload(db, services, me.shop_id, data, fields)
        except HubError as exc:
            return page("overview.html", status_of(exc), me=me, page="overview", error=exc.detail,
                        data=await overview(db, me.shop_id))
        return Redirect(f"/console/overview?uploaded={img.id}", status_code=303, headers=HEADERS)

    @get("/try")
    async def try_it(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        """A prompt ranked exactly as the storefront would get it (a publishable key's view), with timings."""
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        prompt = (request.query_params.get("prompt") or "").strip()
        raw_limit = request.query_params.get("limit") or "12"
        limit = min(max(int(raw_limit), 1), 100) if raw_limit.isdigit() else 12
        if not prompt:
            return page("try.html", me=me, page="try", prompt="", limit=limit, results=None)
        try:
            storefront = Principal(shop_id=me.shop_id, key_id=me.key_id, kind="publishable")
            ranked, timings = await recommend(db, services, storefront, prompt_text(prompt), limit, {},
                                              log_prompt=False)
        except HubError as exc:
            return page("try.html", status_of(exc), me=me, page="try", prompt=prompt, limit=limit, results=None,
                        error=exc.detail)
        results = [{"name": img.name, "score": score, "thumb": _thumb_url(img)} for img, score in ranked]
        return page("try.html", me=me, page="try", prompt=prompt, limit=limit, results=results, timings=timings)

    @get("/thumbs/{image_id:int}")
    async def thumb(self, request: Request[Any, Any, Any], db: Db, services: Svc, image_id: PathId) -> Response[Any]:
        """A stored photo resized for the console (made once, then served from the media folder)."""
        me = await _signed_in(request, db)
        img = await db.get(Image, image_id) if me else None
        if me is None or img is None or img.shop_id != me.shop_id or not img.photo:
            raise NotFoundException("no such thumbnail")
        relative = f"{img.shop_id}/thumbs/{img.id}-{THUMB_SIZE}.jpg"
        media = services.media
        photo = img.photo

        def load() -> bytes:
            try:
                return media.read(relative)
            except FileNotFoundError:
                made = _make_thumb(media.read(photo))
                media.write(relative, made)
                return made

        try:
            data = await anyio.to_thread.run_sync(load)
        except FileNotFoundError:
            raise NotFoundException("the photo is missing") from None
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @get("/static/{name:str}")
    async def static(self, name: Annotated[str, PathParameter(max_length=50)]) -> Response[bytes]:
        """The console's own stylesheet and script (no third-party code, no CDN)."""
        if name not in STATIC:
            raise NotFoundException("no such file")
        return Response(STATIC[name], media_type="text/css" if name.endswith(".css") else "text/javascript",
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})

    @get("/keys")
    async def keys(self, request: Request[Any, Any, Any], db: Db) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        return page("keys.html", me=me, page="keys", keys=await list_keys(db, me.shop_id))

    @post("/keys", status_code=200)
    async def create_key(self, request: Request[Any, Any, Any], db: Db, services: Svc) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        form = await _form(request)
        if not csrf_matches(me, form.get("csrf")):
            return _refused(me)
        kind = form.get("kind") if form.get("kind") in ("secret", "publishable") else "publishable"
        try:
            new = await add_key(db, me.shop_id, str(kind), str(form.get("name") or "")[:100],
                                services.settings.max_keys_per_shop)
        except HubError as exc:
            return page("keys.html", status_of(exc), me=me, page="keys", keys=await list_keys(db, me.shop_id),
                        error=exc.detail)
        return page("keys.html", me=me, page="keys", keys=await list_keys(db, me.shop_id),
                    new_key={"kind": kind, "raw": new.raw})

    @post("/keys/{key_id:int}/revoke", status_code=303)
    async def revoke(self, request: Request[Any, Any, Any], db: Db, key_id: PathId) -> Response[Any]:
        me = await _signed_in(request, db)
        if me is None:
            return _to_sign_in()
        if not csrf_matches(me, (await _form(request)).get("csrf")):
            return _refused(me)
        try:
            await revoke_key(db, me.shop_id, key_id)
        except HubError as exc:
            return page("keys.html", status_of(exc), me=me, page="keys", keys=await list_keys(db, me.shop_id),
                        error=exc.detail)
        if key_id == me.key_id:  # the session's own key: it ended with it
            return _to_sign_in()
        return Redirect("/console/keys", status_code=303, headers=HEADERS)


def _thumb_url(img: Image) -> str:
    return f"/console/thumbs/{img.id}" if img.photo else (img.image_url or "")


def _make_thumb(data: bytes) -> bytes:
    with PILImage.open(io.BytesIO(data)) as pil:
        pil.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        pil = pil.convert("RGB")
        pil.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out = io.BytesIO()
        pil.save(out, "JPEG", quality=82)
        return out.getvalue()

