"""Card transactions one at a time: posted once, duplicates answered from the record,
clones and forgeries quarantined with their reason, the ledger moved exactly as the
certificate says (purse -> payable and fee revenue)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from card_reader.certificate import Journey, JourneyAction, TransitMode
from ledger import Ledger, make_engine
from merchant_api import chart, schema
from merchant_api.auth import Principal, Scope
from merchant_api.context import ApiContext
from merchant_api.idempotency import ClaimRequest, stored_key
from merchant_api.services import certificates, transactions
from tests.api.cards import SimulatedCard
from tests.api.conftest import TEST_ROOT_KEY, World, make_context
from tests.conftest import both_backends


def quarantined(ctx: ApiContext) -> list[Any]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(schema.quarantine).order_by(schema.quarantine.c.seq)))


def balances(ctx: ApiContext, world: World, card_id: str) -> dict[str, int]:
    card = world.issuer.ok(world.issuer.get(f"/v1/cards/{card_id}"), 200)
    merchant = world.issuer.ok(world.issuer.get(f"/v1/merchants/{world.merchant_id}/balance"), 200)
    fees = Ledger(ctx.engine).get_account(chart.FEE_REVENUE)
    assert fees is not None
    return {"card": card["balance"], "merchant": merchant["available"], "fees": fees.balance}


@both_backends
def test_a_debit_posts_once_with_the_merchants_fee(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 50_000)
    before = balances(ctx, world, card_id)
    cert = card.debit(12_345, "POS-1", terminal_seq=9)

    first = world.merchant.post("/v1/card-transactions", cert.to_json())
    again = world.merchant.post("/v1/card-transactions", cert.to_json())

    assert first.status_code == 201, first.text
    assert again.status_code == 200 and again.json() == first.json()
    body = first.json()
    fee = chart.mdr_fee(12_345, 70)
    assert (body["amount"], body["fee"], body["net_amount"]) == (12_345, fee, 12_345 - fee)
    assert (body["card_counter"], body["terminal_seq"], body["balance_after"]) == (2, 9, 37_655)
    after = balances(ctx, world, card_id)
    assert after["card"] == before["card"] - 12_345 == card.balance
    assert after["merchant"] == before["merchant"] + 12_345 - fee
    assert after["fees"] == before["fees"] + fee
    got = world.merchant.ok(world.merchant.get(f"/v1/card-transactions/{body['id']}"), 200)
    assert got == body


@both_backends
def test_a_clone_spending_the_same_counter_is_quarantined(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 20_000)
    clone = SimulatedCard(serial=card.serial, balance=card.balance, counter=card.counter)
    original = card.debit(5_000, "POS-1", 1)
    copied = clone.debit(7_000, "POS-1", 2)  # the same counter, other bytes

    assert world.merchant.post("/v1/card-transactions", original.to_json()).status_code == 201
    refused = world.merchant.post("/v1/card-transactions", copied.to_json())

    assert refused.status_code == 422
    assert refused.json()["code"] == "conflicting_duplicate"
    assert card.serial_hex not in refused.text
    rows = quarantined(ctx)
    assert [(r.reason, r.card_counter, r.amount) for r in rows] == [
        ("conflicting_duplicate", copied.counter, 7_000)
    ]
    assert balances(ctx, world, card_id)["card"] == 15_000


@both_backends
def test_forged_and_malformed_certificates_are_kept_in_quarantine(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 20_000)
    genuine = card.debit(1_000, "POS-1").to_json()
    forged = {**genuine, "amount": 1}
    missing = {k: v for k, v in genuine.items() if k != "mac"}

    answers = [world.merchant.post("/v1/card-transactions", body) for body in (forged, missing)]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [
        (422, "mac_invalid"),
        (422, "json_field_missing"),
    ]
    rows = quarantined(ctx)
    assert [r.reason for r in rows] == ["mac_invalid", "json_field_missing"]
    sealed = [ctx.secrets.unseal("quarantine", r.raw_sealed) for r in rows]
    assert json.loads(sealed[0]) == forged and json.loads(sealed[1]) == missing
    assert all(card.serial_hex.encode() not in bytes(r.raw_sealed) for r in rows)
    # The same forgery again is answered the same way and stored once.
    assert world.merchant.post("/v1/card-transactions", forged).json()["code"] == "mac_invalid"
    assert len(quarantined(ctx)) == 2
    assert balances(ctx, world, card_id)["card"] == 20_000


def test_a_terminal_of_another_owner_and_a_blocked_card_are_refused(
    world: World, ctx: ApiContext
) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 20_000)
    at_gate = card.debit(3_500, "GATE-1")
    refused = world.merchant.post("/v1/card-transactions", at_gate.to_json())
    assert (refused.status_code, refused.json()["code"]) == (422, "terminal_not_owned")
    # Its owner may submit it.
    assert world.operator.post("/v1/card-transactions", at_gate.to_json()).status_code == 201

    world.issuer.ok(world.issuer.post(f"/v1/cards/{card_id}/block", {"reason": "lost"}), 200)
    late = card.debit(1_000, "POS-1", timestamp=int(at_gate.timestamp) + 3600)
    blocked = world.merchant.post("/v1/card-transactions", late.to_json())
    assert (blocked.status_code, blocked.json()["code"]) == (422, "card_blocked")
    assert [r.reason for r in quarantined(ctx)] == ["terminal_not_owned", "card_blocked"]


def test_more_than_the_shadow_purse_holds_is_quarantined_with_the_ledger_code(
    world: World, ctx: ApiContext
) -> None:
    _, card = world.issue_card()
    card.balance = 10_000  # value the back office never loaded (a tampered chip)
    cert = card.debit(10_000, "POS-1")
    refused = world.merchant.post("/v1/card-transactions", cert.to_json())
    assert (refused.status_code, refused.json()["code"]) == (422, "exceeds_credits")
    assert [r.reason for r in quarantined(ctx)] == ["exceeds_credits"]


def merchant_principal(ctx: ApiContext, world: World) -> Principal:
    """The merchant's API key as the coalescer sees it (tests call submit_many directly)."""
    with ctx.engine.connect() as conn:
        key = conn.execute(
            sa.select(schema.api_keys.c.id, schema.api_keys.c.prefix).where(
                schema.api_keys.c.merchant_id == uuid.UUID(world.merchant_id),
                schema.api_keys.c.scope == "merchant",
            )
        ).one()
    return Principal(key.id, key.prefix, Scope.MERCHANT, uuid.UUID(world.merchant_id))


@both_backends
def test_a_certificate_twice_in_one_coalesced_group_is_refused_twice_when_the_ledger_refuses_it(
    world: World, ctx: ApiContext
) -> None:
    """Two terminals' retries of one certificate can land in the same coalesced group: when
    the ledger refuses the first, the copy is refused the same way (it has no recorded
    transaction to be a duplicate of), and the group's other submissions are unaffected."""
    _, card = world.issue_card()
    card_id, good = world.issue_card()
    world.load(card_id, good, 20_000)
    card.balance = 10_000  # value the back office never loaded (a tampered chip)
    refused = card.debit(10_000, "POS-1").to_json()
    fine = good.debit(2_000, "POS-1").to_json()
    principal = merchant_principal(ctx, world)
    answers = transactions.submit_many(
        ctx, [(principal, certificates.parse(ctx, raw), None) for raw in (refused, refused, fine)]
    )
    assert [(a.error.status, a.error.code) if a.error else None for a in answers[:2]] == [
        (422, "exceeds_credits"),
        (422, "exceeds_credits"),
    ]
    assert answers[2].response is not None and answers[2].response[0] == 201
    assert [r.reason for r in quarantined(ctx)] == ["exceeds_credits"]


@both_backends
def test_a_group_answers_recorded_certificates_and_copies_from_its_one_read_and_stores_them(
    world: World, ctx: ApiContext
) -> None:
    """A coalesced group reads once, before deciding, and writes once: a certificate
    recorded before answers 200 with the recorded transaction, a copy of one posted in the
    same group answers 200 with that one's transaction, and every answer is stored with
    its Idempotency-Key, so the same requests again are replays of them."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 20_000)
    other_id, other = world.issue_card()
    world.load(other_id, other, 20_000)
    recorded = card.debit(1_000, "POS-1").to_json()
    first = world.merchant.ok(world.merchant.post("/v1/card-transactions", recorded), 201)
    fresh = other.debit(2_000, "POS-1").to_json()
    principal = merchant_principal(ctx, world)
    jobs = [
        (
            principal,
            certificates.parse(ctx, raw),
            ClaimRequest(principal.api_key_id, f"group-{n}", json.dumps(raw).encode()),
        )
        for n, raw in enumerate((recorded, fresh, fresh))
    ]

    answers = transactions.submit_many(ctx, jobs)

    responses = [answer.response for answer in answers]
    assert [response[0] if response else None for response in responses] == [200, 201, 200]
    assert responses[0] is not None and json.loads(responses[0][1]) == first
    assert responses[1] is not None and responses[2] == (200, responses[1][1])
    assert all(answer.stored for answer in answers)
    again = transactions.submit_many(ctx, jobs)
    assert [(a.replay.status, a.replay.body) if a.replay else None for a in again] == responses
    assert balances(ctx, world, other_id)["card"] == 18_000  # posted once


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_group_whose_connection_died_runs_again_on_a_fresh_one(
    world: World, ctx: ApiContext, database_url: str
) -> None:
    """A group's reads and writes go to PostgreSQL through psycopg itself (pipeline mode,
    merchant_api.services.certificate_store): a connection found dead there is replaced,
    and the group runs again on the fresh one and is answered, as when SQLAlchemy sends
    the statement."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 20_000)
    raw = card.debit(1_000, "POS-1").to_json()
    principal = merchant_principal(ctx, world)
    # One pooled connection, never pinged: the group is the first to find it dead.
    engine = make_engine(database_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        server = make_context(engine)
        with engine.connect() as conn:
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with ctx.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({backend}, 10000)")  # gone

        answers = transactions.submit_many(
            server, [(principal, certificates.parse(server, raw), None)]
        )

        assert answers[0].response is not None and answers[0].response[0] == 201
        assert balances(ctx, world, card_id)["card"] == 19_000
    finally:
        engine.dispose()


def test_a_tap_in_records_the_journey_without_moving_money(world: World, ctx: ApiContext) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    journey = Journey(
        TransitMode.MRT, JourneyAction.ENTRY, line=1, entry_station=12, entry_time=1_735_700_000
    )
    tap_in = card.debit(0, "GATE-1", journey=journey)
    body = world.operator.ok(world.operator.post("/v1/card-transactions", tap_in.to_json()), 201)
    assert body["transfer_id"] is None and body["amount"] == 0
    assert body["journey"]["entry_station"] == 12
    assert balances(ctx, world, card_id)["card"] == 10_000


def test_an_unknown_card_is_quarantined(world: World, ctx: ApiContext) -> None:
    stranger = SimulatedCard(balance=5_000)
    refused = world.merchant.post("/v1/card-transactions", stranger.debit(100, "POS-1").to_json())
    assert refused.json()["code"] == "card_unknown"


def test_lists_filter_by_card_and_terminal_with_cursor_pagination(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 100_000)
    made = [
        world.merchant.ok(
            world.merchant.post("/v1/card-transactions", card.debit(100 + i, "POS-1", i).to_json()),
            201,
        )
        for i in range(5)
    ]
    first = world.merchant.ok(world.merchant.get("/v1/card-transactions", limit=2, card_id=card_id))
    assert [t["id"] for t in first["data"]] == [made[4]["id"], made[3]["id"]]
    assert first["has_more"] is True
    second = world.merchant.ok(
        world.merchant.get(
            "/v1/card-transactions", limit=2, card_id=card_id, starting_after=made[3]["id"]
        )
    )
    assert [t["id"] for t in second["data"]] == [made[2]["id"], made[1]["id"]]
    back = world.merchant.ok(
        world.merchant.get(
            "/v1/card-transactions", limit=2, card_id=card_id, ending_before=made[2]["id"]
        )
    )
    assert [t["id"] for t in back["data"]] == [made[4]["id"], made[3]["id"]]
    # The merchant's list never shows the load (a credit at the issuer's terminal).
    everything = world.merchant.ok(world.merchant.get("/v1/card-transactions", limit=100))
    assert {t["merchant_id"] for t in everything["data"]} == {world.merchant_id}
    other = world.operator.ok(world.operator.get("/v1/card-transactions", card_id=card_id))
    assert other["data"] == []


@given(
    amount=st.integers(min_value=0, max_value=2**32), bps=st.integers(min_value=0, max_value=1000)
)
def test_the_fee_is_basis_points_rounded_half_up_and_never_more_than_the_amount(
    amount: int, bps: int
) -> None:
    fee = chart.mdr_fee(amount, bps)
    exact_tenthousandths = amount * bps
    assert 0 <= fee <= amount
    assert abs(fee * 10_000 - exact_tenthousandths) <= 5_000
    if fee * 10_000 - exact_tenthousandths == -5_000:
        raise AssertionError("a half rupiah rounds up")


def test_certificates_never_leave_serials_in_answers_or_logs(
    world: World, ctx: ApiContext, caplog: Any
) -> None:
    caplog.set_level("DEBUG")
    card_id, card = world.issue_card()
    world.load(card_id, card, 5_000)
    bad = {**card.debit(100, "POS-1").to_json(), "amount": 7}
    answer = world.merchant.post("/v1/card-transactions", bad)
    listing = world.issuer.get("/v1/cards")
    for text in (answer.text, listing.text, caplog.text):
        assert card.serial_hex not in text
    assert TEST_ROOT_KEY not in caplog.text
    assert answer.json()["request_id"] == answer.headers["X-Request-ID"]


def test_a_retried_submission_replays_its_first_answer_byte_for_byte(world: World) -> None:
    card_id, card = world.issue_card()
    world.load(card_id, card, 5_000)
    cert = card.debit(1_500, "POS-1").to_json()
    first = world.merchant.post("/v1/card-transactions", cert, key="pos-1-seq-77")
    retry = world.merchant.post("/v1/card-transactions", cert, key="pos-1-seq-77")
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.content == first.content and retry.headers["Idempotent-Replayed"] == "true"
    other = world.merchant.post("/v1/card-transactions", {**cert, "amount": 1}, key="pos-1-seq-77")
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")


@both_backends
def test_the_idempotency_record_commits_with_the_transaction_it_answers(
    world: World, ctx: ApiContext
) -> None:
    """The key is claimed and its answer stored in the transaction that posts the debit:
    once the answer is out, the record holds it (no second commit that could be lost)."""
    card_id, card = world.issue_card()
    world.load(card_id, card, 5_000)
    cert = card.debit(2_000, "POS-1").to_json()
    posted = world.merchant.post("/v1/card-transactions", cert, key="pos-1-seq-90")
    assert posted.status_code == 201
    with ctx.engine.connect() as conn:
        record = conn.execute(
            sa.select(schema.idempotency_keys).where(
                schema.idempotency_keys.c.key == stored_key("pos-1-seq-90")
            )
        ).one()
    assert (record.response_status, bytes(record.response_body)) == (201, posted.content)
    # A quarantined answer (422) is stored too, and replayed to a retry.
    forged = {**card.debit(1_000, "POS-1").to_json(), "amount": 1}
    first = world.merchant.post("/v1/card-transactions", forged, key="pos-1-seq-91")
    retry = world.merchant.post("/v1/card-transactions", forged, key="pos-1-seq-91")
    assert (first.status_code, first.json()["code"]) == (422, "mac_invalid")
    assert retry.content == first.content and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Content-Type"].startswith("application/problem+json")
    assert len(quarantined(ctx)) == 1
    assert balances(ctx, world, card_id)["card"] == 3_000
    # Each went through the coalescer, which reports how many shared a transaction.
    metrics = world.merchant.http.get("/metrics").text
    assert re.search(r"^jakartaone_coalesced_submissions_count [1-9]", metrics, re.MULTILINE)
