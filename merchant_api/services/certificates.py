"""Accepting card-signed certificates: single submissions, gate batches and load
confirmations all pass through `accept`, in the caller's transaction.

Guarantees:
- Every certificate submitted ends as exactly one of: `posted` (recorded once in
  card_transactions and, for a value, in the ledger), `duplicate` (the same bytes were
  recorded before) or `quarantined` (kept in the quarantine table with its reason and its
  raw input, sealed). Nothing is dropped, and nothing is posted twice: the transaction id
  is uuid5(card, counter), the ledger transfer id equals it, and (card, counter) is unique.
- The same (card, counter) with different bytes is `conflicting_duplicate`: two
  certificates spending one counter means a cloned card.
- Only a certificate whose MAC verifies under the back office's certificate key is posted
  (`mac_invalid` otherwise); a malformed one is quarantined with its format reason.
- A card blocked before the certificate's time is `card_blocked`; an unknown serial is
  `card_unknown`; a terminal not onboarded is `terminal_unknown`; a terminal of another
  owner (single submissions, and batches from a gate the caller does not own) is
  `terminal_not_owned`. Where a ledger rule refuses the posting (`exceeds_credits`: the
  shadow purse does not hold the value) that rule's code is the reason.
- Loads settled by card evidence (the counter binds each load cryptogram): for a pending
  load made at counter c, a credit certificate at c+1 for its amount posts it; any other
  certificate at c+1 proves the card never took it, and it is voided; a certificate at a
  later counter whose balance before the transaction exceeds the purse's posted balance
  proves the card holds value the ledger does not know yet, and the load is posted first,
  then the certificate. Otherwise the load stays pending for the nightly job; it is never
  voided while the card may hold the value.
- A load's own credit certificate arriving after the load was posted without it (by card
  evidence, its confirmation lost or its gate offline) is `posted`: recorded as the card
  transaction it is, so the card's counter chain is complete, linked to the load and to
  the load's existing post transfer, and the load notes it (`loads.card_transaction_id`).
  It moves no money: the load's value moved once, when the load was posted, and
  card_transactions.transfer_id is unique, so no second certificate can claim that post.
  A credit at the counter of a load voided by card evidence meets the certificate that
  voided it: `conflicting_duplicate`. A credit for a load voided otherwise, or for no
  load, is `credit_without_load`.

Concurrency: the cards' rows are locked (in id order) before anything is read, so two
uploads of the same card are decided one after the other.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from card_reader.certificate import (
    Certificate,
    CertificateFormatError,
    TransactionKind,
)
from ledger import PostPending, Request, Transfer, VoidPending, credit, debit
from ledger.queries import accounts_by_id
from merchant_api import chart, idempotency, schema
from merchant_api.context import ApiContext
from merchant_api.errors import ErrorCode
from merchant_api.observability import CERTIFICATES
from merchant_api.services.certificate_store import Found, Reads, Writes, store_for
from merchant_api.wib import business_date

Outcome = Literal["posted", "duplicate", "quarantined"]
Source = Literal["api", "gate_batch", "load"]

TRANSACTIONS_NAMESPACE = uuid.UUID("5a0e7d1c-2b9f-4f3e-8c61-d4b7a2e9f015")
LOADS_NAMESPACE = uuid.UUID("c7e41b90-6d25-4a8f-9e13-0b5f8d2c6a47")

# Quarantine reasons of the API's own (a certificate's format reasons and the ledger's
# result codes are used as they are).
MAC_INVALID = ErrorCode.MAC_INVALID.value
CONFLICTING_DUPLICATE = ErrorCode.CONFLICTING_DUPLICATE.value
CARD_UNKNOWN = ErrorCode.CARD_UNKNOWN.value
CARD_BLOCKED = ErrorCode.CARD_BLOCKED.value
TERMINAL_UNKNOWN = ErrorCode.TERMINAL_UNKNOWN.value
TERMINAL_NOT_OWNED = ErrorCode.TERMINAL_NOT_OWNED.value
CREDIT_WITHOUT_LOAD = ErrorCode.CREDIT_WITHOUT_LOAD.value
_RAW_PURPOSE = "quarantine"

ct, q, ld, cc = schema.card_transactions, schema.quarantine, schema.loads, schema.card_credits


def transaction_id(card_id: uuid.UUID, counter: int) -> uuid.UUID:
    return uuid.uuid5(TRANSACTIONS_NAMESPACE, f"{card_id}:{counter}")


def load_post_id(load_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(LOADS_NAMESPACE, f"post:{load_id}")


def load_void_id(load_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(LOADS_NAMESPACE, f"void:{load_id}")


@dataclass(slots=True)
class Submitted:
    """One certificate as received: its raw JSON, the certificate if it parsed, and why it
    cannot be posted whatever the database says (malformed, or its MAC does not verify)."""

    raw: Any
    cert: Certificate | None
    reason: str | None
    detail: str = ""

    @property
    def raw_bytes(self) -> bytes:
        """The input in canonical JSON (what quarantine keeps); only refused ones need it."""
        return json.dumps(
            self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @property
    def terminal_seq(self) -> int | None:
        if self.cert is not None:
            return self.cert.terminal_seq
        seq = self.raw.get("terminal_seq") if isinstance(self.raw, dict) else None
        return seq if type(seq) is int and 0 <= seq <= 0xFFFF_FFFF else None


def certificate_digest(cert: Certificate) -> bytes:
    """What identifies a certificate's exact bytes (card_transactions.certificate_digest)."""
    return hashlib.sha256(cert.to_bytes()).digest()


def parse(ctx: ApiContext, raw: Any) -> Submitted:
    """Parse and verify one certificate (no database: done before the transaction)."""
    try:
        cert = Certificate.from_json(raw)
    except CertificateFormatError as exc:
        return Submitted(raw, None, exc.reason.value, exc.field or "")
    if not ctx.certificates.verify(cert):
        return Submitted(raw, cert, MAC_INVALID)
    return Submitted(raw, cert, None)


@dataclass(slots=True)
class Decided:
    outcome: Outcome
    reason: str | None = None
    transaction_id: uuid.UUID | None = None
    quarantine_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who submits: the API key, its owner (None: issuer staff, who may submit for any
    terminal), and for a batch the uploading terminal."""

    api_key_id: uuid.UUID
    owner: uuid.UUID | None
    batch_id: uuid.UUID | None = None
    batch_terminal_code: str | None = None
    load_id: uuid.UUID | None = None


@dataclass(slots=True)
class _Plan:
    """What `accept` will write, built while deciding."""

    requests: list[Request] = field(default_factory=list)
    request_item: list[int | None] = field(default_factory=list)  # item index of a debit
    transactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (load row, new status, resolving transfer id, resolution)
    load_updates: list[tuple[Any, str, uuid.UUID, str]] = field(default_factory=list)
    # (load id, card transaction id): posted loads whose own credit certificate arrived
    late_certificates: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Group:
    """Certificates to decide together, who submitted each, and each one's card (its
    serial hash; empty for a certificate refused whatever the database says)."""

    items: list[Submitted]
    callers: list[Caller]
    serial_hashes: list[bytes]

    @classmethod
    def of(
        cls, ctx: ApiContext, items: list[Submitted], caller: Caller | Sequence[Caller]
    ) -> Group:
        """`caller` is who submitted all of them (a batch), or one caller per item (single
        submissions coalesced into one transaction)."""
        callers = [caller] * len(items) if isinstance(caller, Caller) else list(caller)
        hashes = [
            ctx.secrets.serial_hash(item.cert.card_serial)
            if item.cert is not None and item.reason is None
            else b""
            for item in items
        ]
        return cls(items, callers, hashes)

    def only(self, indexes: list[int]) -> Group:
        return Group(
            [self.items[i] for i in indexes],
            [self.callers[i] for i in indexes],
            [self.serial_hashes[i] for i in indexes],
        )

    def reads(self, claims: idempotency.Claims | None = None, *, endpoints: bool = False) -> Reads:
        """What deciding them needs from the database (and, for single submissions, their
        Idempotency-Keys' claims and the webhook endpoints their events may go to)."""
        certs = [
            (serial_hash, item.cert)
            for item, serial_hash in zip(self.items, self.serial_hashes, strict=True)
            if serial_hash and item.cert is not None
        ]
        batch_terminal = self.callers[0].batch_terminal_code if self.callers else None
        return Reads(
            serial_hashes={serial_hash for serial_hash, _ in certs},
            terminal_codes={cert.terminal_id for _, cert in certs}
            | ({batch_terminal} if batch_terminal else set()),
            transactions={(serial_hash, cert.counter) for serial_hash, cert in certs},
            claims=claims,
            endpoints=endpoints,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    decided: list[Decided]  # one for each certificate, in order
    transactions: list[dict[str, Any]]  # the card_transactions rows to write


def accept(
    conn: Connection,
    ctx: ApiContext,
    items: list[Submitted],
    caller: Caller | Sequence[Caller],
    source: Source,
    now: int,
) -> list[Decided]:
    """Decide and record `items` in the caller's write transaction; one answer each (see
    `Group.of` for `caller`). Single submissions call `decide` themselves, to send their
    own reads and writes with these (merchant_api.services.transactions)."""
    group = Group.of(ctx, items, caller)
    store = store_for(conn)
    accepted = decide(conn, ctx, group, store.read(group.reads()), source, now)
    store.write(Writes(transactions=accepted.transactions))
    return accepted.decided


def decide(
    conn: Connection, ctx: ApiContext, group: Group, found: Found, source: Source, now: int
) -> Accepted:
    """Decide `group` from what `found` holds (read with `group.reads()` in this
    transaction). The refused certificates' quarantine and the loads' resolutions are
    written here; the card transactions are returned, for the caller to write through its
    store with its own writes."""
    items, callers, serial_hashes = group.items, group.callers, group.serial_hashes
    caller = callers[0] if callers else Caller(uuid.UUID(int=1), None)
    day = business_date(now)
    certs = [
        item.cert if serial_hash else None
        for item, serial_hash in zip(items, serial_hashes, strict=True)
    ]
    cards = {row.id: row for row in found.cards}
    card_by_hash = {row.serial_hash: row for row in found.cards}
    terminals = {row.terminal_code: row for row in found.terminals}
    tx_ids = {
        i: transaction_id(card.id, cert.counter)
        for i, cert in enumerate(certs)
        if cert
        if (card := card_by_hash.get(serial_hashes[i])) is not None
    }
    existing = {row.id: row.certificate_digest for row in found.transactions}
    pending = _pending_loads(conn, [i for i, row in cards.items() if row.has_pending_load])
    purses = accounts_by_id(conn, [cards[i].purse_account_id for i in pending]) if pending else {}
    posted_balance = {
        card_id: purses[cards[card_id].purse_account_id].balance for card_id in pending
    }
    batch_terminal = terminals.get(caller.batch_terminal_code or "")
    batch_refusal = None
    if caller.batch_terminal_code is not None:
        if batch_terminal is None:
            batch_refusal = TERMINAL_UNKNOWN
        elif caller.owner is not None and batch_terminal.merchant_id != caller.owner:
            batch_refusal = TERMINAL_NOT_OWNED

    decided: list[Decided | None] = [None] * len(items)
    plan = _Plan()
    seen: dict[uuid.UUID, bytes] = {}
    first_at: dict[uuid.UUID, int] = {}  # where this call first saw each transaction
    copies: dict[int, int] = {}  # a copy of a certificate earlier in this call -> that one
    for index, item in enumerate(items):
        cert = certs[index]
        if cert is None:
            decided[index] = Decided("quarantined", item.reason)
            continue
        if batch_refusal is not None:
            decided[index] = Decided("quarantined", batch_refusal)
            continue
        card = card_by_hash.get(serial_hashes[index])
        if card is None:
            decided[index] = Decided("quarantined", CARD_UNKNOWN)
            continue
        terminal = terminals.get(cert.terminal_id)
        if terminal is None:
            decided[index] = Decided("quarantined", TERMINAL_UNKNOWN)
            continue
        forwarded = caller.batch_terminal_code is not None and (
            cert.terminal_id != caller.batch_terminal_code
        )
        owner = callers[index].owner
        if not forwarded and owner is not None and terminal.merchant_id != owner:
            decided[index] = Decided("quarantined", TERMINAL_NOT_OWNED)
            continue
        tx_id = tx_ids[index]
        digest = certificate_digest(cert)
        prior = existing.get(tx_id, seen.get(tx_id))
        if prior is not None:
            same = bytes(prior) == digest
            decided[index] = (
                Decided("duplicate", None, tx_id)
                if same
                else Decided("quarantined", CONFLICTING_DUPLICATE)
            )
            if same and tx_id not in existing:
                copies[index] = first_at[tx_id]
            continue
        if card.blocked_us is not None and cert.timestamp * 1_000_000 > card.blocked_us:
            decided[index] = Decided("quarantined", CARD_BLOCKED)
            continue
        row = _transaction_row(
            card, cert, terminal, tx_id, digest, callers[index], source, now, day
        )
        if cert.kind is TransactionKind.CREDIT:
            load = _matching_load(pending.get(card.id, []), cert)
            if load is not None:
                _settle_loads(plan, pending, card.id, cert, posted_balance, matched=load)
            else:
                load = _load_awaiting_certificate(conn, plan, card.id, cert)
                if load is None:
                    decided[index] = Decided("quarantined", CREDIT_WITHOUT_LOAD)
                    continue
                plan.late_certificates.append((load.id, tx_id))
                # Its own load is posted already; about the card's other pending loads it
                # is evidence like any certificate.
                _settle_loads(plan, pending, card.id, cert, posted_balance, matched=None)
            row.update(transfer_id=load_post_id(load.id), load_id=load.id)
            plan.transactions[index] = row
            seen[tx_id], first_at[tx_id] = digest, index
            decided[index] = Decided("posted", None, tx_id)
            continue
        _settle_loads(plan, pending, card.id, cert, posted_balance, matched=None)
        seen[tx_id], first_at[tx_id] = digest, index
        plan.transactions[index] = row
        decided[index] = Decided("posted", None, tx_id)
        if cert.amount > 0:
            plan.requests.append(_debit_transfer(card, cert, terminal, tx_id, row["fee"]))
            plan.request_item.append(index)
            if card.id in posted_balance:
                posted_balance[card.id] -= cert.amount

    results = ctx.ledger.submit_in(conn, plan.requests) if plan.requests else []
    for request_index, result in enumerate(results):
        item_index = plan.request_item[request_index]
        if item_index is None:
            if not result.code.succeeded:  # resolving a load cannot fail unless a bug does
                raise RuntimeError(f"load resolution refused: {result.code.value}")
            continue
        if not result.code.succeeded:
            decided[item_index] = Decided("quarantined", result.code.value)
            plan.transactions.pop(item_index, None)
    # A copy of a certificate earlier in this same call shares that one's fate: when the
    # ledger refused the first, nothing was recorded for the copy to be a duplicate of.
    for index, first in copies.items():
        first_decided = decided[first]
        if first_decided is not None and first_decided.outcome == "quarantined":
            decided[index] = Decided("quarantined", first_decided.reason)
    final = [d for d in decided if d is not None]
    assert len(final) == len(items), "every certificate is decided"
    _write(conn, ctx, items, final, plan, callers, source, now, day)
    for d in final:
        CERTIFICATES.labels(d.outcome, d.reason or "").inc()
    return Accepted(final, list(plan.transactions.values()))


def _pending_loads(conn: Connection, card_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    if not card_ids:
        return {}
    rows = conn.execute(
        sa.select(ld).where(ld.c.card_id.in_(card_ids), ld.c.status == "pending").order_by(ld.c.seq)
    ).all()
    found: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in rows:
        found[row.card_id].append(row)
    return dict(found)


def _matching_load(loads: list[Any], cert: Certificate) -> Any:
    return next((load for load in loads if _is_credit_for(load, cert)), None)


def _load_awaiting_certificate(
    conn: Connection, plan: _Plan, card_id: uuid.UUID, cert: Certificate
) -> Any:
    """The posted load whose own credit certificate `cert` is, arriving after the load was
    posted without it (module doc): made at the counter before `cert`'s, for its amount,
    with no card transaction recorded for it yet. Posted earlier in this same call (a
    batch whose later certificate gave the evidence), or before it."""
    for load, status, _, _ in plan.load_updates:
        if status == "posted" and _is_credit_for(load, cert):
            return load
    return conn.execute(
        sa.select(ld)
        .where(
            ld.c.card_id == card_id,
            ld.c.status == "posted",
            ld.c.card_transaction_id.is_(None),
            ld.c.card_counter == cert.counter - 1,
            ld.c.amount == cert.amount,
        )
        .order_by(ld.c.seq)
        .limit(1)
    ).first()


def _is_credit_for(load: Any, cert: Certificate) -> bool:
    return bool(load.card_counter + 1 == cert.counter and load.amount == cert.amount)


def _settle_loads(
    plan: _Plan,
    pending: dict[uuid.UUID, list[Any]],
    card_id: uuid.UUID,
    cert: Certificate,
    posted_balance: dict[uuid.UUID, int],
    matched: Any,
) -> None:
    """Resolve the card's pending loads that `cert` gives evidence about (module doc)."""
    loads = pending.get(card_id, [])
    if cert.kind is TransactionKind.DEBIT:
        before = cert.balance_after + cert.amount
    else:
        before = cert.balance_after - cert.amount
    still = []
    for load in loads:
        if load is matched:
            _resolve(plan, load, "post", "confirmed")
            posted_balance[card_id] = posted_balance.get(card_id, 0) + load.amount
        elif load.card_counter + 1 == cert.counter:
            _resolve(plan, load, "void", "card_evidence")
        elif load.card_counter + 1 < cert.counter and before > posted_balance.get(card_id, 0):
            _resolve(plan, load, "post", "card_evidence")
            posted_balance[card_id] = posted_balance.get(card_id, 0) + load.amount
        else:
            still.append(load)
    pending[card_id] = still


def _resolve(plan: _Plan, load: Any, action: str, resolution: str) -> None:
    if action == "post":
        request: Request = PostPending(load_post_id(load.id), load.id)
        plan.load_updates.append((load, "posted", load_post_id(load.id), resolution))
    else:
        request = VoidPending(load_void_id(load.id), load.id)
        plan.load_updates.append((load, "voided", load_void_id(load.id), resolution))
    plan.requests.append(request)
    plan.request_item.append(None)


def _transaction_row(
    card: Any,
    cert: Certificate,
    terminal: Any,
    tx_id: uuid.UUID,
    digest: bytes,
    caller: Caller,
    source: Source,
    now: int,
    day: str,
) -> dict[str, Any]:
    fee = chart.mdr_fee(cert.amount, terminal.mdr_bps) if cert.kind is TransactionKind.DEBIT else 0
    return {
        "id": tx_id,
        "card_id": card.id,
        "card_counter": cert.counter,
        "kind": cert.kind.value,
        "amount": cert.amount,
        "balance_after": cert.balance_after,
        "fee": fee,
        "merchant_id": terminal.merchant_id,
        "terminal_id": terminal.id,
        "terminal_code": cert.terminal_id,
        "terminal_seq": cert.terminal_seq,
        "card_time_us": cert.timestamp * 1_000_000,
        "journey": json.dumps(cert.journey.to_json(), sort_keys=True) if cert.journey else None,
        "mac": cert.mac,
        "certificate_digest": digest,
        "transfer_id": tx_id if cert.amount > 0 else None,
        "source": source,
        "batch_id": caller.batch_id,
        "load_id": None,
        "refunded_amount": 0,
        "business_date": day,
        "created_us": now,
    }


def _debit_transfer(
    card: Any, cert: Certificate, terminal: Any, tx_id: uuid.UUID, fee: int
) -> Transfer:
    net = cert.amount - fee
    postings = [debit(card.purse_account_id, cert.amount)]
    if net > 0:
        postings.append(credit(terminal.payable_account_id, net))
    if fee > 0:
        postings.append(credit(chart.FEE_REVENUE, fee))
    kind = "fare" if terminal.owner_kind == "operator" else "card_debit"
    return Transfer(
        tx_id,
        tuple(postings),
        kind,
        metadata={
            "card_id": str(card.id),
            "counter": cert.counter,
            "terminal": cert.terminal_id,
            "terminal_seq": cert.terminal_seq,
        },
    )


def _write(
    conn: Connection,
    ctx: ApiContext,
    items: list[Submitted],
    decided: list[Decided],
    plan: _Plan,
    callers: list[Caller],
    source: Source,
    now: int,
    day: str,
) -> None:
    if plan.load_updates:
        # One statement for the batch's loads (a personalization batch confirms hundreds).
        credit_tx = {
            row["load_id"]: row["id"] for row in plan.transactions.values() if row.get("load_id")
        }
        conn.execute(
            sa.update(ld)
            .where(ld.c.id == sa.bindparam("load_id"))
            .values(
                status=sa.bindparam("new_status"),
                resolution=sa.bindparam("new_resolution"),
                resolution_transfer_id=sa.bindparam("transfer_id"),
                card_transaction_id=sa.bindparam("card_tx"),
                resolved_us=now,
            ),
            [
                {
                    "load_id": load.id,
                    "new_status": status,
                    "new_resolution": resolution,
                    "transfer_id": transfer_id,
                    "card_tx": credit_tx.get(load.id),
                }
                for load, status, transfer_id, resolution in plan.load_updates
            ],
        )
    if plan.late_certificates:
        # The load keeps its status and resolution: only its certificate is new.
        conn.execute(
            sa.update(ld)
            .where(ld.c.id == sa.bindparam("load_id"))
            .values(card_transaction_id=sa.bindparam("card_tx")),
            [{"load_id": load_id, "card_tx": tx_id} for load_id, tx_id in plan.late_certificates],
        )
    for load, status, _, _ in plan.load_updates:
        if load.card_credit_id is not None:
            credit_follows_load(conn, load, status, now)
    _quarantine(conn, ctx, items, decided, callers, source, now, day)


def credit_follows_load(conn: Connection, load: Any, status: str, now: int) -> None:
    """A card credit is loaded when its load posts, and pending again if it was voided."""
    if status == "posted":
        conn.execute(
            sa.update(cc)
            .where(cc.c.id == load.card_credit_id)
            .values(status="loaded", loaded_us=now)
        )
    else:
        conn.execute(
            sa.update(cc)
            .where(cc.c.id == load.card_credit_id)
            .values(status="pending", load_id=None)
        )


def quarantine_source(source: Source) -> str:
    return {"api": "card_transaction", "gate_batch": "gate_batch", "load": "load_confirmation"}[
        source
    ]


def _quarantine(
    conn: Connection,
    ctx: ApiContext,
    items: list[Submitted],
    decided: list[Decided],
    callers: list[Caller],
    source: Source,
    now: int,
    day: str,
) -> None:
    """Keep every refused certificate with its reason; the same input refused for the same
    reason again is not stored twice (the first record answers for it)."""
    raw_bytes = {i: items[i].raw_bytes for i, d in enumerate(decided) if d.outcome == "quarantined"}
    wanted = [(i, hashlib.sha256(raw).digest()) for i, raw in raw_bytes.items()]
    if not wanted:
        return
    known = {
        (bytes(row.raw_digest), row.reason): row.id
        for row in conn.execute(
            sa.select(q.c.id, q.c.raw_digest, q.c.reason).where(
                q.c.raw_digest.in_({digest for _, digest in wanted})
            )
        )
    }
    # The cards the refused certificates name, in one statement however many there are.
    lookups = {
        index: ctx.secrets.serial_hash(cert.card_serial)
        for index, _ in wanted
        if (cert := items[index].cert) is not None
    }
    card_ids = (
        {
            row.serial_hash: row.id
            for row in conn.execute(
                sa.select(schema.cards.c.id, schema.cards.c.serial_hash).where(
                    schema.cards.c.serial_hash.in_(set(lookups.values()))
                )
            )
        }
        if lookups
        else {}
    )
    rows = []
    for index, digest in wanted:
        reason = decided[index].reason or "unknown"
        found = known.get((digest, reason))
        if found is not None:
            decided[index].quarantine_id = found
            continue
        item = items[index]
        caller = callers[index]
        cert = item.cert
        card_id = card_ids.get(lookups[index]) if index in lookups else None
        raw_terminal = item.raw.get("terminal_id") if isinstance(item.raw, dict) else None
        terminal_code = (
            cert.terminal_id
            if cert
            else (
                raw_terminal
                if isinstance(raw_terminal, str)
                and len(raw_terminal) <= 64
                and raw_terminal.isprintable()  # a NUL cannot be stored in PostgreSQL text
                else None
            )
        )
        quarantine_id = uuid.uuid4()
        known[(digest, reason)] = quarantine_id
        decided[index].quarantine_id = quarantine_id
        rows.append(
            {
                "id": quarantine_id,
                "source": quarantine_source(source),
                "reason": reason,
                "detail": item.detail[:256],
                "merchant_id": caller.owner,
                "api_key_id": caller.api_key_id,
                "batch_id": caller.batch_id,
                "load_id": caller.load_id,
                "terminal_code": terminal_code,
                "terminal_seq": item.terminal_seq,
                "card_id": card_id,
                "card_counter": cert.counter if cert else None,
                "amount": cert.amount if cert else None,
                "raw_digest": digest,
                "raw_sealed": ctx.secrets.seal(_RAW_PURPOSE, raw_bytes[index]),
                "status": "open",
                "business_date": day,
                "received_us": now,
            }
        )
    if rows:
        conn.execute(sa.insert(q), rows)
