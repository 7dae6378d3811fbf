"""The controller's HTTP server: health, Prometheus metrics, the touchscreen's start button.

Starlette served by uvicorn inside the controller's own asyncio loop (cabinet/runner.py), so a
request sees the runner's state without locks:

    GET  /                    redirects to the kiosk, /kiosk/
    /kiosk/...                the customer's touchscreen (cabinet/kiosk, docs/kiosk.md), live
                              from the runner's KioskState; loopback clients only
    /console/...              the operator's console (cabinet/console, docs/console.md), login
                              required
    GET  /healthz             {"state", "link", "alarms", ...}: 200 in service, 503 out of it
    GET  /metrics             Prometheus text: cabinet_sessions_total{outcome},
                              cabinet_reconcile_seconds, cabinet_link_*_total,
                              cabinet_alarms_active, cabinet_alarms_total{kind}, cabinet_in_service
    POST /api/session/start   the touchscreen's start: 202, or 409 with the reason
    POST /api/qr/claim        the phone app's {"code", "app_token"} for the kiosk's QR code:
                              200 unlocked, 403 refused (standing), 400 naming the field, 401
                              unknown token, 409 used or busy, 410 expired (cabinet/qr.py)
    POST /api/qr/entry-code   {"app_token"}: 201 {"code", "expires_in_s"}, the account's code
                              the app shows to the face camera

With simulated parts (only then) the simulator's side is here too, for tests and the demo
screen: POST /sim/face {"photo": PATH|null}, /sim/door {"action": "open"|"close"|"force"},
/sim/take {"slot": ID, "qty": N}, /sim/fault {"fault": NAME, ...params}; GET /sim/state
(the lock and the door as the simulated MCU has them). A real cabinet has
no such routes (404).

uvicorn's own signal handling is switched off: the runner owns SIGTERM and Ctrl-C, so a stop
never cuts a session short.
"""
from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from cabinet.errors import CabinetError

LINK_COUNTERS = ("bytes_in", "bytes_out", "frames_in", "frames_out", "bad_bytes",
                 "invalid_frames", "retransmits", "late_replies", "duplicate_events", "events",
                 "gaps", "replays", "link_losses")


class _LinkCollector:
    """cabinet_link_<counter>_total read from the board's link at each scrape."""

    def __init__(self, board: Any):
        self._board = board

    def collect(self):
        try:
            counters = self._board.counters()
        except Exception:       # a link that is down still has a scrape to answer
            return
        for name in LINK_COUNTERS:
            value = getattr(counters, name, None)
            if value is not None:
                fam = CounterMetricFamily(f"cabinet_link_{name}", f"serial link: {name}")
                fam.add_metric([], float(value))
                yield fam


class Metrics:
    """The controller's metrics, in a registry of their own (one per running cabinet)."""

    def __init__(self, board: Any = None):
        self.registry = CollectorRegistry()
        self.sessions = Counter("cabinet_sessions", "sessions ended, by outcome", ["outcome"],
                                registry=self.registry)
        self.reconcile_seconds = Histogram(
            "cabinet_reconcile_seconds", "reconcile time per session",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=self.registry)
        self.session_seconds = Histogram(
            "cabinet_session_seconds", "face seen to receipt", registry=self.registry,
            buckets=(1, 2, 5, 10, 30, 60, 120, 300))
        self.alarms_active = Gauge("cabinet_alarms_active", "alarms not cleared yet",
                                   registry=self.registry)
        self.alarms = Counter("cabinet_alarms", "alarms raised, by kind", ["kind"],
                              registry=self.registry)
        self.in_service = Gauge("cabinet_in_service", "1 while customers can shop",
                                registry=self.registry)
        if board is not None:
            self.registry.register(_LinkCollector(board))

    def text(self) -> bytes:
        return generate_latest(self.registry)


def make_asgi(runner: Any) -> Starlette:
    """The Starlette app over a runner (cabinet.runner.Runner)."""

    async def healthz(request: Request) -> JSONResponse:
        health = runner.health()
        return JSONResponse(health, status_code=200 if health["in_service"] else 503)

    async def metrics(request: Request) -> Response:
        return Response(runner.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def start(request: Request) -> JSONResponse:
        refusal = runner.request_start()
        if refusal:
            return JSONResponse({"accepted": False, "reason": refusal}, status_code=409)
        return JSONResponse({"accepted": True}, status_code=202)

    async def root(request: Request) -> Response:
        return RedirectResponse("/kiosk/", status_code=307)

    async def qr_claim(request: Request) -> JSONResponse:
        body = await _api_body(request, ("code", "app_token"))
        if isinstance(body, JSONResponse):
            return body
        status, out = await runner.qr.claim(body.get("code"), body.get("app_token"))
        return JSONResponse(out, status_code=status)

    async def qr_entry_code(request: Request) -> JSONResponse:
        body = await _api_body(request, ("app_token",))
        if isinstance(body, JSONResponse):
            return body
        status, out = runner.qr.entry_code(body.get("app_token"))
        return JSONResponse(out, status_code=status)

    from cabinet.console.app import console_app, deps_from_runner
    from cabinet.kiosk import kiosk_app
    routes = [Route("/", root), Route("/healthz", healthz), Route("/metrics", metrics),
              Route("/api/session/start", start, methods=["POST"]),
              Route("/api/qr/claim", qr_claim, methods=["POST"]),
              Route("/api/qr/entry-code", qr_entry_code, methods=["POST"]),
              Mount("/kiosk", kiosk_app(runner.kiosk)),
              Mount("/console", console_app(deps_from_runner(runner)))]
    app = runner.app
    if app.mcu is not None or app.world is not None:
        routes += _sim_routes(app)
    return Starlette(routes=routes)


MAX_API_BODY = 4096


async def _api_body(request: Request, fields: tuple[str, ...]) -> dict | JSONResponse:
    """A phone app's JSON object with only `fields` (at most MAX_API_BODY bytes), or the
    error response naming what is wrong."""
    def bad(status: int, field: str, message: str) -> JSONResponse:
        return JSONResponse({"error": f"{request.url.path}: {message}", "field": field},
                            status_code=status)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return bad(415, "content-type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_API_BODY:
        return bad(413, "body", f"the body is over {MAX_API_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_API_BODY:
            return bad(413, "body", f"the body is over {MAX_API_BODY} bytes")
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        return bad(400, "body", "the body is not JSON")
    if not isinstance(data, dict):
        return bad(400, "body", f"send a JSON object with {', '.join(fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        return bad(400, unknown[0], f"unknown field(s) {', '.join(unknown)}; send "
                                    f"{', '.join(fields)} only")
    return data


def _sim_routes(app: Any) -> list[Route]:
    """The simulator's side (simulated parts only): a person at the face camera, the door,
    hands in the shelves, faults on the MCU."""

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise CabinetError(f"{request.url.path}: the body is not JSON") from None
        if not isinstance(data, dict):
            raise CabinetError(f"{request.url.path}: the body is a JSON object")
        return data

    def bad(e: Exception) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    async def face(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool
        try:
            photo = (await body(request)).get("photo")
            show = getattr(app.face_camera, "show", None)
            if show is None:
                raise CabinetError("/sim/face: the face camera is a real one")
            await run_in_threadpool(show, photo)
        except (CabinetError, RuntimeError, ValueError) as e:
            return bad(e)
        return JSONResponse({"photo": photo})

    async def door(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool
        try:
            action = (await body(request)).get("action")
            if app.mcu is None:
                raise CabinetError("/sim/door: the board is a real one")
            if action == "open":
                opened = await run_in_threadpool(app.mcu.open_door)
            elif action == "force":
                opened = await run_in_threadpool(app.mcu.open_door, True)
            elif action == "close":
                await run_in_threadpool(app.mcu.close_door)
                opened = False
            else:
                raise CabinetError(f"/sim/door: action {action!r} is open, close or force")
        except (CabinetError, ValueError) as e:
            return bad(e)
        return JSONResponse({"action": action, "open": bool(opened)})

    async def take(request: Request) -> JSONResponse:
        try:
            data = await body(request)
            taken = app.world.take(str(data.get("slot")), int(data.get("qty", 1)))
        except (CabinetError, KeyError, ValueError, TypeError) as e:
            return bad(e)
        return JSONResponse({"taken": [item.sku for item in taken]})

    async def fault(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool
        try:
            data = await body(request)
            name = str(data.pop("fault", ""))
            await run_in_threadpool(lambda: app.mcu.inject(name, **data))
        except (CabinetError, ValueError, TypeError, AttributeError) as e:
            return bad(e)
        return JSONResponse({"fault": name})

    async def state(request: Request) -> JSONResponse:
        mcu = app.mcu
        if mcu is None:
            return bad(CabinetError("/sim/state: the board is a real one"))
        return JSONResponse({"lock_engaged": bool(mcu.lock_engaged),
                             "door_open": bool(getattr(mcu, "door_open", False))})

    return [Route("/sim/state", state), Route("/sim/face", face, methods=["POST"]), Route("/sim/door", door, methods=["POST"]),
            Route("/sim/take", take, methods=["POST"]), Route("/sim/fault", fault, methods=["POST"])]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the runner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """uvicorn on a socket bound here (so a taken port is our error, naming it)."""

    def __init__(self, asgi: Starlette, host: str, port: int):
        self.host, self.port = host, port
        self._asgi = asgi
        self._server: _Server | None = None
        self._task = None
        self._sock: socket.socket | None = None

    async def start(self) -> int:
        """Bind and serve; returns the port (the one the OS chose for port 0)."""
        import asyncio
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise CabinetError(f"http: cannot listen on {self.host}:{self.port} ({e.strerror});"
                               f" another program holds it: change http.port in the "
                               f"configuration") from None
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._asgi, log_level="warning", lifespan="off",
                                access_log=False)
        self._server = _Server(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.005)      # uvicorn sets `started` once it accepts
        if self._task.done():
            self._task.result()
            raise CabinetError(f"http: the server on {self.host}:{self.port} stopped at start")
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
        if self._sock is not None:
            self._sock.close()
