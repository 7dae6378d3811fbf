"""The console's pages and actions, each a plain function run in the thread pool (app.py wraps
them with the login check, CSRF and the audit row)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from cabinet.console.app import (Outcome, restock_args, run_restock, select_sessions,
                                 session_id, temp_folder, json_file)
from cabinet.errors import CabinetError, FormatErrors

MAX_UPLOAD = 512 * 1024


class Pages:
    def __init__(self, console: Any):
        self.c = console
        self.deps = console.deps
        self.cab = console.cab

    # --- status, inventory -------------------------------------------------------------------
    def status(self, request: Request, login: Any):
        from cabinet.journal import Alarms, Journal
        facts = dict(self.deps.status()) if self.deps.status else {}
        facts.setdefault("state", Journal(self.deps.db).cabinet_state())
        facts.setdefault("alarms", Alarms(self.deps.db).active())
        return "status.html", {"title": "Status", "facts": facts}

    def _ops(self):
        from cabinet.planogram_ops import Operations
        return Operations(self.cab.store, lambda: self.deps.db)

    def inventory(self, request: Request, login: Any):
        from cabinet.inventory import Inventory
        _, planogram = self._ops().in_force()
        return "inventory.html", {"title": "Inventory",
                                  "rows": Inventory(self.deps.db, planogram).report()}

    # --- restock -----------------------------------------------------------------------------
    def _visit_report(self):
        from cabinet.ops_cli import _report
        from cabinet.restock import RestockVisits
        visit = RestockVisits(self.deps.config.data_path).open_visit()
        report = error = None
        if visit is not None and visit.get("after"):
            catalog, planogram = self._ops().in_force()
            try:
                report = _report(self.cab, visit, catalog, planogram)
            except CabinetError as e:
                error = str(e)
        return visit, report, error

    def restock(self, request: Request, login: Any, **extra: Any):
        visit, report, error = self._visit_report()
        return "restock.html", dict({"title": "Restock", "visit": visit, "report": report,
                                     "error": error}, **extra)

    def _restock_page(self, request: Request, login: Any, message: str) -> dict:
        return self.restock(request, login, message=message)[1]

    def restock_start(self, request: Request, login: Any, form: Any) -> Outcome:
        done = run_restock(self.cab, restock_args("start", operator=login.operator))
        return Outcome("restock.html", self._restock_page(
            request, login, f"Restock visit {done['visit']} started: the cabinet is in restock."),
            done["visit"], "started")

    def restock_count(self, request: Request, login: Any, form: Any) -> Outcome:
        with temp_folder() as tmp:
            weights = json_file(str(form.get("weights", "")), "weights", Path(tmp))
            vision = json_file(str(form.get("vision", "")), "vision", Path(tmp))
            done = run_restock(self.cab, restock_args("count", weights=weights, vision=vision))
        flagged = [s["slot"] for s in done["slots"] if s.get("flags")]
        return Outcome("restock.html", self._restock_page(request, login, "Counted."),
                       done["visit"], f"counted; flagged: {', '.join(flagged) or 'none'}")

    def restock_accept(self, request: Request, login: Any, form: Any) -> Outcome:
        force = form.get("force") == "yes"
        done = run_restock(self.cab, restock_args("accept", force=force))
        lost = ", ".join(f"{k}: {v}" for k, v in done["shrinkage"].items()) or "none"
        return Outcome("restock.html", self._restock_page(
            request, login, f"Visit {done['visit']} accepted; shrinkage: {lost}."),
            done["visit"], f"accepted{' (forced)' if force else ''}; shrinkage {lost}")

    # --- planogram ---------------------------------------------------------------------------
    def planogram(self, request: Request, login: Any, **extra: Any):
        store = self.cab.store
        return "planogram.html", dict({"title": "Planogram",
                                       "in_force": store.read("planogram").decode("utf-8"),
                                       "versions": len(store.history("planogram"))}, **extra)

    def planogram_check(self, request: Request, login: Any, form: Any) -> Outcome:
        upload = form.get("file")
        if upload is not None and hasattr(upload, "file"):
            name = Path(upload.filename or "upload.yaml").name
            data = upload.file.read(MAX_UPLOAD + 1)
        else:
            name, data = "pasted.yaml", str(form.get("text", "")).encode("utf-8")
        if not data.strip():
            raise CabinetError("planogram check: choose a planogram file (YAML) to upload")
        if len(data) > MAX_UPLOAD:
            raise CabinetError(f"planogram check: {name} is over {MAX_UPLOAD // 1024} KiB; a "
                               f"planogram is a few KiB")
        text = data.decode("utf-8", errors="replace")
        ops = self._ops()
        errors = ops.validate("planogram", (data, Path(name)))
        lines = text.splitlines()
        if errors:
            marks: dict[int, list[str]] = {}
            for e in errors:
                marks.setdefault(e.line or 0, []).append(str(e))
            ctx = self.planogram(request, login, upload_name=name, errors=errors,
                                 lines=lines, marks=marks)[1]
            return Outcome("planogram.html", ctx, name, f"{len(errors)} error(s): "
                           + "; ".join(str(e) for e in errors), ok=False, status_code=422)
        changes = ops.diff("planogram", (data, Path(name)))
        ctx = self.planogram(request, login, upload_name=name, changes=changes, text=text)[1]
        return Outcome("planogram.html", ctx, name, f"valid; {len(changes)} change(s)")

    def planogram_apply(self, request: Request, login: Any, form: Any) -> Outcome:
        from cabinet.planogram_ops import render_changes
        text = str(form.get("text", ""))
        name = Path(str(form.get("name", "upload.yaml")) or "upload.yaml").name
        if not text.strip():
            raise CabinetError("planogram apply: nothing to apply; upload a file first")
        with temp_folder() as tmp:
            path = Path(tmp) / name
            path.write_text(text, "utf-8")
            try:
                changes = self._ops().apply("planogram", path)
            except FormatErrors as e:
                raise CabinetError(f"planogram apply refused, nothing changed:\n{e}") from None
        ctx = self.planogram(request, login, applied=changes)[1]
        return Outcome("planogram.html", ctx, name, "applied: " + render_changes(changes))

    def planogram_rollback(self, request: Request, login: Any, form: Any) -> Outcome:
        from cabinet.planogram_ops import render_changes
        changes = self._ops().rollback("planogram")
        ctx = self.planogram(request, login, rolled_back=changes)[1]
        return Outcome("planogram.html", ctx, "planogram",
                       "rolled back: " + render_changes(changes))

    # --- review ------------------------------------------------------------------------------
    def _reviewed(self) -> set[str]:
        from billing.outbox_models import Correction
        with self.deps.db() as s:
            corrected = set(s.scalars(select(Correction.session_id)))
        dismissed = {r.target for r in self.c.audit.rows(10_000, action="review.dismiss",
                                                        ok=True)}
        return corrected | dismissed

    def review_queue(self, request: Request, login: Any):
        done = self._reviewed()
        flagged = [s for s in select_sessions(self.deps.db, 500) if s.flags and s.id not in done]
        return "review_queue.html", {"title": "Review queue", "sessions": flagged}

    def _bundle_dir(self, sid: str) -> Path:
        return Path(self.deps.config.data_path) / "sessions" / session_id(sid)

    def _session_row(self, sid: str):
        from billing.models import CabinetSession
        with self.deps.db() as s:
            row = s.get(CabinetSession, session_id(sid))
        if row is None:
            raise CabinetError(f"session {sid}: no such session in the database")
        return row

    def review(self, request: Request, login: Any, **extra: Any):
        from cabinet.bundle import load_bundle
        sid = request.path_params["sid"]
        row = self._session_row(sid)
        folder = self._bundle_dir(sid)
        bundle = error = None
        try:
            bundle = load_bundle(folder)
        except (CabinetError, OSError) as e:
            error = f"session bundle {folder}: {e}"
        result = bundle.result if bundle is not None else None
        skus: list[tuple[str, str, int, int]] = []   # sku, name, price, qty charged
        charged = {line.sku: line.qty for line in row.lines}
        if bundle is not None:
            for slot in bundle.planogram.slots:
                if slot.sku not in [s[0] for s in skus]:
                    product = bundle.catalog[slot.sku]
                    skus.append((slot.sku, product.name, product.price,
                                 charged.get(slot.sku, 0)))
        return "review.html", dict({"title": f"Review {sid}", "s": row, "bundle": bundle,
                                    "result": result, "error": error, "skus": skus,
                                    "done": sid in self._reviewed(),
                                    "receipts": self._receipts(sid)}, **extra)

    def review_image(self, request: Request, login: Any) -> Response:
        from cabinet.console.draw import review_png
        sid = request.path_params["sid"]
        self._session_row(sid)
        png = review_png(self._bundle_dir(sid), request.path_params["camera"],
                         request.path_params["side"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    def review_correct(self, request: Request, login: Any, form: Any) -> Outcome:
        from billing.errors import BillingError
        from billing.records import Line
        from cabinet.bundle import load_bundle
        sid = session_id(request.path_params["sid"])
        if self.deps.billing is None:
            raise CabinetError("review: this console has no billing service (configuration)")
        bundle = load_bundle(self._bundle_dir(sid))
        lines = []
        for key, value in form.items():
            if not key.startswith("qty_"):
                continue
            sku = key[4:]
            try:
                qty = int(str(value))
            except ValueError:
                raise CabinetError(f"review {sid}: quantity of {sku} {value!r} is not a whole "
                                   f"number") from None
            if qty < 0:
                raise CabinetError(f"review {sid}: quantity of {sku} is below 0")
            if qty:
                try:
                    product = bundle.catalog[sku]
                except KeyError:
                    raise CabinetError(f"review {sid}: SKU {sku!r} is not in the session's "
                                       f"catalog") from None
                lines.append(Line(sku, product.name, qty, product.price))
        reason = str(form.get("reason", "")).strip()
        try:   # decides_review: the page showed a session waiting for this decision
            done = self.deps.billing.correct(sid, lines, reason or "operator review",
                                             decides_review=form.get("decides_review") == "yes")
        except BillingError as e:
            raise CabinetError(str(e)) from None
        detail = (f"correction {done.number}: {done.old_total} -> {done.new_total}; "
                  f"{done.action} {done.amount} ({done.status})")
        ctx = self.review(request, login, message=detail)[1]
        return Outcome("review.html", ctx, sid, detail)

    def review_dismiss(self, request: Request, login: Any, form: Any) -> Outcome:
        from billing.errors import BillingError
        sid = session_id(request.path_params["sid"])
        row = self._session_row(sid)
        reason = str(form.get("reason", "")).strip() or "checked, nothing to correct"
        message = f"dismissed: {reason}"
        # the page showed a session waiting for this decision (billing kept its hold for it):
        # release the hold, once (a second or stale dismissal is refused, nothing moves)
        if form.get("decides_review") == "yes" or row.state == "review":
            if self.deps.billing is None:
                raise CabinetError("review: this console has no billing service "
                                   "(configuration); the session's hold stays until one decides")
            try:
                done = self.deps.billing.correct(sid, [], reason, decides_review=True)
            except BillingError as e:
                raise CabinetError(str(e)) from None
            message = f"{message}; nothing charged, the hold is released ({done.status})"
        ctx = self.review(request, login, message=message)[1]
        ctx["done"] = True
        return Outcome("review.html", ctx, sid, message)

    # --- sessions, alarms, audit -------------------------------------------------------------
    def _receipts(self, sid: str) -> list[str]:
        from billing.outbox_models import StoredReceipt
        with self.deps.db() as s:
            return list(s.scalars(select(StoredReceipt.text).where(
                StoredReceipt.session_id == sid).order_by(StoredReceipt.version)))

    def sessions(self, request: Request, login: Any):
        return "sessions.html", {"title": "Sessions", "sessions": select_sessions(self.deps.db)}

    def session(self, request: Request, login: Any):
        sid = request.path_params["sid"]
        return "session.html", {"title": f"Session {sid}", "s": self._session_row(sid),
                                "receipts": self._receipts(sid)}

    def alarms(self, request: Request, login: Any, **extra: Any):
        from cabinet.journal import Alarms
        rows = list(reversed(Alarms(self.deps.db).all()))
        return "alarms.html", dict({"title": "Alarms", "rows": rows}, **extra)

    def alarm_ack(self, request: Request, login: Any, form: Any) -> Outcome:
        from cabinet.journal import Alarms
        kind = request.path_params["target"]
        if not Alarms(self.deps.db).clear(kind, f"operator {login.operator}"):
            raise CabinetError(f"alarm {kind}: none of this kind is active")
        ctx = self.alarms(request, login, message=f"Alarm {kind} acknowledged.")[1]
        return Outcome("alarms.html", ctx, kind, "cleared")

    def audit(self, request: Request, login: Any):
        return "audit.html", {"title": "Audit", "rows": self.c.audit.rows(500)}
