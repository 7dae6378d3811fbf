"""The console's fleet view: every cabinet the back office hears from, one cabinet's detail,
and the review queue across the fleet.

It reads the fleet database (`cabinet fleet serve` writes it; cabinet/fleet/store.py) through
`ConsoleDeps.fleet_db`, a session factory; the pages sit behind the console's own login like
every other page. A console without a fleet database still answers these pages, saying so.
"Today" is the console clock's UTC day, so the tests move it like every other console time.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, select
from starlette.requests import Request
from starlette.routing import Route

from cabinet.errors import CabinetError
from cabinet.fleet import messages
from cabinet.fleet.store import (FleetAlarm, FleetCabinet, FleetMessage, FleetReceipt,
                                 FleetReview, FleetStock)

NO_FLEET = ("This console has no fleet database. Give it one (ConsoleDeps.fleet_db, or "
            "`cabinet fleet console --db postgresql://...`) to see the fleet here.")


def money(amount: int | None, currency: str) -> str:
    from billing.money import Money, MoneyError
    if amount is None:
        return ""
    try:
        return Money(int(amount), currency).format()
    except (MoneyError, ValueError):
        return f"{currency} {amount}"


class FleetPages:
    def __init__(self, console: Any):
        self.c = console
        self.deps = console.deps

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.c.clock.time(), dt.timezone.utc).date()

    def _db(self):
        return getattr(self.deps, "fleet_db", None)

    def overview(self, request: Request, login: Any):
        db = self._db()
        if db is None:
            return "fleet.html", {"title": "Fleet", "rows": None, "error": NO_FLEET}
        today = self._today()
        sales = (select(FleetReceipt.cabinet_id, FleetReceipt.currency,
                        func.sum(FleetReceipt.total).label("total"))
                 .where(FleetReceipt.day == today)
                 .group_by(FleetReceipt.cabinet_id, FleetReceipt.currency))
        low = (select(FleetStock.cabinet_id, func.count().label("n"))
               .where(FleetStock.par.is_not(None), FleetStock.qty < FleetStock.par)
               .group_by(FleetStock.cabinet_id))
        alarms = (select(FleetAlarm.cabinet_id, func.count().label("n"))
                  .where(FleetAlarm.raised_at.is_not(None), FleetAlarm.cleared_at.is_(None))
                  .group_by(FleetAlarm.cabinet_id))
        with db() as s:
            cabinets = list(s.scalars(select(FleetCabinet).order_by(FleetCabinet.cabinet_id)))
            by_sales: dict[str, list[str]] = {}
            for cid, currency, total in s.execute(sales):
                by_sales.setdefault(cid, []).append(money(total, currency))
            by_low = dict(s.execute(low).all())
            by_alarm = dict(s.execute(alarms).all())
        rows = [{"cabinet": c, "sales_today": ", ".join(by_sales.get(c.cabinet_id, [])) or "-",
                 "below_par": by_low.get(c.cabinet_id, 0),
                 "open_alarms": by_alarm.get(c.cabinet_id, 0),
                 "missing": max(0, c.last_seq - c.messages)} for c in cabinets]
        return "fleet.html", {"title": "Fleet", "rows": rows, "today": today,
                              "online": sum(1 for c in cabinets if c.status == "online")}

    def cabinet(self, request: Request, login: Any):
        db = self._db()
        cid = request.path_params["cabinet"]
        if db is None:
            raise CabinetError(NO_FLEET)
        messages.check_name(cid, "fleet page", "cabinet")
        today = self._today()
        with db() as s:
            cab = s.get(FleetCabinet, cid)
            if cab is None:
                raise CabinetError(f"cabinet {cid}: the back office has heard nothing from it")
            stock = list(s.scalars(select(FleetStock).where(FleetStock.cabinet_id == cid)
                                   .order_by(FleetStock.slot)))
            alarms = list(s.scalars(select(FleetAlarm).where(FleetAlarm.cabinet_id == cid)
                                    .order_by(FleetAlarm.alarm_id.desc()).limit(50)))
            days = s.execute(select(FleetReceipt.day, FleetReceipt.currency,
                                    func.count(), func.sum(FleetReceipt.total))
                             .where(FleetReceipt.cabinet_id == cid,
                                    FleetReceipt.day > today - dt.timedelta(days=14))
                             .group_by(FleetReceipt.day, FleetReceipt.currency)
                             .order_by(FleetReceipt.day.desc())).all()
            reviews = list(s.scalars(select(FleetReview).where(
                FleetReview.cabinet_id == cid, FleetReview.flagged.is_(True),
                FleetReview.resolved_at.is_(None)).order_by(FleetReview.at)))
            recent = list(s.scalars(select(FleetMessage).where(FleetMessage.cabinet_id == cid)
                                    .order_by(FleetMessage.seq.desc()).limit(20)))
        return "fleet_cabinet.html", {
            "title": f"Cabinet {cid}", "cab": cab, "stock": stock, "alarms": alarms,
            "sales": [{"day": d, "sessions": n, "total": money(t, cur)} for d, cur, n, t in days],
            "reviews": reviews, "recent": recent, "missing": max(0, cab.last_seq - cab.messages)}

    def review(self, request: Request, login: Any):
        db = self._db()
        if db is None:
            return "fleet_review.html", {"title": "Fleet review queue", "rows": None,
                                         "error": NO_FLEET}
        with db() as s:
            rows = s.execute(
                select(FleetReview, FleetReceipt.total, FleetReceipt.currency)
                .outerjoin(FleetReceipt, and_(FleetReceipt.cabinet_id == FleetReview.cabinet_id,
                                              FleetReceipt.session_id == FleetReview.session_id))
                .where(FleetReview.flagged.is_(True), FleetReview.resolved_at.is_(None))
                .order_by(FleetReview.at, FleetReview.cabinet_id).limit(500)).all()
        return "fleet_review.html", {
            "title": "Fleet review queue",
            "rows": [{"r": r, "total": money(t, cur) if cur else ""} for r, t, cur in rows]}


def routes(console: Any) -> list[Route]:
    p = FleetPages(console)
    return [Route("/fleet", console.page(p.overview), name="fleet"),
            Route("/fleet/review", console.page(p.review), name="fleet_review"),
            Route("/fleet/cabinets/{cabinet}", console.page(p.cabinet), name="fleet_cabinet")]
