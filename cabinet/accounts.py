"""Customer enrolment: an account in billing plus face templates (never the photos).

`enroll` encodes every photo first (each must hold exactly one face, else a FaceError names the
file) and only then writes the account and its templates in one transaction, so a bad photo
changes nothing. `load_gallery` builds the in-memory face gallery from the stored templates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from billing.models import Account, FaceTemplate
from vision.faces import FaceGallery, encoding_from_bytes, encoding_to_bytes, enrol_encodings


def _store(db: sessionmaker, name: str, encodings, photos: Sequence[Path], *,
           payment_token: str, currency: str, account_id: int | None = None) -> Account:
    with db.begin() as s:
        account = s.get(Account, account_id) if account_id is not None else None
        if account is None:
            account = Account(name=name, payment_token=payment_token, currency=currency,
                              status="active")
            s.add(account)
            s.flush()
        for enc, photo in zip(encodings, photos):
            s.add(FaceTemplate(account_id=account.id, encoding=encoding_to_bytes(enc),
                               source=f"enrolment photo {Path(photo).name}"))
        s.flush()
        s.expunge(account)
    return account


def enroll_offline(db: sessionmaker, name: str, photos: Sequence[Path], *,
                   payment_token: str = "tok_visa_ok", currency: str = "EUR") -> Account:
    """Enrol from photos into the database (the `cabinet accounts enroll` command)."""
    if not name.strip():
        raise ValueError("accounts enroll: the customer's name is empty")
    encodings = enrol_encodings(photos)           # raises FaceError before anything is written
    return _store(db, name, encodings, photos, payment_token=payment_token, currency=currency)


def enroll(db: sessionmaker, billing, gallery: FaceGallery, name: str, photos: Sequence[Path], *,
           payment_token: str, currency: str) -> Account:
    """Enrol and add the templates to a running controller's gallery."""
    encodings = enrol_encodings(photos)
    account = billing.open_account(name, payment_token, currency)
    _store(db, name, encodings, photos, payment_token=payment_token, currency=currency,
           account_id=account.id)
    for enc in encodings:
        gallery.add(str(account.id), enc)
    return account


def load_gallery(db: sessionmaker, threshold: float | None = None) -> FaceGallery:
    gallery = FaceGallery() if threshold is None else FaceGallery(threshold)
    with db() as s:
        for account_id, blob in s.execute(select(FaceTemplate.account_id, FaceTemplate.encoding)
                                          .join(Account).where(Account.status == "active")):
            gallery.add(str(account_id), encoding_from_bytes(blob))
    return gallery


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
