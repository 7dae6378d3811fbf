"""Customer enrolment: an account in billing plus face templates (never the photos).

`enroll` encodes every photo first (each must hold exactly one face, else a FaceError names the
file) and only then asks billing to open the account and store the templates, so a bad photo
changes nothing; billing applies its own rules to the name, token and currency.
`load_gallery` builds the in-memory face gallery from the stored templates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from billing.models import Account, FaceTemplate
from billing.service import Billing
from vision.faces import FaceGallery, encoding_from_bytes, encoding_to_bytes, enrol_encodings


def enroll(billing: Billing, gallery: FaceGallery | None, name: str, photos: Sequence[Path], *,
           payment_token: str, currency: str,
           encode: Callable[[Sequence[Path]], list[np.ndarray]] = enrol_encodings) -> Account:
    """Enrol a customer; with a running cabinet's gallery, it knows the face at once.

    `encode` turns the photos into one face encoding each (tests pass a cached one, so many
    simulated cabinets do not encode the same photos again)."""
    encodings = encode(photos)                    # raises FaceError before anything is written
    account = billing.open_account(name, payment_token, currency)
    for enc, photo in zip(encodings, photos):
        billing.enrol_face(account.id, encoding_to_bytes(enc),
                           f"enrolment photo {Path(photo).name}")
        if gallery is not None:
            gallery.add(str(account.id), enc)
    return account


def enroll_offline(db: sessionmaker, name: str, photos: Sequence[Path], *,
                   payment_token: str = "tok_visa_ok", currency: str = "EUR") -> Account:
    """`cabinet accounts enroll`: enrolment into a database, no cabinet running. Enrolment
    makes no payment call, so billing needs no gateway here."""
    billing = Billing(db, gateway=None, currency=currency)
    return enroll(billing, None, name, photos, payment_token=payment_token, currency=currency)


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
