"""Webhooks: events written with their change, delivered at least once with backoff,
signed so that an independent receiver can check them, secrets rotated without a gap."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import pytest

from merchant_api.context import ApiContext
from merchant_api.services.webhooks import deliver_due
from tests.api.conftest import World
from tests.api.receiver import Receiver, signature_ok


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def deliver_until(ctx: ApiContext, done: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            deliver_due(ctx, client)
            if callable(done) and done():
                return
            time.sleep(0.05)
    raise AssertionError("deliveries did not finish in time")


def test_events_reach_an_independent_receiver_signed_and_after_retries(
    world: World, ctx: ApiContext, receiver: Receiver
) -> None:
    ctx.webhook_backoff_s = 0.05
    url = receiver.start()
    receiver.fail_first = 2
    endpoint = world.merchant.ok(
        world.merchant.post(
            "/v1/webhook-endpoints",
            {"url": url, "events": ["card_transaction.posted", "refund.created"]},
        ),
        201,
    )
    assert endpoint["secret"].startswith("whsec_")
    receiver.secrets = [endpoint["secret"]]
    # The secret is shown once: reading the endpoint never shows it.
    assert (
        world.merchant.ok(world.merchant.get(f"/v1/webhook-endpoints/{endpoint['id']}"))["secret"]
        is None
    )

    card_id, card = world.issue_card()
    world.load(card_id, card, 10_000)
    sale = world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(2_500, "POS-1").to_json()), 201
    )
    world.merchant.ok(
        world.merchant.post("/v1/refunds", {"card_transaction_id": sale["id"], "amount": 500}), 201
    )

    deliver_until(ctx, lambda: len(receiver.received) == 2)
    assert receiver.attempts == 4 and receiver.rejected == 0
    types = [r["body"]["type"] for r in receiver.received]
    assert sorted(types) == ["card_transaction.posted", "refund.created"]
    for delivery in receiver.received:
        assert delivery["event_id"] == delivery["body"]["id"]
        again = world.merchant.ok(world.merchant.get(f"/v1/events/{delivery['event_id']}"))
        assert (
            again["type"] == delivery["body"]["type"] and again["data"] == delivery["body"]["data"]
        )
    posted = next(r for r in receiver.received if r["body"]["type"] == "card_transaction.posted")
    assert posted["body"]["data"]["id"] == sale["id"]
    assert card.serial_hex not in str(receiver.received)
    # Another merchant's events are not delivered here, nor visible to this merchant.
    assert world.operator.get(f"/v1/events/{posted['event_id']}").status_code == 404


def test_a_rotated_secret_keeps_signing_until_it_expires(
    world: World, ctx: ApiContext, receiver: Receiver
) -> None:
    url = receiver.start()
    endpoint = world.merchant.ok(
        world.merchant.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]}), 201
    )
    old = endpoint["secret"]
    rotated = world.merchant.ok(
        world.merchant.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", {"previous_valid_for_s": 3600}
        ),
        200,
    )
    new = rotated["secret"]
    assert new != old and rotated["previous_secret_expires_at"] is not None
    receiver.secrets = [old]  # a receiver that has not switched yet still accepts
    card_id, card = world.issue_card()
    world.load(card_id, card, 1_000)
    world.merchant.ok(
        world.merchant.post("/v1/card-transactions", card.debit(100, "POS-1").to_json()), 201
    )
    deliver_until(ctx, lambda: len(receiver.received) == 1)
    signature, raw = receiver.received[0]["signature"], receiver.received[0]["raw"]
    assert signature.count("v1=") == 2
    assert signature_ok(signature, raw, new, time.time())
    assert signature_ok(signature, raw, old, time.time())
    assert not signature_ok(signature, raw + b" ", new, time.time())


def test_signatures_outside_the_tolerance_window_are_refused() -> None:
    body = b'{"id":"x"}'
    stamp = int(time.time()) - 3600
    mac = hmac.new(b"whsec_k", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert not signature_ok(f"t={stamp},v1={mac}", body, "whsec_k", time.time())
    assert signature_ok(f"t={stamp},v1={mac}", body, "whsec_k", stamp + 10)


def test_endpoints_belong_to_their_owner(world: World) -> None:
    made = world.merchant.ok(
        world.merchant.post(
            "/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/x", "events": ["*"]}
        ),
        201,
    )
    assert world.operator.get(f"/v1/webhook-endpoints/{made['id']}").status_code == 404
    assert world.operator.ok(world.operator.get("/v1/webhook-endpoints"))["data"] == []
    issuer_needs_owner = world.issuer.post(
        "/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/y", "events": ["*"]}
    )
    assert (issuer_needs_owner.status_code, issuer_needs_owner.json()["code"]) == (
        422,
        "request_invalid",
    )
    bad_url = world.merchant.post("/v1/webhook-endpoints", {"url": "ftp://x", "events": ["*"]})
    assert bad_url.status_code == 400
