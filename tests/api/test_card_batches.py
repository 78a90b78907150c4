"""Card batches: a personalization bureau's cards in one transaction, optionally sold
pre-loaded (a bank-transfer load for counter 0 the card's credit certificate confirms)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from ledger import run_read
from ledger.verify import verify
from merchant_api import schema
from merchant_api.context import ApiContext
from tests.api.cards import SimulatedCard
from tests.api.conftest import World
from tests.conftest import both_backends


def batch_body(cards: list[SimulatedCard], first_load: int | None = 50_000) -> dict:
    items = []
    for index, card in enumerate(cards):
        item: dict = {"serial": card.serial_hex, "first_load": first_load}
        if index == 0:
            item.update(registered=True, holder_reference="kyc-batch-0")
        items.append(item)
    return {"cards": items}


@both_backends
def test_a_batch_issues_and_preloads_its_cards(world: World, ctx: ApiContext) -> None:
    cards = [SimulatedCard() for _ in range(3)]
    key = str(uuid.uuid4())
    batch = world.issuer.ok(world.issuer.post("/v1/card-batches", batch_body(cards), key), 201)
    issued = batch["cards"]
    assert [c["card_ref"] for c in issued] == [card.ref for card in cards]
    assert [c["registered"] for c in issued] == [True, False, False]
    assert all(c["load_amount"] == 50_000 and c["cryptogram"] for c in issued)

    # The card takes the cryptogram; its credit certificate posts the load, whether it is
    # confirmed online or arrives in the personalization machine's batch.
    first = cards[0].credit(50_000, bytes.fromhex(issued[0]["cryptogram"]), world.pos)
    world.issuer.ok(
        world.issuer.post(
            f"/v1/loads/{issued[0]['load_id']}/confirm", {"certificate": first.to_json()}
        ),
        200,
    )
    rest = [
        card.credit(50_000, bytes.fromhex(made["cryptogram"]), world.pos, terminal_seq=index + 2)
        for index, (card, made) in enumerate(zip(cards[1:], issued[1:], strict=True))
    ]
    batch_id = str(uuid.uuid4())
    answer = world.merchant.ok(
        world.merchant.post(
            "/v1/gate-batches",
            {
                "batch_id": batch_id,
                "terminal_id": world.pos,
                "first_terminal_seq": 2,
                "last_terminal_seq": 3,
                "certificates": [cert.to_json() for cert in rest],
            },
            batch_id,
        ),
        201,
    )
    assert [item["outcome"] for item in answer["items"]] == ["posted", "posted"]
    for made in issued:
        card = world.issuer.ok(world.issuer.get(f"/v1/cards/{made['id']}"), 200)
        assert (card["balance"], card["pending_loads"]) == (50_000, 0)

    # The same request again answers the same cards and makes nothing twice.
    again = world.issuer.ok(world.issuer.post("/v1/card-batches", batch_body(cards), key), 201)
    assert [c["id"] for c in again["cards"]] == [c["id"] for c in issued]
    with ctx.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.cards)).scalar_one()
        loads = conn.execute(sa.select(sa.func.count()).select_from(schema.loads)).scalar_one()
    assert (count, loads) == (3, 3)
    assert run_read(ctx.engine, verify).ok


@both_backends
def test_a_batch_with_a_serial_already_issued_makes_nothing(world: World, ctx: ApiContext) -> None:
    _, taken = world.issue_card()
    cards = [SimulatedCard(), taken]
    refused = world.issuer.post("/v1/card-batches", batch_body(cards))
    assert refused.status_code == 409 and refused.json()["code"] == "card_already_issued"
    twice = world.issuer.post("/v1/card-batches", batch_body([cards[0], cards[0]]))
    assert twice.status_code == 409 and twice.json()["code"] == "card_already_issued"
    unheld = world.issuer.post(
        "/v1/card-batches", {"cards": [{"serial": cards[0].serial_hex, "registered": True}]}
    )
    assert unheld.status_code == 422 and unheld.json()["code"] == "card_not_registered"
    with ctx.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.cards)).scalar_one()
    assert count == 1


@both_backends
def test_a_batch_without_first_loads_issues_empty_cards(world: World) -> None:
    cards = [SimulatedCard() for _ in range(2)]
    batch = world.issuer.ok(
        world.issuer.post("/v1/card-batches", batch_body(cards, first_load=None)), 201
    )
    assert all(c["load_id"] is None and c["cryptogram"] is None for c in batch["cards"])
    too_many = {"cards": [{"serial": f"{i:016x}"} for i in range(501)]}
    assert world.issuer.post("/v1/card-batches", too_many).status_code == 400
