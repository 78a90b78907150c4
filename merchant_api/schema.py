"""The merchant API's tables, as SQLAlchemy Core metadata (migration 0002 makes them).

Times are microseconds since the Unix epoch (BIGINT, `*_us`), business days are
'YYYY-MM-DD' in Jakarta time (WIB, UTC+7), money is integer rupiah (BIGINT). Every table
that the API lists has an integer `seq` (insertion order, the pagination cursor's key) and a
public `id` (UUID). Every constraint is named.

What the database itself enforces, whatever the application does:
- one accepted card transaction per (card, card counter): `uq_card_transactions_card_counter`;
- one settlement per owner and business day: `uq_settlements_merchant_business_date`,
  and one payout per settlement;
- one pending credit and one load per refund or replacement, one card per serial hash;
- a refund never exceeds what remains of its transaction: `ck_card_transactions_refunds`;
- card serials are never stored in clear: cards hold a keyed hash (lookup), the hotlist
  identifier (docs/card-protocol.md) and the serial sealed with AES-GCM (for the back
  office's key diversification only).

The nightly job (reconciliation/) reads: merchants, terminals, cards, card_transactions,
gate_batches, quarantine, loads, refunds, card_credits, settlements and payouts.
"""

from __future__ import annotations

import sqlalchemy as sa

from ledger.schema import NAMING_CONVENTION

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-assigns an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets BIGINT.
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _seq() -> sa.Column[int]:
    return sa.Column("seq", SeqType, primary_key=True, autoincrement=True)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Uuid, nullable=False, unique=True)


def _money(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


# Merchants and transit operators: the owners of terminals and of a payable account.
merchants = sa.Table(
    "merchants",
    metadata,
    _seq(),
    _id(),
    sa.Column("kind", sa.String(16), nullable=False),  # merchant | operator
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("mcc", sa.String(4), nullable=False),  # ISO 18245
    sa.Column("kota", sa.String(64), nullable=False),
    sa.Column("kecamatan", sa.String(64), nullable=False),
    sa.Column("mdr_bps", sa.Integer, nullable=False),  # fee in basis points of each sale
    sa.Column("load_agent", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("payout_bank_account", sa.String(64), nullable=False, server_default=""),
    sa.Column("payable_account_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("kind IN ('merchant', 'operator')", name="kind_known"),
    sa.CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
    sa.CheckConstraint("mdr_bps BETWEEN 0 AND 1000", name="mdr_range"),
    sa.CheckConstraint("length(mcc) = 4", name="mcc_length"),
)

# Terminals: merchant POS terminals and transit gates, each bound to one owner.
terminals = sa.Table(
    "terminals",
    metadata,
    _seq(),
    _id(),
    sa.Column("terminal_code", sa.String(32), nullable=False, unique=True),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # pos | gate
    sa.Column("line", sa.String(64), nullable=True),
    sa.Column("station", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("kind IN ('pos', 'gate')", name="kind_known"),
    sa.CheckConstraint("status IN ('active', 'retired')", name="status_known"),
)
sa.Index("ix_terminals_merchant_id", terminals.c.merchant_id)

# API keys: only SHA-256 of the secret part is kept; `prefix` is the public key id.
api_keys = sa.Table(
    "api_keys",
    metadata,
    _seq(),
    _id(),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=True),
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=True),
    sa.Column("revoked_us", sa.BigInteger, nullable=True),
    sa.CheckConstraint(
        "scope IN ('merchant', 'gate-operator', 'issuer-admin', 'analyst')", name="scope_known"
    ),
    sa.CheckConstraint(
        "(merchant_id IS NOT NULL) = (scope IN ('merchant', 'gate-operator'))",
        name="owner_by_scope",
    ),
)

# Cards: the shadow of each chip. The serial is never stored in clear.
cards = sa.Table(
    "cards",
    metadata,
    _seq(),
    _id(),
    sa.Column("serial_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("serial_sealed", sa.LargeBinary, nullable=False),
    sa.Column("hotlist_id", sa.String(64), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("registered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("holder_reference", sa.String(64), nullable=True),
    sa.Column("purse_account_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("replaces_card_id", sa.Uuid, nullable=True),
    sa.Column("replaced_by_card_id", sa.Uuid, nullable=True),
    sa.Column("blocked_us", sa.BigInteger, nullable=True),
    sa.Column("block_reason", sa.String(32), nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("status IN ('active', 'blocked', 'replaced')", name="status_known"),
    sa.CheckConstraint("NOT registered OR holder_reference IS NOT NULL", name="registered_holder"),
    sa.CheckConstraint("(status = 'active') = (blocked_us IS NULL)", name="blocked_time"),
)

# Accepted card-signed transactions: exactly one row per (card, card counter).
card_transactions = sa.Table(
    "card_transactions",
    metadata,
    _seq(),
    _id(),  # uuid5 of (card, counter): the same id for every upload of one certificate
    sa.Column("card_id", sa.Uuid, sa.ForeignKey("cards.id"), nullable=False),
    sa.Column("card_counter", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # debit | credit
    _money("amount"),
    _money("balance_after"),
    _money("fee"),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=True),
    sa.Column("terminal_id", sa.Uuid, sa.ForeignKey("terminals.id"), nullable=True),
    sa.Column("terminal_code", sa.String(32), nullable=False),
    sa.Column("terminal_seq", sa.BigInteger, nullable=False),
    sa.Column("card_time_us", sa.BigInteger, nullable=False),  # the certificate's timestamp
    sa.Column("journey", sa.Text, nullable=True),  # the certificate's journey data, JSON
    sa.Column("mac", sa.LargeBinary, nullable=False),
    sa.Column("certificate_digest", sa.LargeBinary(32), nullable=False),
    # The ledger transfer: the debit, or the load's post; NULL for a zero-amount tap-in.
    sa.Column("transfer_id", sa.Uuid, nullable=True, unique=True),
    sa.Column("source", sa.String(16), nullable=False),  # api | gate_batch | load
    sa.Column("batch_id", sa.Uuid, nullable=True),
    sa.Column("load_id", sa.Uuid, nullable=True),
    _money("refunded_amount"),
    sa.Column("business_date", sa.String(10), nullable=False),  # WIB day of acceptance
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("card_id", "card_counter", name="uq_card_transactions_card_counter"),
    sa.CheckConstraint("kind IN ('debit', 'credit')", name="kind_known"),
    sa.CheckConstraint("source IN ('api', 'gate_batch', 'load')", name="source_known"),
    sa.CheckConstraint("amount >= 0 AND balance_after >= 0 AND fee >= 0", name="amounts"),
    sa.CheckConstraint("fee <= amount", name="fee_within_amount"),
    sa.CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refunds"),
    sa.CheckConstraint("kind = 'credit' OR merchant_id IS NOT NULL", name="debit_has_merchant"),
    sa.CheckConstraint("(transfer_id IS NULL) = (amount = 0)", name="transfer_when_value"),
)
sa.Index(
    "ix_card_transactions_merchant_seq", card_transactions.c.merchant_id, card_transactions.c.seq
)
sa.Index(
    "ix_card_transactions_terminal_seq",
    card_transactions.c.terminal_id,
    card_transactions.c.terminal_seq,
)
sa.Index(
    "ix_card_transactions_business_date",
    card_transactions.c.business_date,
    card_transactions.c.merchant_id,
)

# Gate (and offline terminal) batches, stored with their answer so that a retry replays it.
gate_batches = sa.Table(
    "gate_batches",
    metadata,
    _seq(),
    _id(),  # the batch id the gate chose
    sa.Column("terminal_id", sa.Uuid, sa.ForeignKey("terminals.id"), nullable=False),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("api_key_id", sa.Uuid, nullable=False),
    sa.Column("first_terminal_seq", sa.BigInteger, nullable=False),
    sa.Column("last_terminal_seq", sa.BigInteger, nullable=False),
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("posted_count", sa.Integer, nullable=False),
    sa.Column("duplicate_count", sa.Integer, nullable=False),
    sa.Column("quarantined_count", sa.Integer, nullable=False),
    sa.Column("request_digest", sa.LargeBinary(32), nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("first_terminal_seq <= last_terminal_seq", name="seq_range"),
    sa.CheckConstraint(
        "item_count = posted_count + duplicate_count + quarantined_count", name="counts"
    ),
)
sa.Index(
    "ix_gate_batches_terminal_first_seq",
    gate_batches.c.terminal_id,
    gate_batches.c.first_terminal_seq,
)

# Every refused certificate or load confirmation, with its reason and the raw input
# (sealed with AES-GCM, because it holds the card serial). Nothing is ever dropped.
quarantine = sa.Table(
    "quarantine",
    metadata,
    _seq(),
    _id(),
    sa.Column("source", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(48), nullable=False),
    sa.Column("detail", sa.String(256), nullable=False, server_default=""),
    sa.Column("merchant_id", sa.Uuid, nullable=True),  # the caller's owner, if any
    sa.Column("api_key_id", sa.Uuid, nullable=True),
    sa.Column("batch_id", sa.Uuid, nullable=True),
    sa.Column("load_id", sa.Uuid, nullable=True),
    sa.Column("terminal_code", sa.String(64), nullable=True),
    sa.Column("terminal_seq", sa.BigInteger, nullable=True),
    sa.Column("card_id", sa.Uuid, nullable=True),
    sa.Column("card_counter", sa.BigInteger, nullable=True),
    sa.Column("amount", sa.BigInteger, nullable=True),
    sa.Column("raw_digest", sa.LargeBinary(32), nullable=False),
    sa.Column("raw_sealed", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("raw_digest", "reason", name="uq_quarantine_raw_digest_reason"),
    sa.CheckConstraint(
        "source IN ('card_transaction', 'gate_batch', 'load_confirmation')", name="source_known"
    ),
    sa.CheckConstraint("status IN ('open', 'resolved')", name="status_known"),
)
sa.Index("ix_quarantine_business_date", quarantine.c.business_date)

# Value waiting to be loaded onto a card: refunds and a replaced card's balance.
card_credits = sa.Table(
    "card_credits",
    metadata,
    _seq(),
    _id(),
    sa.Column("card_id", sa.Uuid, sa.ForeignKey("cards.id"), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # refund | replacement
    sa.Column("source_id", sa.Uuid, nullable=False, unique=True),
    _money("amount"),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("load_id", sa.Uuid, nullable=True, unique=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("loaded_us", sa.BigInteger, nullable=True),
    sa.CheckConstraint("source IN ('refund', 'replacement')", name="source_known"),
    sa.CheckConstraint("status IN ('pending', 'loading', 'loaded')", name="status_known"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
)
sa.Index("ix_card_credits_card_status", card_credits.c.card_id, card_credits.c.status)

# Loads (top-ups): a pending ledger transfer to the card, posted on the card's evidence.
loads = sa.Table(
    "loads",
    metadata,
    _seq(),
    _id(),  # also the id of the pending ledger transfer
    sa.Column("card_id", sa.Uuid, sa.ForeignKey("cards.id"), nullable=False),
    _money("amount"),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("agent_merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=True),
    sa.Column("card_credit_id", sa.Uuid, nullable=True, unique=True),
    sa.Column("card_counter", sa.BigInteger, nullable=False),  # the cryptogram is bound to it
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("resolution", sa.String(24), nullable=True),
    sa.Column("resolution_transfer_id", sa.Uuid, nullable=True),
    sa.Column("card_transaction_id", sa.Uuid, nullable=True),
    sa.Column("month", sa.String(7), nullable=False),  # 'YYYY-MM' in WIB, for BI's limit
    sa.Column("api_key_id", sa.Uuid, nullable=False),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("resolved_us", sa.BigInteger, nullable=True),
    sa.CheckConstraint(
        "channel IN ('agent_cash', 'bank_transfer', 'card_credit')", name="channel_known"
    ),
    sa.CheckConstraint("status IN ('pending', 'posted', 'voided')", name="status_known"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("(channel = 'card_credit') = (card_credit_id IS NOT NULL)", name="credit"),
    sa.CheckConstraint("(status = 'pending') = (resolution IS NULL)", name="resolution"),
)
sa.Index("ix_loads_card_status", loads.c.card_id, loads.c.status)
sa.Index("ix_loads_card_month", loads.c.card_id, loads.c.month)

refunds = sa.Table(
    "refunds",
    metadata,
    _seq(),
    _id(),  # also the ledger transfer id
    sa.Column(
        "card_transaction_id", sa.Uuid, sa.ForeignKey("card_transactions.id"), nullable=False
    ),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("card_id", sa.Uuid, sa.ForeignKey("cards.id"), nullable=False),
    _money("amount"),
    sa.Column("reason", sa.String(128), nullable=False, server_default=""),
    sa.Column("card_credit_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
)
sa.Index("ix_refunds_merchant_seq", refunds.c.merchant_id, refunds.c.seq)
sa.Index("ix_refunds_business_date", refunds.c.business_date, refunds.c.merchant_id)

# One settlement per owner and business day: settling twice is impossible.
settlements = sa.Table(
    "settlements",
    metadata,
    _seq(),
    _id(),  # also the ledger transfer id of the payout posting, when there is one
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("business_date", sa.String(10), nullable=False),
    sa.Column("transaction_count", sa.Integer, nullable=False),
    _money("gross_amount"),
    _money("fee_amount"),
    _money("refund_amount"),
    _money("carried_in"),  # a negative net carried from the previous settlement
    _money("net_amount"),  # gross - fees - refunds + carried_in
    _money("payout_amount"),  # max(net, 0)
    sa.Column("transfer_id", sa.Uuid, nullable=True, unique=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "merchant_id", "business_date", name="uq_settlements_merchant_business_date"
    ),
    sa.CheckConstraint(
        "net_amount = gross_amount - fee_amount - refund_amount + carried_in", name="net"
    ),
    sa.CheckConstraint(
        "payout_amount = CASE WHEN net_amount > 0 THEN net_amount ELSE 0 END", name="payout"
    ),
    sa.CheckConstraint("carried_in <= 0", name="carry_negative"),
    sa.CheckConstraint("(transfer_id IS NULL) = (payout_amount = 0)", name="transfer"),
)

payouts = sa.Table(
    "payouts",
    metadata,
    _seq(),
    _id(),
    sa.Column(
        "settlement_id", sa.Uuid, sa.ForeignKey("settlements.id"), nullable=False, unique=True
    ),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("business_date", sa.String(10), nullable=False),
    _money("amount"),
    sa.Column("bank_account", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="instructed"),
    sa.Column("bank_reference", sa.String(64), nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("paid_us", sa.BigInteger, nullable=True),
    sa.CheckConstraint("status IN ('instructed', 'paid', 'failed')", name="status_known"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
)

# The hotlist: every block and unblock, numbered; gates download what is new since N.
hotlist_entries = sa.Table(
    "hotlist_entries",
    metadata,
    sa.Column("version", SeqType, primary_key=True, autoincrement=True),
    sa.Column("card_id", sa.Uuid, sa.ForeignKey("cards.id"), nullable=False),
    sa.Column("hotlist_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("action IN ('block', 'unblock')", name="action_known"),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    _seq(),
    _id(),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # JSON list of event types, or ["*"]
    sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
    sa.Column("previous_secret_sealed", sa.LargeBinary, nullable=True),
    sa.Column("previous_secret_expires_us", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="enabled"),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.CheckConstraint("status IN ('enabled', 'disabled')", name="status_known"),
)
sa.Index("ix_webhook_endpoints_merchant_id", webhook_endpoints.c.merchant_id)

# Events, written in the same transaction as the change they describe (the outbox).
events = sa.Table(
    "events",
    metadata,
    _seq(),
    _id(),
    sa.Column("merchant_id", sa.Uuid, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("type", sa.String(48), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)
sa.Index("ix_events_merchant_seq", events.c.merchant_id, events.c.seq)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _seq(),
    sa.Column("event_id", sa.Uuid, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("endpoint_id", sa.Uuid, sa.ForeignKey("webhook_endpoints.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_us", sa.BigInteger, nullable=False),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(256), nullable=True),
    sa.Column("delivered_us", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
)
sa.Index(
    "ix_webhook_deliveries_due", webhook_deliveries.c.status, webhook_deliveries.c.next_attempt_us
)

# Idempotency records, per API key and Idempotency-Key, kept at least 24 hours.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("api_key_id", sa.Uuid, nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("request_digest", sa.LargeBinary(32), nullable=False),
    sa.Column("claim", sa.Uuid, nullable=False),  # the attempt that holds the key now
    sa.Column("locked_until_us", sa.BigInteger, nullable=False),
    sa.Column("response_status", sa.Integer, nullable=True),  # NULL while in flight
    sa.Column("response_body", sa.LargeBinary, nullable=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("api_key_id", "key"),
)
sa.Index("ix_idempotency_keys_created_us", idempotency_keys.c.created_us)
