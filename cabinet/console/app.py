"""The operator console's pages and actions, as one Starlette app the controller mounts.

Every route but the login form and the stylesheet needs a live login session (auth.py): a page
asked without one redirects to the login form, an action is refused with 401. Every action is
a POST whose form carries the session's CSRF token (csrf.py), checked before anything else, and
every action, refused or not, leaves a row in the audit table (audit.py). The actions call the
cabinet's own operations and nothing else: planogram_ops.Operations (validate, diff, apply,
rollback), the restock commands of ops_cli (start, count, accept), billing.Billing.correct
(refund or extra charge), journal.Alarms.clear. Blocking work (SQLite, argon2, OpenCV) runs in
Starlette's thread pool, never on the controller's loop.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import jinja2
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from cabinet import inforce
from cabinet.console import csrf
from cabinet.console.audit import Audit
from cabinet.console.auth import Operators, Sessions, Throttle
from cabinet.errors import CabinetError

HERE = Path(__file__).resolve().parent
PUBLIC = frozenset({"login", "login_post", "static"})   # reachable without a login session
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclasses.dataclass
class ConsoleDeps:
    """What the console works on: the cabinet's configuration and database, billing (for
    corrections and refunds), the Clock port (session expiry, throttle, audit times) and a
    `status()` callable with the live state (`live_status` builds it from a board)."""
    config: Any
    db: Any
    billing: Any = None
    clock: Any = None
    status: Callable[[], dict] | None = None
    session_ttl_s: float = 900.0
    max_failures: int = 5
    lockout_window_s: float = 300.0
    secure_cookies: bool = False
    fleet_db: Any = None        # the fleet database's sessions: the fleet pages (fleet.py)


def live_status(board: Any, planogram: Any, health: dict | None = None) -> dict:
    """The status page's facts from the board (lock, door, temperature, shelf weights by
    planogram shelf) and the runner's health (state, link, alarms)."""
    out: dict[str, Any] = dict(health or {})
    try:
        state = board.state()
        weights = board.weights()
    except Exception as e:          # a board that does not answer is the news itself
        out.update(board_error=f"{type(e).__name__}: {e}")
        return out
    by_channel = {shelf.channel: shelf.id for shelf in planogram.shelves} if planogram else {}
    out.update(lock="engaged" if state.lock_engaged else "released",
               door="open" if state.door_open else "closed",
               temperature_c=state.temperature_c,
               shelves={by_channel.get(i, f"channel {i}"): {"grams": round(r.grams, 1),
                                                            "stable": r.stable}
                        for i, r in sorted(weights.items())})
    return out


class _Cab:
    """What ops_cli's restock commands need of a cabinet: configuration, files, database."""

    def __init__(self, config: Any, db: Any):
        self.config, self._db = config, db
        self.store = inforce.for_config(config)

    def db(self):
        return self._db


@dataclasses.dataclass
class Outcome:
    """An action's answer: the page to show and what the audit row says."""
    template: str
    context: dict
    target: str = ""
    detail: str = ""
    ok: bool = True
    status_code: int = 200


class Console:
    def __init__(self, deps: ConsoleDeps):
        from firmware_bridge.clock import clock_or_system
        self.deps = deps
        self.clock = clock_or_system(deps.clock)
        now = self.clock.time
        self.operators = Operators(deps.db)
        self.sessions = Sessions(deps.db, now, ttl_s=deps.session_ttl_s)
        self.throttle = Throttle(deps.db, now, max_failures=deps.max_failures,
                                 window_s=deps.lockout_window_s)
        self.audit = Audit(deps.db, now)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["path_for"] = _path_for
        self.cab = _Cab(deps.config, deps.db)

    # --- plumbing ----------------------------------------------------------------------------
    def _cookie_path(self, request: Request) -> str:
        return (request.scope.get("root_path") or "") + "/"

    async def _login(self, request: Request):
        token = request.cookies.get(csrf.SESSION_COOKIE)
        return await run_in_threadpool(self.sessions.get, token) if token else None

    def _render(self, request: Request, template: str, login: Any, context: dict,
                status_code: int = 200) -> Response:
        return self.templates.TemplateResponse(
            request, template, dict(context, operator=login.operator if login else None,
                                    csrf=login.csrf if login else ""), status_code=status_code)

    def page(self, fn: Callable[[Request, Any], tuple[str, dict] | Response]):
        async def endpoint(request: Request) -> Response:
            login = await self._login(request)
            if login is None:
                return RedirectResponse(request.url_for("login").path, status_code=303)
            try:
                result = await run_in_threadpool(fn, request, login)
            except CabinetError as e:    # a session, camera or file that is not there
                return self._render(request, "result.html", login,
                                    {"title": "Not found", "error": str(e)}, 404)
            if isinstance(result, Response):
                return result
            return self._render(request, result[0], login, result[1])
        return endpoint

    def action(self, name: str, fn: Callable[[Request, Any, Any], Outcome]):
        async def endpoint(request: Request) -> Response:
            login = await self._login(request)
            if login is None:
                return PlainTextResponse("console: log in first", status_code=401)
            form = await request.form()
            target = str(request.path_params.get("target", request.path_params.get("sid", "")))
            if not csrf.same(login.csrf, form.get("csrf")):
                await run_in_threadpool(self.audit.record, login.operator, name, target,
                                        ok=False, detail="refused: missing or wrong CSRF token")
                return PlainTextResponse("console: the form's CSRF token is missing or wrong; "
                                         "reload the page and try again", status_code=403)
            try:
                out = await run_in_threadpool(fn, request, login, form)
            except CabinetError as e:
                out = Outcome("result.html", {"title": name, "error": str(e)}, target,
                              f"refused: {e}", ok=False, status_code=409)
            await run_in_threadpool(self.audit.record, login.operator, name,
                                    out.target or target, ok=out.ok, detail=out.detail)
            return self._render(request, out.template, login, out.context, out.status_code)
        return endpoint

    # --- login ---------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        return self._login_form(request, "")

    def _login_form(self, request: Request, error: str, status_code: int = 200) -> Response:
        token = csrf.new_token()
        response = self.templates.TemplateResponse(
            request, "login.html", {"login_csrf": token, "error": error, "operator": None},
            status_code=status_code)
        csrf.set_cookie(response, csrf.LOGIN_COOKIE, token, path=self._cookie_path(request),
                        secure=self.deps.secure_cookies)
        return response

    async def login_post(self, request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()[:64]
        if not csrf.same(request.cookies.get(csrf.LOGIN_COOKIE), form.get("csrf")):
            return self._login_form(request, "The form expired; try again.", 403)
        wait = await run_in_threadpool(self.throttle.locked_for, name)
        if wait > 0:
            await run_in_threadpool(self.audit.record, name or "?", "login", name, ok=False,
                                    detail=f"refused: locked out for {wait:.0f} s more")
            return self._login_form(request, f"Too many failed logins for this name: try "
                                    f"again in {wait:.0f} s.", 429)
        ok = await run_in_threadpool(self.operators.verify, name, str(form.get("password", "")))
        if not ok:
            await run_in_threadpool(self.throttle.failed, name)
            await run_in_threadpool(self.audit.record, name or "?", "login", name, ok=False,
                                    detail="refused: wrong name or password")
            return self._login_form(request, "Wrong name or password.", 401)
        await run_in_threadpool(self.throttle.succeeded, name)
        token, _ = await run_in_threadpool(self.sessions.create, name)
        await run_in_threadpool(self.audit.record, name, "login", name)
        response = RedirectResponse(request.url_for("status").path, status_code=303)
        csrf.set_cookie(response, csrf.SESSION_COOKIE, token, path=self._cookie_path(request),
                        secure=self.deps.secure_cookies)
        response.delete_cookie(csrf.LOGIN_COOKIE, path=self._cookie_path(request))
        return response

    def logout(self, request: Request, login: Any, form: Any) -> Outcome:
        self.sessions.end(request.cookies.get(csrf.SESSION_COOKIE))
        return Outcome("result.html", {"title": "Logged out", "message": "You are logged out.",
                                       "logged_out": True}, login.operator)

    # --- routes ------------------------------------------------------------------------------
    def routes(self) -> list:
        from cabinet.console import fleet as fleet_pages, pages
        p = pages.Pages(self)
        return [
            Route("/login", self.login, methods=["GET"], name="login"),
            Route("/login", self.login_post, methods=["POST"], name="login_post"),
            Route("/logout", self.action("logout", self.logout), methods=["POST"],
                  name="logout"),
            Route("/", self.page(p.status), name="status"),
            Route("/inventory", self.page(p.inventory), name="inventory"),
            Route("/restock", self.page(p.restock), name="restock"),
            Route("/restock/start", self.action("restock.start", p.restock_start),
                  methods=["POST"], name="restock_start"),
            Route("/restock/count", self.action("restock.count", p.restock_count),
                  methods=["POST"], name="restock_count"),
            Route("/restock/accept", self.action("restock.accept", p.restock_accept),
                  methods=["POST"], name="restock_accept"),
            Route("/planogram", self.page(p.planogram), name="planogram"),
            Route("/planogram/check", self.action("planogram.check", p.planogram_check),
                  methods=["POST"], name="planogram_check"),
            Route("/planogram/apply", self.action("planogram.apply", p.planogram_apply),
                  methods=["POST"], name="planogram_apply"),
            Route("/planogram/rollback", self.action("planogram.rollback",
                                                     p.planogram_rollback),
                  methods=["POST"], name="planogram_rollback"),
            Route("/review", self.page(p.review_queue), name="review_queue"),
            Route("/review/{sid}", self.page(p.review), name="review"),
            Route("/review/{sid}/image/{camera}/{side}", self.page(p.review_image),
                  name="review_image"),
            Route("/review/{sid}/correct", self.action("review.correct", p.review_correct),
                  methods=["POST"], name="review_correct"),
            Route("/review/{sid}/dismiss", self.action("review.dismiss", p.review_dismiss),
                  methods=["POST"], name="review_dismiss"),
            Route("/sessions", self.page(p.sessions), name="sessions"),
            Route("/sessions/{sid}", self.page(p.session), name="session"),
            Route("/alarms", self.page(p.alarms), name="alarms"),
            Route("/alarms/{target}/ack", self.action("alarm.ack", p.alarm_ack),
                  methods=["POST"], name="alarm_ack"),
            Route("/audit", self.page(p.audit), name="audit"),
            *fleet_pages.routes(self),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]


@jinja2.pass_context
def _path_for(context: Any, name: str, **params: Any) -> str:
    """A page's path under the mount (no scheme or host: the page works behind any name)."""
    return context["request"].url_for(name, **params).path


def console_app(deps: ConsoleDeps) -> Starlette:
    """The console as an ASGI app; the controller mounts it, e.g. Mount("/console", ...)."""
    return Starlette(routes=Console(deps).routes())


def deps_from_runner(runner: Any, **options: Any) -> ConsoleDeps:
    """The console's dependencies from a running cabinet (cabinet.runner.Runner)."""
    app = runner.app
    return ConsoleDeps(config=app.config, db=app.db, billing=app.billing, clock=runner.clock,
                       status=lambda: live_status(app.board, app.planogram, runner.health()),
                       **options)


def restock_args(action: str, **kw: Any) -> argparse.Namespace:
    base = dict(action=action, operator=None, weights=None, vision=None, json=True, force=False)
    base.update(kw)
    return argparse.Namespace(**base)


def run_restock(cab: _Cab, args: argparse.Namespace) -> dict:
    from cabinet.ops_cli import _restock_cmd
    out = io.StringIO()
    _restock_cmd(args, cab, out)
    return json.loads(out.getvalue())


def json_file(text: str, what: str, folder: Path) -> Path | None:
    """A form's JSON text as a file for the restock commands (None when left empty)."""
    if not text.strip():
        return None
    try:
        json.loads(text)
    except ValueError as e:
        raise CabinetError(f"restock {what}: the text is not JSON ({e}); give e.g. "
                           f'{{"top": 2058.0, "middle": 3120.5}}') from None
    path = folder / f"{what}.json"
    path.write_text(text, "utf-8")
    return path


def temp_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="cabinet-console-")


def session_id(sid: str) -> str:
    if not SESSION_ID.match(sid or ""):
        raise CabinetError(f"session id {sid!r}: not a session id")
    return sid


def select_sessions(db: Any, limit: int = 100) -> list:
    from billing.models import CabinetSession
    with db() as s:
        return list(s.scalars(select(CabinetSession).order_by(CabinetSession.opened_at.desc())
                              .limit(limit)))
