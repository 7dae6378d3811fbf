"""What a verified down message does on the cabinet, through the paths that already exist.

- standing: `Billing.block / unblock / close_account`;
- faces: the region's templates, sealed by the back office with the cabinet's key exactly as
  the cabinet seals its own (billing/crypto.py: AES-GCM, associated data naming the account and
  the purpose). Each must open here for its account, or nothing changes; they are stored as
  received (no plaintext touches the disk), replacing the account's templates, and the face
  gallery is rebuilt. An account the cabinet has not seen is created with the back office's id;
- planogram, prices: `Operations.apply` (cabinet/planogram_ops.py), which validates and refuses
  while a session is open or the cabinet is not idle; prices become a new catalog, the one in
  force with those prices. Like an operator's apply, it takes effect at the next start;
- commands: `out_of_service` raises the alarm `remote_out_of_service` (cabinet_alarms, so it
  survives a restart, and the runner keeps the cabinet out of service while any alarm is
  active), `back_in_service` clears that alarm only (a hardware alarm stays), `reboot_mcu`
  reboots the board between sessions.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from sqlalchemy import delete
from sqlalchemy.orm import sessionmaker

from billing.crypto import SecretError
from billing.errors import BillingError
from billing.models import Account, FaceTemplate
from cabinet.fleet.down import ActionRefused
from cabinet.journal import Alarms, Journal

REMOTE_OUT_OF_SERVICE = "remote_out_of_service"
T = TypeVar("T")


def _direct(fn: Callable[[], T]) -> T:
    return fn()


class CabinetActions:
    def __init__(self, *, db: sessionmaker, billing: Any, operations: Any, alarms: Alarms,
                 incoming_dir: Path, now: Callable[[], dt.datetime],
                 reboot_mcu: Callable[[], Any] | None = None,
                 reload_faces: Callable[[], None] | None = None,
                 between: Callable[[Callable[[], T]], T] = _direct):
        self._db = db
        self._billing = billing
        self._ops = operations
        self._alarms = alarms
        self._incoming = incoming_dir
        self._now = now
        self._reboot = reboot_mcu
        self._reload_faces = reload_faces
        self._between = between     # runs a callable between customer sessions (the runner)

    # --- standing ------------------------------------------------------------------------
    def standing(self, body: dict[str, Any]) -> str:
        account, action = body["account_id"], body["action"]
        try:
            if action == "block":
                self._billing.block(account, body["reason"])
            elif action == "unblock":
                self._billing.unblock(account)
            else:
                self._billing.close_account(account)
        except BillingError as e:
            raise ActionRefused(f"standing {action} account {account}: {e}") from None
        if self._reload_faces is not None:      # the gallery holds active accounts only
            self._reload_faces()
        return f"account {account}: {action}" + (f" ({body['reason']})" if "reason" in body
                                                 else "")

    # --- faces ---------------------------------------------------------------------------
    def faces(self, body: dict[str, Any]) -> str:
        account = body["account_id"]
        sealed = [base64.b64decode(t) for t in body["templates"]]
        box = self._billing.secrets
        for i, blob in enumerate(sealed):
            try:
                box.open(blob, account_id=account, purpose="face_template")
            except SecretError as e:
                raise ActionRefused(f"faces account {account}: template {i} does not open "
                                    f"with this cabinet's key ({e}); seal it for this account "
                                    f"with the region's key") from None
        now = self._now()
        with self._db.begin() as s:
            row = s.get(Account, account)
            created = row is None
            if created:
                s.add(Account(id=account, name=body["name"],
                              currency=body.get("currency", self._billing.currency),
                              status="active", created_at=now))
                s.flush()
            s.execute(delete(FaceTemplate).where(FaceTemplate.account_id == account))
            for blob in sealed:
                s.add(FaceTemplate(account_id=account, encoding=blob, source="photo",
                                   created_at=now))
        if self._reload_faces is not None:
            self._reload_faces()
        return (f"account {account}{' (new)' if created else ''}: {len(sealed)} face "
                f"template(s) in force")

    # --- planogram and prices ------------------------------------------------------------
    def _apply(self, kind: str, data: bytes, tag: str) -> str:
        self._incoming.mkdir(parents=True, exist_ok=True)
        path = self._incoming / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', tag)[:80]}-{kind}.yaml"
        path.write_bytes(data)
        try:
            changes = self._ops.apply(kind, path)   # FormatErrors, Refused: CabinetErrors
        finally:
            path.unlink(missing_ok=True)
        return f"{kind} in force ({len(changes)} change(s)); it takes effect at the next start"

    def planogram(self, body: dict[str, Any]) -> str:
        return self._apply("planogram", body["planogram"].encode("utf-8"), "fleet")

    def prices(self, body: dict[str, Any]) -> str:
        doc = yaml.safe_load(self._ops.store.read("catalog"))
        products = {p.get("sku"): p for p in doc.get("products", []) if isinstance(p, dict)}
        unknown = sorted(set(body["prices"]) - set(products))
        if unknown:
            raise ActionRefused(f"prices: SKU(s) {', '.join(unknown)} are not in the catalog "
                                f"in force; nothing changed")
        for sku, price in body["prices"].items():
            products[sku]["price"] = price
        data = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")
        return self._apply("catalog", data, "fleet-prices")

    # --- commands ------------------------------------------------------------------------
    def command(self, body: dict[str, Any]) -> str:
        command, reason = body["command"], body.get("reason") or "by the fleet back office"
        if command == "out_of_service":
            raised = self._alarms.raise_(REMOTE_OUT_OF_SERVICE, reason)
            return "out of service" + ("" if raised else " (already)")
        if command == "back_in_service":
            cleared = self._alarms.clear(REMOTE_OUT_OF_SERVICE, f"fleet: {reason}"[:64])
            left = [a for a in self._alarms.active() if a != REMOTE_OUT_OF_SERVICE]
            return (("back in service" if cleared else "was not out of service by the fleet")
                    + (f"; still out of service for {', '.join(left)}" if left else ""))
        if self._reboot is None:
            raise ActionRefused("reboot_mcu: this cabinet has no board to reboot")
        return self._between(self._reboot_now)

    def _reboot_now(self) -> str:
        open_sessions = Journal(self._db).open_sessions()
        if open_sessions:
            sid, state = open_sessions[0]
            raise ActionRefused(f"reboot_mcu refused: session {sid} is open ({state}); send "
                                f"it again once the session has ended")
        try:
            self._reboot()
        except Exception as e:      # the board's own errors (firmware_bridge.errors)
            raise ActionRefused(f"reboot_mcu failed: {type(e).__name__}: {e}; the link's "
                                f"alarms say when the board is back") from None
        return "board rebooted"
