"""QR entry: short-lived codes this cabinet signs, used once, and the phone app's tokens.

Two ways in, one code format (docs/identity.md#qr-entry):

- the kiosk shows a *kiosk code* (no account in it); the customer's phone app scans it and
  POSTs it with the account's app token to the controller (POST /api/qr/claim, cabinet/web.py);
- the app shows an *entry code* it fetched with its app token (POST /api/qr/entry-code), bound
  to the account; the face camera reads it (OpenCV's QRCodeDetector, `read_qr`).

A code is `CQR1.<body>.<signature>`: the body is base64url JSON {"k": kind, "c": cabinet id,
"n": 16-byte random nonce, "e": expiry (UTC epoch seconds), "a": account id or null}, the
signature HMAC-SHA256 over `CQR1.<body>` with this cabinet's 32-byte key (a key file in the
cabinet's data_dir, `qr.key`, made on first use with mode 0600, or the file `CABINET_QR_KEY_FILE`
names). Only this cabinet makes and checks its codes, so a shared-secret MAC is enough; the key
never leaves the cabinet and is not the key that seals templates and payment tokens.

`QrSigner.verify` names what is wrong (`QrRefused.field`, an HTTP status): a malformed code or a
field missing 400, another cabinet's code 400, a bad signature 400, expired 410. Single use is
the database's job: `UsedCodes.consume` inserts the nonce (primary key), so a replay, from this
process or another, after a restart too, is a 409 that says when the code was used.

App tokens: one per account (`cabinet accounts app-token ID` prints it once; a new one replaces
the old). Only a SHA-256 of the token is stored: the token is 256 random bits, so a slow KDF
adds nothing, and a lookup by hash finds the account without trying every row.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import ForeignKey, Integer, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from billing.base import Base, UTCDateTime, utcnow
from billing.crypto import SecretError, read_key_bytes
from billing.models import Account
from cabinet.errors import CabinetError

PREFIX = "CQR1"
KIOSK, ENTRY = "kiosk", "entry"
KINDS = (KIOSK, ENTRY)
DEFAULT_TTL_S = 60
MAX_CODE_CHARS = 600
NONCE_BYTES = 16
KEY_BYTES = 32
TOKEN_PREFIX = "cat1_"
KEY_FILE_ENV = "CABINET_QR_KEY_FILE"
KEEP_USED_S = 86400          # used nonces are kept a day past their expiry, then pruned


class QrRefused(CabinetError):
    """A code or token the cabinet refuses: `status` (HTTP), `field` (what is wrong)."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field = status, field

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclasses.dataclass(frozen=True)
class QrClaim:
    """What a verified code says."""

    kind: str
    cabinet_id: str
    nonce: str
    expires_at: int               # UTC epoch seconds
    account_id: int | None        # entry codes: the account; kiosk codes: None


class UsedCode(Base):
    __tablename__ = "qr_codes_used"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))        # claimed | withdrawn
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppToken(Base):
    __tablename__ = "app_tokens"

    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the key ----------------------------------------------------------------------------------
def load_key(path: str | Path) -> bytes:
    """The QR key of a key file: 32 raw bytes or 64 hex digits (billing.crypto's format)."""
    path = Path(path).expanduser()
    try:
        return read_key_bytes(path, what="QR key file", missing_hint=(
            f"make one with `cabinet accounts keygen {path}`, or leave {KEY_FILE_ENV} unset "
            f"for data_dir/qr.key"))
    except SecretError as e:
        raise CabinetError(str(e)) from None


def key_for_cabinet(data_dir: str | Path, environ: dict[str, str] | None = None) -> bytes:
    """The cabinet's QR key: `CABINET_QR_KEY_FILE`, else data_dir/qr.key (made on first use)."""
    env = os.environ if environ is None else environ
    named = env.get(KEY_FILE_ENV)
    if named:
        return load_key(named)
    from billing.crypto import SecretError, write_key_file
    path = Path(data_dir) / "qr.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_key_file(path)
        except SecretError as e:
            if not path.exists():        # not another process making it at the same moment
                raise CabinetError(str(e).replace("key file", "QR key file")) from None
    return load_key(path)


# --- signing and checking ---------------------------------------------------------------------
class QrSigner:
    """Makes and checks this cabinet's codes; time from `now` (epoch seconds, a Clock's time)."""

    def __init__(self, key: bytes, cabinet_id: str, *, now: Callable[[], float],
                 ttl_s: int = DEFAULT_TTL_S):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise CabinetError(f"QR signer: the key is {KEY_BYTES} bytes (key_for_cabinet)")
        if not isinstance(cabinet_id, str) or not cabinet_id:
            raise CabinetError("QR signer: the cabinet id is empty")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= 3600:
            raise CabinetError(f"QR signer: ttl_s {ttl_s!r} must be 1..3600 seconds")
        self._key = bytes(key)
        self.cabinet_id = cabinet_id
        self.ttl_s = ttl_s
        self.now = now                  # epoch seconds (a Clock's time)

    def __repr__(self) -> str:   # never the key
        return f"QrSigner({self.cabinet_id!r}, ttl_s={self.ttl_s})"

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest()

    def issue(self, kind: str, account_id: int | None = None) -> tuple[str, QrClaim]:
        """A new code of `kind` (an entry code names its account) and what it says."""
        if kind not in KINDS:
            raise CabinetError(f"QR issue: kind {kind!r} is one of {', '.join(KINDS)}")
        if (kind == ENTRY) != (account_id is not None):
            raise CabinetError("QR issue: an entry code names its account, a kiosk code none")
        claim = QrClaim(kind, self.cabinet_id, _b64(secrets.token_bytes(NONCE_BYTES)),
                        int(self.now()) + self.ttl_s, account_id)
        body = _b64(json.dumps({"k": claim.kind, "c": claim.cabinet_id, "n": claim.nonce,
                                "e": claim.expires_at, "a": claim.account_id},
                               separators=(",", ":")).encode("utf-8"))
        signed = f"{PREFIX}.{body}"
        return f"{signed}.{_b64(self._mac(signed))}", claim

    def verify(self, code: Any, *, kind: str) -> QrClaim:
        """What `code` says, once its form, cabinet, signature and expiry are checked."""
        if not isinstance(code, str) or not code.strip():
            raise QrRefused(400, "code", "code: missing; send the text of the scanned QR code")
        code = code.strip()
        if len(code) > MAX_CODE_CHARS:
            raise QrRefused(400, "code", f"code: {len(code)} characters, more than any cabinet "
                                         f"code ({MAX_CODE_CHARS}); scan the cabinet's code")
        parts = code.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise QrRefused(400, "code", f"code: not a cabinet QR code (expected "
                                         f"{PREFIX}.<body>.<signature>)")
        try:
            fields = json.loads(_unb64(parts[1]).decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise QrRefused(400, "code.body", "code.body: not base64url JSON; the code was "
                                              "cut or altered, scan it again") from None
        if not isinstance(fields, dict):
            raise QrRefused(400, "code.body", "code.body: not a JSON object")
        claim = _claim_of(fields)
        if claim.kind != kind:
            raise QrRefused(400, "code.kind", f"code.kind: a {claim.kind} code where a {kind} "
                                              f"code is needed ({_WHERE[kind]})")
        if claim.cabinet_id != self.cabinet_id:
            raise QrRefused(400, "code.cabinet", f"code.cabinet: made for cabinet "
                                                 f"{claim.cabinet_id!r}, this is "
                                                 f"{self.cabinet_id!r}; scan this cabinet's code")
        try:
            signature = _unb64(parts[2])
        except (binascii.Error, ValueError):
            signature = b""
        if not hmac.compare_digest(signature, self._mac(f"{PREFIX}.{parts[1]}")):
            raise QrRefused(400, "code.signature", "code.signature: does not match; the code "
                                                   "was altered or not made by this cabinet")
        if self.now() >= claim.expires_at:
            raise QrRefused(410, "code.expires", f"code.expires: the code expired "
                                                 f"{int(self.now()) - claim.expires_at} s ago; "
                                                 f"ask for a new one")
        return claim


_WHERE = {KIOSK: "the phone app sends the code the kiosk shows",
          ENTRY: "the face camera reads the code the phone app shows"}


def _claim_of(fields: dict) -> QrClaim:
    def need(key: str, name: str, types: tuple[type, ...], nullable: bool = False):
        value = fields.get(key)
        if value is None and nullable:
            return None
        if key not in fields or isinstance(value, bool) or not isinstance(value, types):
            raise QrRefused(400, f"code.{name}", f"code.{name}: missing or of the wrong type")
        return value
    kind = need("k", "kind", (str,))
    if kind not in KINDS:
        raise QrRefused(400, "code.kind", f"code.kind: {kind!r} is not one of {', '.join(KINDS)}")
    cabinet = need("c", "cabinet", (str,))
    nonce = need("n", "nonce", (str,))
    if not 16 <= len(nonce) <= 32:
        raise QrRefused(400, "code.nonce", "code.nonce: not a nonce this cabinet makes")
    expires = need("e", "expires", (int,))
    account = need("a", "account", (int,), nullable=True)
    if (kind == ENTRY) != (account is not None):
        raise QrRefused(400, "code.account", "code.account: an entry code names its account, "
                                             "a kiosk code none")
    return QrClaim(kind, cabinet, nonce, expires, account)


# --- single use ---------------------------------------------------------------------------------
class UsedCodes:
    """The nonces of codes used (or withdrawn from the screen), in the cabinet's database."""

    def __init__(self, sessions: Callable[[], Session], *, now: Callable[[], float]):
        self._sessions = sessions
        self._now = now

    def _at(self, epoch: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)

    def consume(self, claim: QrClaim, *, outcome: str = "claimed",
                account_id: int | None = None) -> None:
        """Mark the code used; QrRefused(409) when it was used or withdrawn before."""
        now = self._at(self._now())
        try:
            with self._sessions() as db, db.begin():
                db.execute(delete(UsedCode).where(
                    UsedCode.expires_at < now - dt.timedelta(seconds=KEEP_USED_S)))
                db.add(UsedCode(nonce=claim.nonce, kind=claim.kind, outcome=outcome,
                                account_id=account_id if account_id is not None
                                else claim.account_id,
                                expires_at=self._at(claim.expires_at), used_at=now))
        except IntegrityError:
            with self._sessions() as db:
                row = db.get(UsedCode, claim.nonce)
            when = "before" if row is None else f"at {row.used_at:%H:%M:%S} UTC"
            what = "withdrawn from the screen" if row is not None and \
                row.outcome == "withdrawn" else "already used"
            raise QrRefused(409, "code", f"code: {what} {when}; a code opens the door once, "
                                         f"ask for a new one") from None

    def used(self, nonce: str) -> bool:
        with self._sessions() as db:
            return db.get(UsedCode, nonce) is not None


# --- the phone app's tokens ---------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AppTokens:
    """One app token per account, stored as its SHA-256 only."""

    def __init__(self, sessions: Callable[[], Session]):
        self._sessions = sessions

    def issue(self, account_id: int) -> str:
        """A new token for the account (the old one stops working); shown once, never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._sessions() as db, db.begin():
            if db.get(Account, account_id) is None:
                raise CabinetError(f"app-token: no account {account_id} (see `cabinet "
                                   f"accounts list`)")
            row = db.get(AppToken, account_id)
            if row is None:
                db.add(AppToken(account_id=account_id, token_hash=_token_hash(token),
                                issued_at=utcnow()))
            else:
                row.token_hash, row.issued_at = _token_hash(token), utcnow()
        return token

    def account_for(self, token: Any) -> int:
        """The account a token belongs to; QrRefused 400 (malformed) or 401 (unknown)."""
        if not isinstance(token, str) or not token:
            raise QrRefused(400, "app_token", "app_token: missing; send the account's app "
                                              "token (cabinet accounts app-token ID)")
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            raise QrRefused(400, "app_token", f"app_token: not an app token (they start "
                                              f"{TOKEN_PREFIX!r})")
        with self._sessions() as db:
            account_id = db.scalar(select(AppToken.account_id)
                                   .where(AppToken.token_hash == _token_hash(token)))
        if account_id is None:
            raise QrRefused(401, "app_token", "app_token: unknown or replaced; sign in to the "
                                              "app again for a new one")
        return int(account_id)

    def revoke(self, account_id: int) -> bool:
        """Remove the account's token (erasure); whether there was one."""
        with self._sessions() as db, db.begin():
            return db.execute(delete(AppToken).where(AppToken.account_id == account_id)
                              ).rowcount > 0


# --- the face camera ----------------------------------------------------------------------------
def read_qr(frame) -> str | None:
    """The text of a cabinet QR code in a BGR frame, else None. OpenCV's classic detector,
    then its ArUco-based one: the classic one alone failed to decode 21 of 300 clean renders of
    codes of our length (196 characters, error level M), the ArUco one none of them."""
    import cv2
    if frame is None:
        return None
    for detector in (cv2.QRCodeDetector, cv2.QRCodeDetectorAruco):
        try:
            text, points, _ = detector().detectAndDecode(frame)
        except cv2.error:
            continue
        if points is not None and text and text.startswith(PREFIX + "."):
            return text
    return None


class QrEntry:
    """What the runner needs for QR entry: the signer, the used codes, the app tokens."""

    def __init__(self, sessions: Callable[[], Session], key: bytes, cabinet_id: str, *,
                 now: Callable[[], float], ttl_s: int = DEFAULT_TTL_S):
        self.signer = QrSigner(key, cabinet_id, now=now, ttl_s=ttl_s)
        self.used = UsedCodes(sessions, now=now)
        self.tokens = AppTokens(sessions)


# --- the runner's side ------------------------------------------------------------------------
_REFUSAL_CODE = {409: "qr_used", 410: "qr_expired"}      # kiosk codes; anything else qr_invalid


class QrDoor:
    """QR entry in `cabinet run` (cabinet/runner.py), on the runner's event loop:

    - the kiosk's "Use a QR code instead" shows a kiosk code (`show_kiosk_code`) until it is
      claimed, cancelled (withdrawn: a later claim is a 409) or expired (the kiosk says so);
    - `claim(code, app_token)`: the phone app's POST; the answer waits for the door: 200
      unlocked, 403 refused with the standing's reason, or the code's own 400/401/409/410;
    - `entry_code(app_token)`: the code the app shows to the face camera; `at_camera(frame)`
      reads one and starts the session (a code still held up is not read twice).
    A session a code starts is the controller's `session_for_account`: the same standing
    check, hold, unlock, reconcile and charge as a face.
    """

    def __init__(self, runner: Any, entry: QrEntry, *, admission_timeout_s: float = 30.0):
        self.runner = runner
        self.entry = entry
        self.admission_timeout_s = admission_timeout_s
        self.shown: tuple[str, QrClaim] | None = None    # the kiosk code on the screen
        self.pending: tuple[int, str, Callable[[str, str, str], None]] | None = None
        self.last_seen: str | None = None                # the camera's code still in view
        self.refusals: list[tuple[int, str]] = []        # (status, message), newest last

    # -- the kiosk's code ----------------------------------------------------------------
    def show_kiosk_code(self) -> None:
        from cabinet.kiosk.state import QrCode
        code, claim = self.entry.signer.issue(KIOSK)
        self.shown = (code, claim)
        self.runner.kiosk.publish(QrCode(code, self.entry.signer.ttl_s))

    def withdraw(self) -> bool:
        """The customer cancelled on the QR screen: the code on show can no longer be used."""
        shown, self.shown = self.shown, None
        if shown is None:
            return False
        try:
            self.entry.used.consume(shown[1], outcome="withdrawn")
        except QrRefused:
            pass                      # claimed at that very moment: the claim won
        return True

    def check_expiry(self) -> None:
        """The kiosk code's time is up: the kiosk says so (and welcomes the next customer
        after the runner's screen_hold_s)."""
        from cabinet.kiosk.state import Refused
        shown = self.shown
        if shown is not None and self.entry.signer.now() >= shown[1].expires_at:
            self.shown = None
            self.runner.kiosk.publish(Refused("qr_expired"))
            self.runner._last_shown_at = self.runner.clock.monotonic()

    # -- the phone app's requests --------------------------------------------------------
    def busy(self) -> str:
        """Why no session can start now ("" when one can)."""
        r = self.runner
        if r._in_session or r._start_requested or self.pending is not None:
            return "a session is already running: one customer at a time"
        active = r.alarms.active()
        if active or r.controller.machine.state != "idle":
            return f"out of service ({', '.join(active) or r.controller.machine.state})"
        return ""

    async def claim(self, code: Any, app_token: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for a kiosk code and an app token."""
        try:
            claim = self.entry.signer.verify(code, kind=KIOSK)
            account_id = self.entry.tokens.account_for(app_token)
        except QrRefused as e:
            return e.status, e.body()
        refusal = self.busy()
        if refusal:
            return 409, {"error": refusal, "field": None}
        try:
            self.entry.used.consume(claim, account_id=account_id)
        except QrRefused as e:
            return e.status, e.body()
        if self.shown is not None and self.shown[1].nonce == claim.nonce:
            self.shown = None
        return await self._start(account_id, "qr_kiosk")

    def entry_code(self, app_token: Any) -> tuple[int, dict[str, Any]]:
        try:
            account_id = self.entry.tokens.account_for(app_token)
        except QrRefused as e:
            return e.status, e.body()
        code, claim = self.entry.signer.issue(ENTRY, account_id)
        return 201, {"code": code, "expires_in_s": self.entry.signer.ttl_s,
                     "expires_at": claim.expires_at}

    async def _start(self, account_id: int, how: str) -> tuple[int, dict[str, Any]]:
        import asyncio
        loop = asyncio.get_running_loop()
        told: asyncio.Future = loop.create_future()

        def tell(outcome: str, reason: str, code: str) -> None:
            if not told.done():
                told.set_result((outcome, reason, code))
        self.pending = (account_id, how, tell)
        self.runner._poke()
        try:
            outcome, reason, code = await self.runner.clock.wait_for(
                asyncio.shield(told), self.admission_timeout_s)
        except asyncio.TimeoutError:
            return 202, {"status": "pending", "error": "the session started; the door's answer "
                                                      "did not come in time, see the kiosk"}
        if outcome == "unlocked":
            return 200, {"status": "unlocked"}
        if outcome == "refused":
            return 403, {"status": "refused", "reason": code, "error": reason}
        return 503, {"status": outcome, "error": reason or "the lock did not release"}

    async def run_pending(self) -> bool:
        """Start the session a code asked for (the runner's loop, when idle); False: none."""
        pending, self.pending = self.pending, None
        if pending is None:
            return False
        account_id, how, tell = pending
        try:
            await self.runner._session(None, account_id=account_id, entry=how, on_admission=tell)
        finally:
            tell("refused", "the session could not start (out of service)", "")
        return True

    def drop_pending(self, why: str) -> None:
        """The cabinet went out of service before a claimed session could start."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending[2]("refused", why, "")

    # -- the face camera -----------------------------------------------------------------
    async def at_camera(self, frame) -> bool:
        """An entry code in the face camera's frame: True when the frame was one (a session
        asked for, or refused on the kiosk), False to look for a face in it."""
        text = None if frame is None else \
            await self.runner.controller._blocking(read_qr, frame)
        if text is None:
            self.last_seen = None
            return False
        if text == self.last_seen:
            return True                    # still held up: handled when it came
        self.last_seen = text
        try:
            claim = self.entry.signer.verify(text, kind=ENTRY)
            if self.busy():
                self.last_seen = None      # read it again once the cabinet is free
                return True
            self.entry.used.consume(claim)
        except QrRefused as e:
            self._refuse(e)
            return True
        self.pending = (int(claim.account_id), "qr_camera", lambda *told: None)
        return True

    def _refuse(self, error: QrRefused) -> None:
        from cabinet.kiosk.state import Refused
        import logging
        logging.getLogger("cabinet.qr").warning("QR code at the camera refused: %s", error)
        self.refusals.append((error.status, str(error)))
        self.runner.kiosk.publish(Refused(_REFUSAL_CODE.get(error.status, "qr_invalid")))
        self.runner._last_shown_at = self.runner.clock.monotonic()
