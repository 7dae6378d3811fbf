"""`cabinet bench fleet`: simulated cabinets -> Mosquitto -> `cabinet fleet serve` -> PostgreSQL.

Everything on the path is real: N simulated cabinets (sim_fleet.py, one paho client and MQTT
session each) publish facts at QoS 1 through the broker to `--instances` back-office processes
(`python -m cabinet.fleet.serve serve`, a shared-subscription group of their own) that store
them in a fresh fleet database. Publisher threads pace the offered load (`--rate`, messages per
second over all cabinets); each fact's `at` is the moment it was made, its `stored_at` the
moment its batch was written, so `stored_at - at` is the end-to-end lag. A share of the facts
(`--duplicates`) is published a second time, as an outbox does after a crash.

Reported (`--json` keys): messages_per_s (messages / (last stored_at - first publish)),
lag_p50_ms, lag_p95_ms, lost (facts published and acknowledged by the broker but not in the
database), duplicated (facts applied more than once: applied counts minus distinct rows, plus
rows nobody published), and the run's shape (cabinets, messages, instances, rate).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, text

from cabinet.errors import CabinetError
from cabinet.fleet import messages
from cabinet.fleet.serve import end_session, parse_broker, slot_client_id
from cabinet.fleet.sim_fleet import SimCabinet, close_all, connect_all
from cabinet.fleet.store import FleetCabinet, FleetInstance, FleetMessage, open_fleet_db, utcnow
from firmware_bridge.clock import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("messages_per_s", "lag_p50_ms", "lag_p95_ms", "lost", "duplicated")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet bench fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--cabinets", type=int, default=200)
    p.add_argument("--messages", type=int, default=20000, help="facts to publish in all")
    p.add_argument("--rate", type=float, default=2500.0,
                   help="offered load, messages per second over all cabinets (0: flat out)")
    p.add_argument("--instances", type=int, default=2, help="back-office processes")
    p.add_argument("--publishers", type=int, default=4, help="publishing threads")
    p.add_argument("--duplicates", type=float, default=0.01,
                   help="share of facts published twice")
    p.add_argument("--batch", type=int, default=500, help="the back office's batch size")
    p.add_argument("--broker", help="mqtt://HOST:PORT (default: .cache/mqtt.url)")
    p.add_argument("--db", help="a PostgreSQL server URL; the bench makes and drops its own "
                                "database there (default: .cache/pg.url)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the last message to be stored")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    return p


def _default(arg: str | None, file: str, what: str) -> str:
    if arg:
        return arg
    path = ROOT / ".cache" / file
    if not path.is_file():
        raise CabinetError(f"bench fleet: no {what} given and {path} is missing; start one with "
                           f"`bash scripts/services.sh` or pass --{what}")
    return path.read_text().strip()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[k]


class _Database:
    """A fresh database on the server for this run, dropped at the end."""

    def __init__(self, server_url: str):
        from billing.db import make_engine
        self.admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
        self.name = f"fleet_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_engine(server_url).url.set(database=self.name).render_as_string(
            hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def run(*, cabinets: int, messages_total: int, rate: float, instances: int, publishers: int,
        duplicates: float, batch: int, broker_url: str, server_url: str,
        timeout_s: float) -> dict:
    for name, value, low in (("cabinets", cabinets, 1), ("messages", messages_total, 1),
                             ("instances", instances, 1), ("publishers", publishers, 1)):
        if value < low:
            raise CabinetError(f"bench fleet --{name} {value}: give {low} or more")
    if not 0 <= duplicates <= 1:
        raise CabinetError(f"bench fleet --duplicates {duplicates}: give a share from 0 to 1")
    broker = parse_broker(broker_url)
    db = _Database(server_url)
    group = f"bench{uuid.uuid4().hex[:8]}"
    prefix = f"b{uuid.uuid4().hex[:6]}"
    procs: list[subprocess.Popen] = []
    cabs: list[SimCabinet] = []
    engine, sessions = open_fleet_db(db.url)
    try:
        for k in range(instances):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cabinet.fleet.serve", "serve", "--db", db.url,
                 "--broker", broker_url, "--slot", f"s{k}", "--group", group,
                 "--batch", str(batch)], stdout=subprocess.DEVNULL, cwd=ROOT))
        _wait(lambda: _subscribed(sessions, group, instances, procs), timeout_s,
              "the back-office instances to subscribe")
        cabs = [SimCabinet(f"{prefix}-{i:04d}", seed=i, now=utcnow) for i in range(cabinets)]
        connect_all(cabs, broker)
        published, dups, started, publish_s = _publish(cabs, messages_total, rate, publishers,
                                                       duplicates)
        _wait(lambda: _count(sessions, prefix) >= len(published), timeout_s,
              f"{len(published)} messages in the database")
        return _measure(sessions, prefix, published, started) | {
            "cabinets": cabinets, "messages": len(published), "duplicates_sent": dups,
            "published_per_s": round(len(published) / publish_s, 1) if publish_s else 0.0,
            "instances": instances, "offered_rate": rate, "batch": batch}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for k in range(len(procs)):     # the slots' sessions would queue every later message
            end_session(broker, slot_client_id(group, f"s{k}"))
        close_all(cabs, forget=True)    # after the back office: its retained status cleared
        engine.dispose()
        db.drop()


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise CabinetError(f"bench fleet: timed out after {timeout_s:.0f} s waiting for "
                               f"{what}")
        SYSTEM.sleep(0.05)


def _subscribed(sessions, group: str, n: int, procs: list[subprocess.Popen]) -> bool:
    for p in procs:
        if p.poll() is not None:
            raise CabinetError(f"bench fleet: a back-office instance exited ({p.returncode}); "
                               f"run `cabinet fleet serve` by hand to see why")
    ids = [slot_client_id(group, f"s{k}") for k in range(n)]
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(FleetInstance).where(
            FleetInstance.client_id.in_(ids), FleetInstance.subscribed_at.is_not(None))) == n


def _count(sessions, prefix: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(FleetMessage)
                        .where(FleetMessage.cabinet_id.startswith(prefix + "-")))


def _publish(cabs: list[SimCabinet], total: int, rate: float, publishers: int,
             duplicates: float) -> tuple[set[str], int, float, float]:
    """Publishes `total` facts (sales: session, receipt, move; a restock first) round-robin over
    the cabinets, paced to `rate`; waits for every PUBACK.
    -> (ids, duplicates sent, start as epoch seconds, seconds until the last PUBACK)."""
    per_thread = [cabs[i::publishers] for i in range(publishers)]
    quota = [total // publishers + (1 if i < total % publishers else 0)
             for i in range(publishers)]
    ids: list[list[str]] = [[] for _ in range(publishers)]
    dup_counts = [0] * publishers
    started = time.monotonic()
    start_wall = time.time()

    def publisher(i: int) -> None:
        mine, want = per_thread[i], quota[i]
        if not mine or not want:
            return
        infos = []
        interval = publishers / rate if rate > 0 else 0.0
        n, turn = 0, 0
        every = int(1 / duplicates) if duplicates > 0 else 0
        while n < want:
            cab = mine[turn % len(mine)]
            turn += 1
            if not cab.expected.ids:
                cab.restock(10)
            else:
                cab.sale(take=1)
            batch = list(cab.outbox)[: want - n]
            cab.outbox.clear()
            for m in batch:
                due = started + n * interval
                if interval:
                    SYSTEM.sleep(due - time.monotonic())
                payload = messages.encode_up(m)
                infos.append(cab.client.publish(m.topic(), payload, qos=messages.QOS))
                ids[i].append(m.id)
                n += 1
                if every and n % every == 0:
                    infos.append(cab.client.publish(m.topic(), payload, qos=messages.QOS))
                    dup_counts[i] += 1
        for info in infos:
            info.wait_for_publish(60)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ({i for chunk in ids for i in chunk}, sum(dup_counts), start_wall,
            time.monotonic() - started)


def _measure(sessions, prefix: str, published_ids: set[str], started: float) -> dict:
    like = FleetMessage.cabinet_id.startswith(prefix + "-")
    with sessions() as s:
        rows = s.execute(select(FleetMessage.id, FleetMessage.at, FleetMessage.stored_at)
                         .where(like)).all()
        applied = s.scalar(select(func.coalesce(func.sum(FleetCabinet.messages), 0))
                           .where(FleetCabinet.cabinet_id.startswith(prefix + "-")))
    have = {r.id for r in rows}
    lags = [(r.stored_at - r.at).total_seconds() * 1000 for r in rows]
    last = max((r.stored_at for r in rows), default=None)
    elapsed = (last - dt.datetime.fromtimestamp(started, dt.timezone.utc)).total_seconds() \
        if last else 0.0
    return {"messages_per_s": round(len(rows) / elapsed, 1) if elapsed > 0 else 0.0,
            "lag_p50_ms": round(_percentile(lags, 0.50), 1),
            "lag_p95_ms": round(_percentile(lags, 0.95), 1),
            "lost": len(published_ids - have),
            "duplicated": int(applied - len(rows)) + len(have - published_ids),
            "elapsed_s": round(elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(cabinets=args.cabinets, messages_total=args.messages, rate=args.rate,
                 instances=args.instances, publishers=args.publishers,
                 duplicates=args.duplicates, batch=args.batch,
                 broker_url=_default(args.broker, "mqtt.url", "broker"),
                 server_url=_default(args.db, "pg.url", "db"), timeout_s=args.timeout)
    text_out = json.dumps(result)
    if args.out:
        args.out.write_text(text_out + "\n")
    if args.json:
        print(text_out)
    else:
        print(f"fleet: {result['cabinets']} cabinets, {result['messages']} messages "
              f"({result['duplicates_sent']} sent twice), {result['instances']} instance(s)\n"
              f"  {result['messages_per_s']:.0f} messages/s into PostgreSQL, lag p50 "
              f"{result['lag_p50_ms']:.0f} ms, p95 {result['lag_p95_ms']:.0f} ms\n"
              f"  lost {result['lost']}, duplicated {result['duplicated']}")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1
