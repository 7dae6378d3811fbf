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
from billing.money import MoneyError, check_currency
from cabinet.errors import CabinetError
from vision.faces import FaceGallery, encoding_from_bytes, encoding_to_bytes, enrol_encodings


def _check(name: str, payment_token: str, currency: str) -> None:
    """The same rules billing applies, checked before any photo is even opened."""
    if not name.strip():
        raise CabinetError("accounts enroll: the customer's name is empty; give it in quotes")
    if not payment_token.strip():
        raise CabinetError("accounts enroll: --token is empty; give the payment method's token")
    try:
        check_currency(currency, "accounts enroll --currency")
    except MoneyError as e:
        raise CabinetError(str(e)) from None


def enroll_offline(db: sessionmaker, name: str, photos: Sequence[Path], *,
                   payment_token: str = "tok_visa_ok", currency: str = "EUR") -> Account:
    """Enrol from photos into the database (the `cabinet accounts enroll` command): the
    account and its templates in one transaction, after every photo was encoded."""
    _check(name, payment_token, currency)
    encodings = enrol_encodings(photos)           # raises FaceError before anything is written
    with db.begin() as s:
        account = Account(name=name.strip(), payment_token=payment_token, currency=currency,
                          status="active")
        s.add(account)
        s.flush()
        for enc, photo in zip(encodings, photos):
            s.add(FaceTemplate(account_id=account.id, encoding=encoding_to_bytes(enc),
                               source=f"enrolment photo {Path(photo).name}"))
        s.flush()
        s.expunge(account)
    return account


def enroll(billing, gallery: FaceGallery, name: str, photos: Sequence[Path], *,
           payment_token: str, currency: str) -> Account:
    """Enrol through a running cabinet's billing and add the templates to its gallery."""
    _check(name, payment_token, currency)
    encodings = enrol_encodings(photos)
    account = billing.open_account(name, payment_token, currency)
    for enc, photo in zip(encodings, photos):
        billing.enrol_face(account.id, encoding_to_bytes(enc),
                           f"enrolment photo {Path(photo).name}")
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
