"""The fleet agent of a started App, built from its `fleet:` configuration.

`cabinet run` (cabinet/runner.py) calls `App.new_fleet_agent(...)` with its hooks: the health
report, a way to run a callable between customer sessions, the board's reboot and the face
gallery's reload. The agent reads and writes the cabinet's own database (outbox, applied ids)
and acts through the paths the operators' commands use (cabinet/fleet/actions.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from cabinet.errors import CabinetError
from cabinet.fleet import messages as m
from cabinet.fleet.actions import CabinetActions
from cabinet.fleet.agent import AgentSettings, BrokerSettings, FleetAgent
from cabinet.fleet.down import DownHandler
from cabinet.fleet.outbox import FleetOutbox


def _read(cfg: Any, key: str, path: str, what: str) -> bytes:
    file = cfg.resolve(path)
    try:
        return file.read_bytes()
    except OSError as e:
        raise CabinetError(f"{cfg.source}: fleet.{key} = {path!r}: cannot read {what} "
                           f"{file} ({e.strerror})") from None


def settings_for(cfg: Any, cabinet_id: str) -> tuple[AgentSettings, Any]:
    """(agent settings, the back office's public key) from a Config with a fleet section."""
    f = cfg.fleet
    key = m.load_public_key(_read(cfg, "public_key", f.public_key, "the public key"),
                            f"{cfg.source}: fleet.public_key = {f.public_key!r}")
    password = None
    if f.password_file is not None:
        password = _read(cfg, "password_file", f.password_file, "the password").decode(
            "utf-8").strip()
    resolve = (lambda p: None if p is None else str(cfg.resolve(p)))
    broker = BrokerSettings(host=f.host, port=f.port, tls=f.tls, ca_file=resolve(f.tls_ca_file),
                            cert_file=resolve(f.tls_cert_file),
                            key_file=resolve(f.tls_key_file), username=f.username,
                            password=password, keepalive_s=f.keepalive_s)
    settings = AgentSettings(cabinet_id=cabinet_id, broker=broker, region=f.region,
                             session_expiry_s=f.session_expiry_s,
                             collect_every_s=f.collect_every_s, health_every_s=f.health_every_s,
                             reconnect_first_s=f.reconnect_first_s,
                             reconnect_max_s=f.reconnect_max_s, max_inflight=f.max_inflight)
    return settings, key


def agent_for(app: Any, *, health: Callable[[], dict[str, Any]],
              between: Callable[[Callable[[], Any]], Any] | None = None,
              reboot_mcu: Callable[[], Any] | None = None,
              reload_faces: Callable[[], None] | None = None) -> FleetAgent | None:
    """The agent (not started), or None when the configuration has no fleet section."""
    if app.config.fleet is None:
        return None
    from cabinet import inforce
    from cabinet.journal import Alarms
    from cabinet.planogram_ops import Operations
    cabinet_id = app.controller.cabinet_id
    settings, key = settings_for(app.config, cabinet_id)

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(app.clock.time(), dt.timezone.utc)

    extra = {} if between is None else {"between": between}
    actions = CabinetActions(db=app.db, billing=app.billing,
                             operations=Operations(inforce.for_config(app.config),
                                                   lambda: app.db),
                             alarms=Alarms(app.db), incoming_dir=app.data_path / "fleet",
                             now=now, reboot_mcu=reboot_mcu, reload_faces=reload_faces, **extra)
    return FleetAgent(settings, FleetOutbox(app.db, cabinet_id, now,
                                            par=lambda: pars_of(app.planogram)),
                      DownHandler(app.db, key, actions, now=now), clock=app.clock,
                      health=lambda: with_stock(health(), app.inventory))


def pars_of(planogram: Any) -> dict[str, int]:
    """slot -> par of the planogram in force (each inventory message carries its slot's)."""
    return {slot.id: slot.par for slot in planogram.slots}


def with_stock(report: dict[str, Any], inventory: Any) -> dict[str, Any]:
    """The runner's health report and the slots below their par level (the fleet view's
    "stock below par"), each {slot, sku, on_hand, par}."""
    low = [{"slot": s.slot, "sku": s.sku, "on_hand": s.on_hand, "par": s.par}
           for s in inventory.report() if s.low]
    return {**report, "below_par": low}
