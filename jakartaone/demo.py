"""`jakartaone demo`: a day of JakartaOne money through the ledger, then the verifier.

This first demo drives the ledger directly: it opens the issuer's, operators' and
merchants' accounts, issues and loads cards, posts fares and purchases with fees, a
refund and a two-phase agent load, then prints balances and checks every invariant.
"""

from __future__ import annotations

import random
import uuid

import click

from jakartaone import migrate
from jakartaone.settings import Settings
from ledger import (
    AccountKind,
    BatchMode,
    Ledger,
    NewAccount,
    PostPending,
    Transfer,
    credit,
    debit,
    make_engine,
    run_read,
)
from ledger.verify import verify

NAMESPACE = uuid.UUID("0b7c2f0e-5a43-4e55-9a57-3c1d1c0a7d11")
OPERATORS = {"TransJakarta": 3_500, "MRT Jakarta": 9_000, "KRL Commuter Line": 4_000}
MERCHANTS = {"Indomaret Cikini": 5499, "Warung Tegal Bu Sri": 5812, "Apotek Senen": 5912}
FEE_BPS = 100  # 1% merchant discount rate, for the demo


def _id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


@click.command()
@click.option("--cards", default=200, show_default=True, help="Cards to issue.")
@click.option("--seed", default=7, show_default=True)
@click.pass_context
def demo(ctx: click.Context, cards: int, seed: int) -> None:
    """Run a small day of JakartaOne through the ledger and verify it."""
    settings = ctx.find_object(Settings)
    assert settings is not None
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    ledger = Ledger(engine)
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    run = uuid.uuid4()  # each run books its own day: transfer ids stay unique
    float_, agents, fees = _id("issuer-float"), _id("agent-cash"), _id("fee-revenue")
    accounts = [
        NewAccount(float_, AccountKind.ISSUER_FLOAT, name="Issuer float (bank)"),
        NewAccount(agents, AccountKind.AGENT_RECEIVABLE, name="Agent cash"),
        NewAccount(fees, AccountKind.FEE_REVENUE, shards=16, name="Fee revenue"),
        *(NewAccount(_id(o), AccountKind.OPERATOR_PAYABLE, shards=16, name=o) for o in OPERATORS),
        *(NewAccount(_id(m), AccountKind.MERCHANT_PAYABLE, name=m) for m in MERCHANTS),
    ]
    purses = [_id(run, "card", i) for i in range(cards)]
    accounts += [
        NewAccount(p, AccountKind.CARD_PURSE, debits_must_not_exceed_credits=True,
                   max_balance=2_000_000)
        for p in purses
    ]  # fmt: skip
    ledger.create_accounts(accounts)
    click.echo(f"database: {settings.database_url}")
    click.echo(f"issued {cards} cards; loading them by bank transfer")
    loads = [Transfer.simple(_id(run, "load", p), float_, p, rng.choice([50_000, 100_000]), "load")
             for p in purses]  # fmt: skip
    ledger.submit(loads)

    spending = []
    for i in range(cards * 4):
        purse = rng.choice(purses)
        if rng.random() < 0.7:
            operator = rng.choice(list(OPERATORS))
            fare = OPERATORS[operator]
            spending.append(
                Transfer.simple(_id(run, "fare", i), purse, _id(operator), fare, "fare")
            )
        else:
            merchant = rng.choice(list(MERCHANTS))
            amount = rng.randrange(5_000, 60_000, 500)
            fee = amount * FEE_BPS // 10_000
            legs = (debit(purse, amount), credit(_id(merchant), amount - fee), credit(fees, fee))
            spending.append(Transfer(_id(run, "sale", i), legs, "purchase"))
    results = ledger.submit(spending)
    refused = [r for r in results if not r.code.succeeded]
    click.echo(f"posted {len(results) - len(refused)} fares and purchases;"
               f" {len(refused)} refused (insufficient balance on the card)")  # fmt: skip

    hold = _id(run, "agent-load")
    ledger.submit(
        [
            Transfer.simple(hold, agents, purses[0], 20_000, "load", pending=True),
            PostPending(_id(run, "agent-load-confirmed"), hold),
        ],
        BatchMode.LINKED,
    )
    click.echo("an agent cash load: reserved, then confirmed by the card")
    block = ledger.seal()
    named = [a.id for a in accounts if a.kind is not AccountKind.CARD_PURSE]
    for account in ledger.get_accounts(named).values():
        click.echo(f"  {account.name:<24} Rp {account.balance:>14,}")
    report = run_read(engine, verify)
    verdict = "all invariants hold" if report.ok else [str(v) for v in report.violations]
    click.echo(f"journal sealed to seq {block.last_seq if block else '-'}; verifier: {verdict}")
    if not report.ok:
        raise SystemExit(1)
