"""billing: accounts and standing, holds and charges, the ledger, the sandbox gateway.

The controller's entry points are re-exported here; see docs/internals.md for the seams.
"""
from billing.db import Base, init_db, make_engine, session_factory
from billing.errors import (BillingError, InvalidLine, NotHeld, RefundRefused,
                            SettlementConflict, UnknownAccount, UnknownSession)
from billing.gateway import (GatewayClient, GatewayError, GatewayUnavailable,
                             IdempotencyConflict, PaymentDeclined)
from billing.money import Money
from billing.receipt import Receipt, ReceiptLine
from billing.records import HoldResult, Line, RefundResult, Retried, Standing
from billing.service import Billing

__all__ = [
    "Base", "init_db", "make_engine", "session_factory", "BillingError", "InvalidLine",
    "NotHeld", "RefundRefused", "SettlementConflict", "UnknownAccount", "UnknownSession",
    "GatewayClient", "GatewayError", "GatewayUnavailable", "IdempotencyConflict",
    "PaymentDeclined", "Money", "Receipt", "ReceiptLine", "Billing", "HoldResult", "Line",
    "RefundResult", "Retried", "Standing",
]
