"""Customer enrolment and erasure: an account in billing plus sealed face templates.

`enroll` encodes every photo first (each must hold exactly one face, else a FaceError names the
file) and only then asks billing to open the account and store the templates, so a bad photo
changes nothing; billing applies its own rules to the name, token and currency. Templates are
sealed with the cabinet's key (billing/crypto.py) and record only that they came from a photo:
never the photo, never its file name.
`load_gallery` builds the in-memory face gallery from the stored templates, opening each.
`erase` removes an account's face data and payment token; its sessions and ledger stay.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from billing.base import utcnow
from billing.crypto import SecretBox, key_for_database
from billing.errors import UnknownAccount
from billing.models import Account, FaceTemplate
from billing.service import Billing
from vision.faces import FaceGallery, encoding_from_bytes, encoding_to_bytes, enrol_encodings


@dataclasses.dataclass(frozen=True)
class Erased:
    account_id: int
    templates: int            # face templates deleted
    token: bool               # whether a payment token was removed
    # False only on SQLite when another connection kept the WAL from being checkpointed:
    # the rows are gone, but old pages may linger in the WAL until the next checkpoint.
    wiped: bool = True


def enroll(billing: Billing, gallery: FaceGallery | None, name: str, photos: Sequence[Path], *,
           payment_token: str, currency: str,
           encode: Callable[[Sequence[Path]], list[np.ndarray]] = enrol_encodings) -> Account:
    """Enrol a customer; with a running cabinet's gallery, it knows the face at once.

    `encode` turns the photos into one face encoding each (tests pass a cached one, so many
    simulated cabinets do not encode the same photos again)."""
    encodings = encode(photos)                    # raises FaceError before anything is written
    account = billing.open_account(name, payment_token, currency)
    for enc in encodings:
        billing.enrol_face(account.id, encoding_to_bytes(enc), "photo")
        if gallery is not None:
            gallery.add(str(account.id), enc)
    return account


def enroll_offline(db: sessionmaker, name: str, photos: Sequence[Path], *,
                   payment_token: str = "tok_visa_ok", currency: str = "EUR",
                   secrets: SecretBox | None = None) -> Account:
    """`cabinet accounts enroll`: enrolment into a database, no cabinet running. Enrolment
    makes no payment call, so billing needs no gateway here."""
    billing = Billing(db, gateway=None, currency=currency, secrets=secrets)
    return enroll(billing, None, name, photos, payment_token=payment_token, currency=currency)


def _secrets_of(db: sessionmaker, secrets: SecretBox | None) -> SecretBox:
    if secrets is not None:
        return secrets
    return key_for_database(db.kw["bind"].url.render_as_string(hide_password=False))


def load_gallery(db: sessionmaker, threshold: float | None = None, *,
                 secrets: SecretBox | None = None) -> FaceGallery:
    gallery = FaceGallery() if threshold is None else FaceGallery(threshold)
    with db() as s:
        rows = s.execute(select(FaceTemplate.account_id, FaceTemplate.encoding)
                         .join(Account).where(Account.status == "active")
                         .order_by(FaceTemplate.id)).all()
    if rows:
        box = _secrets_of(db, secrets)
        for account_id, sealed in rows:
            blob = box.open(sealed, account_id=account_id, purpose="face_template")
            gallery.add(str(account_id), encoding_from_bytes(blob))
    return gallery


def erase(db: sessionmaker, account_id: int, *, gallery: FaceGallery | None = None,
          now: Callable[[], object] = utcnow) -> Erased:
    """`cabinet accounts erase ID`: delete every face template of the account and its payment
    token. The account row, its sessions and its ledger stay (money records are kept); with no
    payment method it can no longer shop. On SQLite the freed pages are zeroed
    (secure_delete) and the WAL checkpointed, so the bytes leave the file."""
    with db.begin() as s:
        account = s.get(Account, account_id) if isinstance(account_id, int) else None
        if account is None:
            raise UnknownAccount(account_id)
        conn = s.connection()
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
        templates = s.execute(delete(FaceTemplate)
                              .where(FaceTemplate.account_id == account_id)).rowcount
        from cabinet.qr import AppToken      # the phone app's token for QR entry goes too
        s.execute(delete(AppToken).where(AppToken.account_id == account_id))
        had_token = account.payment_token is not None
        account.payment_token, account.faces_erased_at = None, now()
    engine, wiped = db.kw["bind"], True
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            wiped = busy == 0
    if gallery is not None:
        gallery.remove(str(account_id))
    return Erased(account_id, templates, had_token, wiped)


def name_of(db: sessionmaker, account_id: int | str | None) -> str | None:
    if account_id is None:
        return None
    with db() as s:
        account = s.get(Account, int(account_id))
        return account.name if account else None


def list_accounts(db: sessionmaker) -> list[dict]:
    with db() as s:
        counts = dict(s.execute(select(FaceTemplate.account_id, func.count())
                                .group_by(FaceTemplate.account_id)).all())
        return [{"id": a.id, "name": a.name, "status": a.status, "currency": a.currency,
                 "templates": counts.get(a.id, 0)}
                for a in s.scalars(select(Account).order_by(Account.id))]
