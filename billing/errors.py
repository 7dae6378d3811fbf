"""Billing's own errors: bad input or a request that makes no sense in the session's state.

Each is raised before anything is written, and says which account or session and what to do.
Gateway failures are in billing.gateway; money format errors in billing.money. All of these
are ValueErrors, so a caller that only wants "the request was refused" can catch that.
"""
from __future__ import annotations


class BillingError(ValueError):
    """Base of billing's refusals."""


class UnknownAccount(BillingError):
    def __init__(self, account_id: object):
        super().__init__(f"billing: no account {account_id!r}; open it first "
                         f"(Billing.open_account)")
        self.account_id = account_id


class UnknownSession(BillingError):
    def __init__(self, session_id: object):
        super().__init__(f"billing: no session {session_id!r}; a session starts with "
                         f"Billing.place_hold")
        self.session_id = session_id


class InvalidLine(BillingError):
    pass


class NotHeld(BillingError):
    """settle() on a session whose hold was never authorised (denied, declined, unknown)."""


class SettlementConflict(BillingError):
    """settle() again with a basket different from the one already recorded."""


class RefundRefused(BillingError):
    pass
