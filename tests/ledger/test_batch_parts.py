"""A batch written in parts gives the results and balances of the same batch written whole.

On PostgreSQL an independent batch is decided part by part, and each part's writes go to
the database through libpq's pipeline while the next part is decided (ledger.batch's
FIRST_PART, then each part twice the last up to PART_SIZE; SQLite, in process, writes
every batch whole and runs the same batches as a check of the whole path). Requests here
depend on each other across parts: a card loaded in one part pays in the next, a pending
transfer made in one part is posted or voided in another, an id is repeated (identical
or changed) parts later, and a card's maximum balance and no-overdraft bounds refuse
some requests in between. Each batch is compared with the in-memory model, which knows
nothing of parts, and every invariant is verified.
"""

from __future__ import annotations

import uuid
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import structs
from sqlalchemy.engine import Engine

import ledger.batch
from ledger import (
    AccountKind,
    BatchMode,
    Ledger,
    NewAccount,
    PostPending,
    Request,
    ResultCode,
    Transfer,
    VoidPending,
    run_read,
)
from ledger.verify import verify
from tests.conftest import both_backends
from tests.ledger.model import MAccount, Model

CARDS = 3
MAX_BALANCE = 20_000

# One step of a batch: what to do, on which card, for how much.
steps = st.lists(
    st.tuples(
        st.sampled_from(["load", "fare", "hold", "post", "void", "repeat", "change"]),
        st.integers(0, CARDS - 1),
        st.integers(1, 12_000),
    ),
    min_size=4,
    max_size=24,
)


@both_backends
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps, first=st.integers(1, 8), part=st.integers(1, 8))
def test_a_batch_in_parts_matches_the_model(
    engine: Engine, plan: list[tuple[str, int, int]], first: int, part: int
) -> None:
    book = Ledger(engine)
    model = Model(now_us=0)
    issuer, merchant = uuid.uuid4(), uuid.uuid4()
    cards = [uuid.uuid4() for _ in range(CARDS)]
    book.create_accounts(
        [
            NewAccount(issuer, AccountKind.ISSUER_FLOAT),
            NewAccount(merchant, AccountKind.MERCHANT_PAYABLE, shards=4),
            *(
                NewAccount(card, AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True,
                           max_balance=MAX_BALANCE)
                for card in cards
            ),
        ]
    )  # fmt: skip
    model.accounts[issuer] = MAccount(False, False, None)
    model.accounts[merchant] = MAccount(False, False, None)
    for card in cards:
        model.accounts[card] = MAccount(True, False, MAX_BALANCE)

    requests: list[Request] = []
    holds: list[uuid.UUID] = []
    for action, card_index, amount in plan:
        card = cards[card_index]
        if action == "load":
            requests.append(Transfer.simple(uuid.uuid4(), issuer, card, amount, "load"))
        elif action in ("fare", "hold"):
            fare = Transfer.simple(uuid.uuid4(), card, merchant, amount, "fare")
            if action == "hold":
                fare = structs.replace(fare, pending=True)
                holds.append(fare.id)
            requests.append(fare)
        elif action in ("post", "void") and holds:
            pending_id = holds[amount % len(holds)]
            resolution = PostPending if action == "post" else VoidPending
            requests.append(resolution(uuid.uuid4(), pending_id))
        elif action in ("repeat", "change") and requests:
            earlier = requests[amount % len(requests)]
            if action == "change" and isinstance(earlier, Transfer):
                earlier = structs.replace(earlier, kind="sale")
            requests.append(earlier)

    with (
        patch.object(ledger.batch, "FIRST_PART", first),
        patch.object(ledger.batch, "PART_SIZE", part),
    ):
        results = book.submit(requests, BatchMode.INDEPENDENT)
    assert [r.code for r in results] == model.apply_batch(requests, BatchMode.INDEPENDENT), [
        r.detail for r in results
    ]
    applied = [r for r in results if r.code is ResultCode.OK]
    assert [r.seq for r in applied] == sorted(r.seq for r in applied), "seqs in request order"
    recorded = {r.id: book.get_transfer(r.id) for r in applied}
    assert [r.seq for r in applied] == [recorded[r.id].seq for r in applied]  # type: ignore[union-attr]
    actual = book.get_accounts(list(model.accounts))
    for account_id, m in model.accounts.items():
        a = actual[account_id]
        balances = (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
        assert balances == (m.dp, m.cp, m.dpend, m.cpend), account_id
    report = run_read(engine, verify)
    assert report.ok, [str(v) for v in report.violations]
