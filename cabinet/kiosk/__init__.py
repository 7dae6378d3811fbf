"""The customer's kiosk page: a Starlette app the controller's web server mounts.

    app.mount("/kiosk", kiosk_app(kiosk_state))

Everything the page needs is served from this package (static/ and i18n/), with a
Content-Security-Policy of 'self' only, so the page works without internet and cannot load
anything from elsewhere. Routes (relative to the mount point):

    GET  /               the page              GET /events     server-sent events (state)
    GET  /state          the state as JSON     GET /i18n/{lang}.json   a string catalog
    GET  /preview.jpg    the face camera frame (404 when none)
    GET  /qr.svg         the QR alternative, drawn by segno (404 when not on the QR screen;
                         /qr.png the same as a PNG)
    POST /start /use-qr /cancel    a tap (JSON body {}), 202 when the controller took it
    POST /pin            {"pin": "1234"} on the second-factor screen

Only loopback clients are served unless `allow_remote=True` (the kiosk's screen runs on the
cabinet itself); POSTs need a JSON content type and, when the browser sends one, an Origin of
this host, so no other web page can tap for the customer.
"""
from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path
from typing import Any

import segno
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (FileResponse, JSONResponse, PlainTextResponse,
                                 RedirectResponse, Response, StreamingResponse)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from cabinet.kiosk.state import (ActionRefused, KioskError, KioskState, NoHandler, Screen,
                                 first_name_of)

__all__ = ["kiosk_app", "KioskState", "Screen", "first_name_of", "LANGUAGES"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
I18N = HERE / "i18n"
LANGUAGES = ("en", "ja", "zh")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
NO_STORE = {"Cache-Control": "no-store"}


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Refuses (403) any client that is not on this machine."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if not _is_loopback(client[0] if client else None):
                response = PlainTextResponse(
                    "the kiosk serves only this machine (kiosk_app(..., allow_remote=True) "
                    "to serve others)", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def kiosk_app(state: KioskState, *, default_language: str = "en",
              allow_remote: bool = False) -> Starlette:
    """The kiosk as a Starlette app over `state`; mount it in the controller's server."""
    if default_language not in LANGUAGES:
        raise KioskError(f"kiosk_app: default_language {default_language!r} is not one of "
                         f"{', '.join(LANGUAGES)}")
    catalogs = {lang: json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))
                for lang in LANGUAGES}
    index_html = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        'lang="en" data-default-language="en"',
        f'lang="{default_language}" data-default-language="{default_language}"')
    page_headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", **NO_STORE}

    async def index(request: Request) -> Response:
        if not request.url.path.endswith("/"):     # relative asset URLs need the slash
            return RedirectResponse(request.url.path + "/", status_code=308)
        return Response(index_html, media_type="text/html; charset=utf-8", headers=page_headers)

    async def catalog(request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in catalogs:
            return PlainTextResponse(f"no catalog for language {lang!r} (have: "
                                     f"{', '.join(LANGUAGES)})", status_code=404)
        return JSONResponse(catalogs[lang], headers={"Cache-Control": "max-age=300"})

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot(), headers=NO_STORE)

    async def events(request: Request) -> Response:
        async def body():
            yield "retry: 1000\n\n"
            async for snap in state.stream():
                if snap is None:
                    yield ": keep-alive\n\n"
                else:
                    data = json.dumps(snap, ensure_ascii=False, separators=(",", ":"))
                    yield f"id: {snap['seq']}.{snap['preview']}\ndata: {data}\n\n"
        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    async def preview(request: Request) -> Response:
        frame = state.preview()
        if frame is None:
            return PlainTextResponse("no camera preview on the screen now", status_code=404,
                                     headers=NO_STORE)
        return Response(frame, media_type="image/jpeg", headers=NO_STORE)

    async def qr_png(request: Request) -> Response:
        code = state.qr_code()
        if code is None:
            return PlainTextResponse("no QR code on the screen now", status_code=404,
                                     headers=NO_STORE)
        out = io.BytesIO()
        segno.make(code, error="m").save(out, kind="png", scale=10, border=4)
        return Response(out.getvalue(), media_type="image/png", headers=NO_STORE)

    async def qr_svg(request: Request) -> Response:
        code = state.qr_code()
        if code is None:
            return PlainTextResponse("no QR code on the screen now", status_code=404,
                                     headers=NO_STORE)
        out = io.BytesIO()
        segno.make(code, error="m").save(out, kind="svg", scale=10, border=4, xmldecl=False,
                                         dark="#000", light="#fff")
        return Response(out.getvalue(), media_type="image/svg+xml", headers=NO_STORE)

    def action(name: str):
        async def endpoint(request: Request) -> Response:
            problem = _check_post(request)
            if problem:
                return problem
            try:
                body: Any = json.loads(await request.body() or b"{}")
            except ValueError:
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            args: tuple[Any, ...] = ()
            if name == "pin":
                if not isinstance(body, dict) or set(body) != {"pin"}:
                    return JSONResponse({"error": 'send {"pin": "<digits>"} and nothing '
                                                  'else'}, status_code=422)
                args = (body["pin"],)
            try:
                await state.act(name, *args)
            except ActionRefused as e:
                return JSONResponse({"error": str(e)}, status_code=409)
            except KioskError as e:
                return JSONResponse({"error": str(e)}, status_code=422)
            except NoHandler as e:
                return JSONResponse({"error": str(e)}, status_code=503)
            return JSONResponse({"accepted": name}, status_code=202)
        return endpoint

    routes = [
        Route("/", index),
        Route("/state", snapshot),
        Route("/events", events),
        Route("/i18n/{lang}.json", catalog),
        Route("/preview.jpg", preview),
        Route("/qr.png", qr_png),
        Route("/qr.svg", qr_svg),
        Route("/start", action("start"), methods=["POST"]),
        Route("/use-qr", action("use_qr"), methods=["POST"]),
        Route("/cancel", action("cancel"), methods=["POST"]),
        Route("/pin", action("pin"), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.kiosk = state
    if not allow_remote:
        app.add_middleware(LoopbackOnly)
    return app


def _check_post(request: Request) -> Response | None:
    """A tap comes from our own page: JSON content type, and same origin when one is sent."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return JSONResponse({"error": "send the tap as application/json"}, status_code=415)
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return JSONResponse({"error": f"origin {origin} may not tap on this kiosk"},
                            status_code=403)
    return None
