"""Pending transfers: reserve, then post (fully or in part), void, or expire; once only."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ledger import (
    AccountKind,
    BatchMode,
    Ledger,
    PostPending,
    ResultCode,
    Transfer,
    VoidPending,
    credit,
    debit,
)
from tests.conftest import both_backends
from tests.ledger.conftest import FakeTime


def _purse(open_account: Callable[..., uuid.UUID]) -> uuid.UUID:
    return open_account(
        AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True, max_balance=2_000_000
    )


@both_backends
def test_pending_reserves_then_partial_post_releases_the_rest(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    funding, card = open_account(AccountKind.AGENT_RECEIVABLE), _purse(open_account)
    pending = uuid.uuid4()
    ledger.transfer(Transfer.simple(pending, funding, card, 50_000, "load", pending=True))
    account = ledger.get_account(card)
    assert account is not None
    assert (account.credits_pending, account.balance, account.available) == (50_000, 0, 0)
    # Pending credits count against the maximum balance.
    over = Transfer.simple(uuid.uuid4(), funding, card, 1_950_001, "load")
    assert ledger.submit([over])[0].code is ResultCode.EXCEEDS_MAX_BALANCE

    post = PostPending(uuid.uuid4(), pending, (debit(funding, 30_000), credit(card, 30_000)))
    ledger.transfer(post)
    account = ledger.get_account(card)
    assert account is not None
    assert (account.credits_pending, account.credits_posted) == (0, 30_000)
    again = ledger.submit([VoidPending(uuid.uuid4(), pending), PostPending(uuid.uuid4(), pending)])
    assert [r.code for r in again] == [
        ResultCode.PENDING_TRANSFER_ALREADY_POSTED,
        ResultCode.PENDING_TRANSFER_ALREADY_POSTED,
    ]
    assert ledger.submit([post])[0].code is ResultCode.EXISTS


@both_backends
def test_post_cannot_exceed_or_reshape_the_pending_transfer(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a, b, c = open_account(), open_account(), open_account()
    pending = uuid.uuid4()
    ledger.transfer(Transfer.simple(pending, a, b, 100, "hold", pending=True))
    too_much = PostPending(uuid.uuid4(), pending, (debit(a, 101), credit(b, 101)))
    reshaped = PostPending(uuid.uuid4(), pending, (debit(a, 10), credit(c, 10)))
    flipped = PostPending(uuid.uuid4(), pending, (debit(b, 10), credit(a, 10)))
    codes = [r.code for r in ledger.submit([too_much, reshaped, flipped])]
    assert codes == [
        ResultCode.POST_AMOUNT_EXCEEDS_PENDING,
        ResultCode.POST_POSTINGS_MUST_MATCH_PENDING,
        ResultCode.POST_POSTINGS_MUST_MATCH_PENDING,
    ]


@both_backends
def test_expired_pending_cannot_be_posted_and_is_released_by_the_sweep(
    ledger: Ledger, open_account: Callable[..., uuid.UUID], fake_time: FakeTime
) -> None:
    a, card = open_account(), _purse(open_account)
    ledger.transfer(Transfer.simple(uuid.uuid4(), a, card, 1_000, "load"))
    hold = uuid.uuid4()
    ledger.transfer(Transfer.simple(hold, card, a, 600, "hold", pending=True, timeout_s=30))
    assert ledger.get_account(card).available == 400  # type: ignore[union-attr]
    assert ledger.expire_pending() == []
    fake_time.advance(31)
    late = ledger.submit([PostPending(uuid.uuid4(), hold)])[0]
    assert late.code is ResultCode.PENDING_TRANSFER_EXPIRED
    swept = ledger.expire_pending()
    assert [r.code for r in swept] == [ResultCode.OK]
    assert ledger.expire_pending() == []
    account = ledger.get_account(card)
    assert account is not None and (account.debits_pending, account.available) == (0, 1_000)
    void = ledger.submit([VoidPending(uuid.uuid4(), hold)])[0]
    assert void.code is ResultCode.PENDING_TRANSFER_EXPIRED


@both_backends
def test_linked_batch_is_all_or_nothing(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a, card = open_account(), _purse(open_account)
    good = Transfer.simple(uuid.uuid4(), a, card, 100, "load")
    bad = Transfer.simple(uuid.uuid4(), card, a, 500, "fare")
    results = ledger.submit([good, bad], BatchMode.LINKED)
    assert [r.code for r in results] == [ResultCode.LINKED_EVENT_FAILED, ResultCode.EXCEEDS_CREDITS]
    assert ledger.get_transfer(good.id) is None
    # The same two, independent: the first applies, the second is refused alone.
    results = ledger.submit([good, bad], BatchMode.INDEPENDENT)
    assert [r.code for r in results] == [ResultCode.OK, ResultCode.EXCEEDS_CREDITS]
    # Within one linked batch, later transfers see earlier ones' effects.
    spend = Transfer.simple(uuid.uuid4(), card, a, 150, "fare")
    top_up = Transfer.simple(uuid.uuid4(), a, card, 100, "load")
    results = ledger.submit([top_up, spend], BatchMode.LINKED)
    assert [r.code for r in results] == [ResultCode.OK, ResultCode.OK]
    assert ledger.get_account(card).balance == 50  # type: ignore[union-attr]


@both_backends
def test_statement_gives_running_balances_and_balance_as_of(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    a, card = open_account(), _purse(open_account)
    seqs = [
        ledger.transfer(Transfer.simple(uuid.uuid4(), a, card, amount, "load")).seq
        for amount in (10_000, 5_000)
    ]
    hold = uuid.uuid4()
    ledger.transfer(Transfer.simple(hold, card, a, 3_500, "fare", pending=True))
    ledger.transfer(PostPending(uuid.uuid4(), hold))
    lines = ledger.statement(card)
    assert [(line.phase.value, line.credits_posted - line.debits_posted) for line in lines] == [
        ("posted", 10_000),
        ("posted", 15_000),
        ("pending", 15_000),
        ("post_pending", 11_500),
    ]
    assert lines[2].debits_pending == 3_500 and lines[3].debits_pending == 0
    assert seqs[0] is not None
    as_of = ledger.balance_as_of(card, seqs[0])
    assert (as_of.credits_posted, as_of.debits_posted) == (10_000, 0)
    page = ledger.statement(card, after_seq=lines[1].seq, limit=1)
    assert [line.seq for line in page] == [lines[2].seq]
    assert page[0].credits_posted == 15_000
    assert [t.kind for t in ledger.transfers(account_id=card, kind="load")] == ["load", "load"]


@both_backends
def test_reservations_on_a_sharded_account_are_released_where_they_were_made(
    ledger: Ledger, open_account: Callable[..., uuid.UUID]
) -> None:
    hot, other = open_account(shards=8), open_account(shards=8)
    holds = [uuid.uuid4() for _ in range(24)]
    for hold in holds:
        ledger.transfer(Transfer.simple(hold, hot, other, 10, "hold", pending=True))
    for i, hold in enumerate(holds):
        resolve = PostPending(uuid.uuid4(), hold) if i % 2 else VoidPending(uuid.uuid4(), hold)
        ledger.transfer(resolve)
    account = ledger.get_account(hot)
    assert account is not None
    assert (account.debits_pending, account.debits_posted) == (0, 120)
