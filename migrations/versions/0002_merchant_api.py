"""The merchant API: merchants and operators, terminals, API keys, cards and the hotlist,
accepted card transactions, gate batches, quarantine, loads, refunds, card credits,
settlements and payouts, webhooks and their outbox, idempotency records.

The tables are described in merchant_api/schema.py (a test proves the two agree).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("serial_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("serial_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("hotlist_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("registered", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("holder_reference", sa.String(length=64), nullable=True),
        sa.Column("purse_account_id", sa.Uuid(), nullable=False),
        sa.Column("replaces_card_id", sa.Uuid(), nullable=True),
        sa.Column("replaced_by_card_id", sa.Uuid(), nullable=True),
        sa.Column("blocked_us", sa.BigInteger(), nullable=True),
        sa.Column("block_reason", sa.String(length=32), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(status = 'active') = (blocked_us IS NULL)", name=op.f("ck_cards_blocked_time")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'blocked', 'replaced')", name=op.f("ck_cards_status_known")
        ),
        sa.CheckConstraint(
            "NOT registered OR holder_reference IS NOT NULL",
            name=op.f("ck_cards_registered_holder"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_cards")),
        sa.UniqueConstraint("hotlist_id", name=op.f("uq_cards_hotlist_id")),
        sa.UniqueConstraint("id", name=op.f("uq_cards_id")),
        sa.UniqueConstraint("purse_account_id", name=op.f("uq_cards_purse_account_id")),
        sa.UniqueConstraint("serial_hash", name=op.f("uq_cards_serial_hash")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("claim", sa.Uuid(), nullable=False),
        sa.Column("locked_until_us", sa.BigInteger(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_us", "idempotency_keys", ["created_us"], unique=False
    )

    op.create_table(
        "merchants",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("mcc", sa.String(length=4), nullable=False),
        sa.Column("kota", sa.String(length=64), nullable=False),
        sa.Column("kecamatan", sa.String(length=64), nullable=False),
        sa.Column("mdr_bps", sa.Integer(), nullable=False),
        sa.Column("load_agent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("payout_bank_account", sa.String(length=64), server_default="", nullable=False),
        sa.Column("payable_account_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('merchant', 'operator')", name=op.f("ck_merchants_kind_known")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("ck_merchants_status_known")
        ),
        sa.CheckConstraint("length(mcc) = 4", name=op.f("ck_merchants_mcc_length")),
        sa.CheckConstraint("mdr_bps BETWEEN 0 AND 1000", name=op.f("ck_merchants_mdr_range")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_merchants")),
        sa.UniqueConstraint("id", name=op.f("uq_merchants_id")),
        sa.UniqueConstraint("payable_account_id", name=op.f("uq_merchants_payable_account_id")),
    )
    op.create_table(
        "quarantine",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=48), nullable=False),
        sa.Column("detail", sa.String(length=256), server_default="", nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("load_id", sa.Uuid(), nullable=True),
        sa.Column("terminal_code", sa.String(length=64), nullable=True),
        sa.Column("terminal_seq", sa.BigInteger(), nullable=True),
        sa.Column("card_id", sa.Uuid(), nullable=True),
        sa.Column("card_counter", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("raw_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("raw_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "source IN ('card_transaction', 'gate_batch', 'load_confirmation')",
            name=op.f("ck_quarantine_source_known"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'resolved')", name=op.f("ck_quarantine_status_known")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_quarantine")),
        sa.UniqueConstraint("id", name=op.f("uq_quarantine_id")),
        sa.UniqueConstraint("raw_digest", "reason", name="uq_quarantine_raw_digest_reason"),
    )
    op.create_index("ix_quarantine_business_date", "quarantine", ["business_date"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=128), server_default="", nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=True),
        sa.Column("revoked_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(merchant_id IS NOT NULL) = (scope IN ('merchant', 'gate-operator'))",
            name=op.f("ck_api_keys_owner_by_scope"),
        ),
        sa.CheckConstraint(
            "scope IN ('merchant', 'gate-operator', 'issuer-admin', 'analyst')",
            name=op.f("ck_api_keys_scope_known"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_api_keys_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("id", name=op.f("uq_api_keys_id")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "card_credits",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("load_id", sa.Uuid(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("loaded_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "source IN ('refund', 'replacement')", name=op.f("ck_card_credits_source_known")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'loading', 'loaded')", name=op.f("ck_card_credits_status_known")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_card_credits_amount_positive")),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_credits_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_card_credits")),
        sa.UniqueConstraint("id", name=op.f("uq_card_credits_id")),
        sa.UniqueConstraint("load_id", name=op.f("uq_card_credits_load_id")),
        sa.UniqueConstraint("source_id", name=op.f("uq_card_credits_source_id")),
    )
    op.create_index(
        "ix_card_credits_card_status", "card_credits", ["card_id", "status"], unique=False
    )

    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_events_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("id", name=op.f("uq_events_id")),
    )
    op.create_index("ix_events_merchant_seq", "events", ["merchant_id", "seq"], unique=False)

    op.create_table(
        "hotlist_entries",
        sa.Column(
            "version",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("hotlist_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "action IN ('block', 'unblock')", name=op.f("ck_hotlist_entries_action_known")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_hotlist_entries_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_hotlist_entries")),
    )
    op.create_table(
        "loads",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("agent_merchant_id", sa.Uuid(), nullable=True),
        sa.Column("card_credit_id", sa.Uuid(), nullable=True),
        sa.Column("card_counter", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("resolution", sa.String(length=24), nullable=True),
        sa.Column("resolution_transfer_id", sa.Uuid(), nullable=True),
        sa.Column("card_transaction_id", sa.Uuid(), nullable=True),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("resolved_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(channel = 'card_credit') = (card_credit_id IS NOT NULL)", name=op.f("ck_loads_credit")
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (resolution IS NULL)", name=op.f("ck_loads_resolution")
        ),
        sa.CheckConstraint(
            "channel IN ('agent_cash', 'bank_transfer', 'card_credit')",
            name=op.f("ck_loads_channel_known"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'posted', 'voided')", name=op.f("ck_loads_status_known")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_loads_amount_positive")),
        sa.ForeignKeyConstraint(
            ["agent_merchant_id"],
            ["merchants.id"],
            name=op.f("fk_loads_agent_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_loads_card_id_cards")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_loads")),
        sa.UniqueConstraint("card_credit_id", name=op.f("uq_loads_card_credit_id")),
        sa.UniqueConstraint("id", name=op.f("uq_loads_id")),
    )
    op.create_index("ix_loads_card_month", "loads", ["card_id", "month"], unique=False)
    op.create_index("ix_loads_card_status", "loads", ["card_id", "status"], unique=False)

    op.create_table(
        "settlements",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("transaction_count", sa.Integer(), nullable=False),
        sa.Column("gross_amount", sa.BigInteger(), nullable=False),
        sa.Column("fee_amount", sa.BigInteger(), nullable=False),
        sa.Column("refund_amount", sa.BigInteger(), nullable=False),
        sa.Column("carried_in", sa.BigInteger(), nullable=False),
        sa.Column("net_amount", sa.BigInteger(), nullable=False),
        sa.Column("payout_amount", sa.BigInteger(), nullable=False),
        sa.Column("transfer_id", sa.Uuid(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(transfer_id IS NULL) = (payout_amount = 0)", name=op.f("ck_settlements_transfer")
        ),
        sa.CheckConstraint("carried_in <= 0", name=op.f("ck_settlements_carry_negative")),
        sa.CheckConstraint(
            "net_amount = gross_amount - fee_amount - refund_amount + carried_in",
            name=op.f("ck_settlements_net"),
        ),
        sa.CheckConstraint(
            "payout_amount = CASE WHEN net_amount > 0 THEN net_amount ELSE 0 END",
            name=op.f("ck_settlements_payout"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_settlements_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_settlements")),
        sa.UniqueConstraint("id", name=op.f("uq_settlements_id")),
        sa.UniqueConstraint(
            "merchant_id", "business_date", name="uq_settlements_merchant_business_date"
        ),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_settlements_transfer_id")),
    )
    op.create_table(
        "terminals",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("terminal_code", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("line", sa.String(length=64), nullable=True),
        sa.Column("station", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('pos', 'gate')", name=op.f("ck_terminals_kind_known")),
        sa.CheckConstraint(
            "status IN ('active', 'retired')", name=op.f("ck_terminals_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_terminals_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_terminals")),
        sa.UniqueConstraint("id", name=op.f("uq_terminals_id")),
        sa.UniqueConstraint("terminal_code", name=op.f("uq_terminals_terminal_code")),
    )
    op.create_index("ix_terminals_merchant_id", "terminals", ["merchant_id"], unique=False)

    op.create_table(
        "webhook_endpoints",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_us", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="enabled", nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status IN ('enabled', 'disabled')", name=op.f("ck_webhook_endpoints_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_webhook_endpoints_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("id", name=op.f("uq_webhook_endpoints_id")),
    )
    op.create_index(
        "ix_webhook_endpoints_merchant_id", "webhook_endpoints", ["merchant_id"], unique=False
    )

    op.create_table(
        "card_transactions",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("card_counter", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("terminal_id", sa.Uuid(), nullable=True),
        sa.Column("terminal_code", sa.String(length=32), nullable=False),
        sa.Column("terminal_seq", sa.BigInteger(), nullable=False),
        sa.Column("card_time_us", sa.BigInteger(), nullable=False),
        sa.Column("journey", sa.Text(), nullable=True),
        sa.Column("mac", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("transfer_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("load_id", sa.Uuid(), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind = 'credit' OR merchant_id IS NOT NULL",
            name=op.f("ck_card_transactions_debit_has_merchant"),
        ),
        sa.CheckConstraint(
            "kind IN ('debit', 'credit')", name=op.f("ck_card_transactions_kind_known")
        ),
        sa.CheckConstraint(
            "source IN ('api', 'gate_batch', 'load')",
            name=op.f("ck_card_transactions_source_known"),
        ),
        sa.CheckConstraint(
            "(transfer_id IS NULL) = (amount = 0)",
            name=op.f("ck_card_transactions_transfer_when_value"),
        ),
        sa.CheckConstraint(
            "amount >= 0 AND balance_after >= 0 AND fee >= 0",
            name=op.f("ck_card_transactions_amounts"),
        ),
        sa.CheckConstraint("fee <= amount", name=op.f("ck_card_transactions_fee_within_amount")),
        sa.CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= amount",
            name=op.f("ck_card_transactions_refunds"),
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_transactions_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_card_transactions_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_card_transactions_terminal_id_terminals"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_card_transactions")),
        sa.UniqueConstraint("card_id", "card_counter", name="uq_card_transactions_card_counter"),
        sa.UniqueConstraint("id", name=op.f("uq_card_transactions_id")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_card_transactions_transfer_id")),
    )
    op.create_index(
        "ix_card_transactions_business_date",
        "card_transactions",
        ["business_date", "merchant_id"],
        unique=False,
    )
    op.create_index(
        "ix_card_transactions_merchant_seq",
        "card_transactions",
        ["merchant_id", "seq"],
        unique=False,
    )
    op.create_index(
        "ix_card_transactions_terminal_seq",
        "card_transactions",
        ["terminal_id", "terminal_seq"],
        unique=False,
    )

    op.create_table(
        "gate_batches",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("terminal_id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("first_terminal_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_terminal_seq", sa.BigInteger(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("posted_count", sa.Integer(), nullable=False),
        sa.Column("duplicate_count", sa.Integer(), nullable=False),
        sa.Column("quarantined_count", sa.Integer(), nullable=False),
        sa.Column("request_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("received_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "first_terminal_seq <= last_terminal_seq", name=op.f("ck_gate_batches_seq_range")
        ),
        sa.CheckConstraint(
            "item_count = posted_count + duplicate_count + quarantined_count",
            name=op.f("ck_gate_batches_counts"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_gate_batches_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_gate_batches_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_gate_batches")),
        sa.UniqueConstraint("id", name=op.f("uq_gate_batches_id")),
    )
    op.create_index(
        "ix_gate_batches_terminal_first_seq",
        "gate_batches",
        ["terminal_id", "first_terminal_seq"],
        unique=False,
    )

    op.create_table(
        "payouts",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("settlement_id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("bank_account", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="instructed", nullable=False),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("paid_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('instructed', 'paid', 'failed')", name=op.f("ck_payouts_status_known")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payouts_amount_positive")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_payouts_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"], ["settlements.id"], name=op.f("fk_payouts_settlement_id_settlements")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_payouts")),
        sa.UniqueConstraint("id", name=op.f("uq_payouts_id")),
        sa.UniqueConstraint("settlement_id", name=op.f("uq_payouts_settlement_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=256), nullable=True),
        sa.Column("delivered_us", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_deliveries_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_webhook_deliveries_event_id_events")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["status", "next_attempt_us"],
        unique=False,
    )

    op.create_table(
        "refunds",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("card_transaction_id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=128), server_default="", nullable=False),
        sa.Column("card_credit_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_refunds_card_id_cards")),
        sa.ForeignKeyConstraint(
            ["card_transaction_id"],
            ["card_transactions.id"],
            name=op.f("fk_refunds_card_transaction_id_card_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_refunds_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_refunds")),
        sa.UniqueConstraint("card_credit_id", name=op.f("uq_refunds_card_credit_id")),
        sa.UniqueConstraint("id", name=op.f("uq_refunds_id")),
    )
    op.create_index(
        "ix_refunds_business_date", "refunds", ["business_date", "merchant_id"], unique=False
    )
    op.create_index("ix_refunds_merchant_seq", "refunds", ["merchant_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refunds_merchant_seq", table_name="refunds")
    op.drop_index("ix_refunds_business_date", table_name="refunds")

    op.drop_table("refunds")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")

    op.drop_table("webhook_deliveries")
    op.drop_table("payouts")
    op.drop_index("ix_gate_batches_terminal_first_seq", table_name="gate_batches")

    op.drop_table("gate_batches")
    op.drop_index("ix_card_transactions_terminal_seq", table_name="card_transactions")
    op.drop_index("ix_card_transactions_merchant_seq", table_name="card_transactions")
    op.drop_index("ix_card_transactions_business_date", table_name="card_transactions")

    op.drop_table("card_transactions")
    op.drop_index("ix_webhook_endpoints_merchant_id", table_name="webhook_endpoints")

    op.drop_table("webhook_endpoints")
    op.drop_index("ix_terminals_merchant_id", table_name="terminals")

    op.drop_table("terminals")
    op.drop_table("settlements")
    op.drop_index("ix_loads_card_status", table_name="loads")
    op.drop_index("ix_loads_card_month", table_name="loads")

    op.drop_table("loads")
    op.drop_table("hotlist_entries")
    op.drop_index("ix_events_merchant_seq", table_name="events")

    op.drop_table("events")
    op.drop_index("ix_card_credits_card_status", table_name="card_credits")

    op.drop_table("card_credits")
    op.drop_table("api_keys")
    op.drop_index("ix_quarantine_business_date", table_name="quarantine")

    op.drop_table("quarantine")
    op.drop_table("merchants")
    op.drop_index("ix_idempotency_keys_created_us", table_name="idempotency_keys")

    op.drop_table("idempotency_keys")
    op.drop_table("cards")
