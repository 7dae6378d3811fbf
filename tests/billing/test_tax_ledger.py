"""Tax in the ledger: net and tax per line in minor units, per-rate tax entries, receipts with
the tax lines and the registration number, refunds and corrections reversing tax exactly."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from billing import Billing, BillingError, GatewayClient, Line, Money, init_db, make_engine, \
    session_factory
from billing.models import LineItem, TaxEntry
from billing.receipt import check_locale, money_text
from billing.tax import RatePeriod, TaxRules, TaxSetup, tax_included
from billing_support import TEST_SECRETS

JP = TaxRules("JP", "JPY", "floor", {
    "reduced": (RatePeriod(800, dt.date(2019, 10, 1)),),
    "standard": (RatePeriod(1000, dt.date(2019, 10, 1)),),
    "alcohol": (RatePeriod(1000, dt.date(2019, 10, 1)),)}, registration="T1234567890123")
DE = TaxRules("DE", "EUR", "half_up", {
    "reduced": (RatePeriod(700, dt.date(2021, 1, 1)),),
    "standard": (RatePeriod(1900, dt.date(2021, 1, 1)),)}, registration="DE123456789")
CLASSES = {"onigiri": "reduced", "tea": "reduced", "beer": "alcohol", "towel": "standard",
           "bread": "reduced", "cola": "standard"}
ONIGIRI, TEA = Line("onigiri", "Onigiri", 2, 150), Line("tea", "Green tea", 1, 130)
BEER, TOWEL = Line("beer", "Beer 350 ml", 2, 248), Line("towel", "Towel", 1, 330)


@pytest.fixture
def build(db_url, gateway, clock):
    engines = []

    def make(rules: TaxRules, currency: str, hold: int, locale: str | None = None) -> Billing:
        engine = make_engine(db_url)
        init_db(engine)
        engines.append(engine)
        client = GatewayClient(gateway.base_url, api_key=gateway.api_key, timeout_s=1.0,
                               max_retries=3, sleep=lambda s: None, jitter=lambda: 1.0)
        return Billing(session_factory(engine), client, hold_amount=hold, currency=currency,
                       cabinet_id="cab-tax", clock=clock, secrets=TEST_SECRETS,
                       outbox_jitter=lambda: 1.0, tax=TaxSetup(rules, CLASSES), locale=locale)

    yield make
    for engine in engines:
        engine.dispose()


def _entries(billing: Billing, session_id: str) -> dict[int, tuple[int, int, int]]:
    with billing._sessions() as db:
        rows = db.execute(select(TaxEntry.rate_bp, func.sum(TaxEntry.gross),
                                 func.sum(TaxEntry.net), func.sum(TaxEntry.tax))
                          .where(TaxEntry.session_id == session_id)
                          .group_by(TaxEntry.rate_bp))
        return {bp: (int(g), int(n), int(t)) for bp, g, n, t in rows}


def test_a_mixed_jpy_basket_has_both_rates_on_one_receipt(build):
    billing = build(JP, "JPY", 5000)
    alice = billing.open_account("Alice", "tok_visa_ok", currency="JPY")
    billing.place_hold("s-jp", alice.id)
    receipt = billing.settle("s-jp", [ONIGIRI, TEA, BEER, TOWEL])
    assert receipt.charged == Money(1256, "JPY")
    assert [(r.bp, r.gross, r.net, r.tax) for r in receipt.taxes] == [
        (800, 430, 399, 31), (1000, 826, 751, 75)]
    with billing._sessions() as db:
        lines = db.scalars(select(LineItem).where(LineItem.session_id == "s-jp")
                           .order_by(LineItem.position)).all()
        assert [(x.tax_class, x.tax_rate_bp, x.net, x.tax) for x in lines] == [
            ("reduced", 800, 278, 22), ("reduced", 800, 121, 9), ("alcohol", 1000, 451, 45),
            ("standard", 1000, 300, 30)]
    text = receipt.render_text()
    assert "2 x Onigiri @ JPY 150 = JPY 300 (8%)" in text
    assert "2 x Beer 350 ml @ JPY 248 = JPY 496 (10%)" in text
    assert "    8% on JPY 430: net JPY 399, tax JPY 31" in text
    assert "   10% on JPY 826: net JPY 751, tax JPY 75" in text
    assert "Tax       JPY 106 (included)" in text
    assert "Tax reg.  T1234567890123" in text
    assert billing.stored_receipts("s-jp")[-1] == text


def test_germany_receipt_in_german_with_babel(build):
    billing = build(DE, "EUR", 2000, locale="de_DE")
    bob = billing.open_account("Bob", "tok_visa_ok")
    billing.place_hold("s-de", bob.id)
    text = billing.settle("s-de", [Line("bread", "Brot", 1, 249),
                                   Line("cola", "Cola", 2, 199)]).render_text()
    assert "1 x Brot @ 2,49\xa0€ = 2,49\xa0€ (7%)" in text
    assert "    7% on 2,49\xa0€: net 2,33\xa0€, tax 0,16\xa0€" in text
    assert "   19% on 3,98\xa0€: net 3,34\xa0€, tax 0,64\xa0€" in text   # 398*19/119 = 63.5
    assert "Tax reg.  DE123456789" in text
    assert "Outcome   Charged 6,47\xa0€" in text


def test_a_refund_reverses_tax_and_a_full_one_leaves_none(build, gateway):
    billing = build(JP, "JPY", 5000)
    alice = billing.open_account("Alice", "tok_visa_ok", currency="JPY")
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [ONIGIRI, TEA, BEER, TOWEL])
    assert billing.refund("s-1", 496, "beer was warm").status == "refunded"
    left = _entries(billing, "s-1")
    # 496 taken back in proportion 430:826 -> 170 at 8%, 326 at 10%
    assert left == {800: (260, 260 - tax_included(260, 800, "floor"), 19),
                    1000: (500, 500 - 45, 45)}
    receipt = billing.receipt("s-1")
    assert receipt.tax_refunded == Money(31 - 19 + 75 - 45, "JPY")
    assert "Refunded  JPY 496 (tax JPY 42)" in receipt.render_text()
    billing.refund("s-1", 760, "everything")
    assert _entries(billing, "s-1") == {800: (0, 0, 0), 1000: (0, 0, 0)}


def test_a_correction_moves_tax_to_the_corrected_basket(build):
    billing = build(JP, "JPY", 5000)
    alice = billing.open_account("Alice", "tok_visa_ok", currency="JPY")
    billing.place_hold("s-2", alice.id)
    billing.settle("s-2", [ONIGIRI, BEER])
    result = billing.correct("s-2", [ONIGIRI], "no beer was taken")
    assert (result.action, result.amount, result.status) == ("refund", Money(496, "JPY"), "done")
    # what is left is exactly the corrected basket's tax: 300 at 8% -> 22, nothing at 10%
    assert _entries(billing, "s-2") == {800: (300, 278, 22), 1000: (0, 0, 0)}
    receipt = billing.receipt("s-2")
    assert [(r.bp, r.gross, r.tax) for r in receipt.taxes] == [(800, 300, 22)]
    assert receipt.tax_refunded == Money(0, "JPY")      # the correction carries the reversal


def test_a_product_without_a_tax_class_is_refused_before_anything_is_written(build):
    billing = build(JP, "JPY", 5000)
    alice = billing.open_account("Alice", "tok_visa_ok", currency="JPY")
    billing.place_hold("s-3", alice.id)
    with pytest.raises(BillingError, match="settle s-3: tax: product 'sake' has no tax class"):
        billing.settle("s-3", [Line("sake", "Sake", 1, 900)])
    assert billing.receipt("s-3").total == Money(0, "JPY") and _entries(billing, "s-3") == {}


def test_tax_rules_in_another_currency_are_refused(build):
    with pytest.raises(BillingError, match="tax rules of JP are for JPY, this cabinet sells "
                                           "in EUR"):
        build(JP, "EUR", 2000)


def test_money_formatting_follows_the_locale():
    assert money_text(Money(1256, "JPY"), "ja_JP") == "￥1,256"
    assert money_text(Money(12345, "KWD"), "en") == "KWD12.345"
    assert money_text(Money(1250, "EUR"), "de_DE") == "12,50\xa0€"
    assert money_text(Money(1250, "EUR")) == "EUR 12.50"
    with pytest.raises(BillingError, match="'xx_YY' is not a locale Babel knows"):
        check_locale("xx_YY", "tax.locale")


def test_age_verification_records_who_how_and_when(build, clock):
    billing = build(JP, "JPY", 5000)
    alice = billing.open_account("Alice", "tok_visa_ok", currency="JPY")
    assert billing.age_verification(alice.id) is None
    billing.verify_age(alice.id, by="op-kato", method="id_card")
    assert billing.age_verification(alice.id) == (clock.now, "op-kato", "id_card")
    with pytest.raises(BillingError, match="method 'selfie' must be one of id_card"):
        billing.verify_age(alice.id, by="op-kato", method="selfie")
    with pytest.raises(BillingError, match="name the operator"):
        billing.verify_age(alice.id, by=" ", method="id_card")
