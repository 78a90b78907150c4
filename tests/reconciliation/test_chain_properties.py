"""Properties: on any card history, the chain checks find exactly the gaps and the broken
links that were made, and nothing on an intact chain; the MAC re-check rejects exactly the
records edited after the card signed them (DuckDB, no database needed)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader.certificate import Certificate, TransactionKind, certificate_mac
from card_reader.keys import BackOfficeKeys
from merchant_api.crypto import ApiSecrets
from reconciliation.nightly.cards import SERIAL_PURPOSE, check_chains, check_signatures
from reconciliation.nightly.extract import CARD_COLUMNS, TX_COLUMNS, Column, create_duck, load_rows
from reconciliation.nightly.taxonomy import BreakType

CARD = "0" * 31 + "1"
events = st.lists(
    st.tuples(st.sampled_from(["debit", "credit"]), st.integers(0, 5_000)), min_size=1, max_size=30
)


@settings(max_examples=40, deadline=None)
@given(events, st.data())
def test_chain_checks_find_exactly_the_faults_made(
    history: list[tuple[str, int]], data: st.DataObject
) -> None:
    counters = range(1, len(history) + 1)
    dropped = data.draw(st.sets(st.sampled_from(list(counters))), label="dropped")
    tampered = data.draw(st.sets(st.sampled_from(list(counters))), label="tampered")
    balance, rows = 1_000_000, []
    for counter, (kind, amount) in zip(counters, history, strict=True):
        balance += amount if kind == "credit" else -amount
        if counter in dropped:
            continue
        shown = balance + (1 if counter in tampered else 0)
        rows.append(
            (
                f"{counter:032x}",
                CARD,
                counter,
                kind,
                amount,
                shown,
                0,
                None,
                "T",
                counter,
                counter * 1_000_000,
                None,
                "",
                None,
                "2026-01-01",
                1,
                0,
            )
        )
    kept = [r[2] for r in rows]
    expected_gaps = {
        f"{CARD}:{low}-{high}"
        for low, high in _runs(sorted(dropped))
        if high < (max(kept) if kept else 0)
    }
    # A link is checked when both ends were uploaded; a tampered end breaks it, unless the
    # earlier end was tampered the same way (its error carries over) and the later one not.
    expected_links = {
        f"{CARD}:{c}" for c in kept if c - 1 in kept and (c in tampered) != (c - 1 in tampered)
    }
    with tempfile.TemporaryDirectory() as spill:
        (Path(spill) / "spill").mkdir()
        duck = create_duck(Path(spill), "128MB", 1)
        load_rows(duck, "tx", (*TX_COLUMNS, Column("shard", "INTEGER")), rows)
        result = check_chains(duck, 1, lambda: None)
        duck.close()
    found_gaps = {f.key for f in result.findings if f.type is BreakType.COUNTER_GAP}
    found_links = {f.key for f in result.findings if f.type is BreakType.BALANCE_CHAIN_BROKEN}
    assert found_gaps == expected_gaps
    assert found_links == expected_links
    assert not [f for f in result.findings if f.type is BreakType.COUNTER_REGRESSION]


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


KEYS = BackOfficeKeys.from_hex("11" * 16, "22" * 16)
SECRETS = ApiSecrets.from_root(b"\x05" * 32)
U32 = 2**32 - 1
certificates = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(list(TransactionKind)),
        "amount": st.integers(1, U32),  # a credit moves value
        "balance_after": st.integers(0, U32),
        "terminal_id": st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True),
        "terminal_seq": st.integers(0, U32),
        "timestamp": st.integers(0, U32),
    }
)
# Edits behind the API's back, each to one stored column: (column, how).
EDITS = {
    "amount_plus_one": ("amount", lambda v: v + 1),
    "balance_minus_one": ("balance_after", lambda v: v - 1),
    "kind_flipped": ("kind", lambda v: "credit" if v == "debit" else "debit"),
    "kind_unknown": ("kind", lambda v: "refund"),
    "terminal_renamed": ("terminal_code", lambda v: v + "X"),
    "terminal_not_ascii": ("terminal_code", lambda v: v[:-1] + "\u00e9"),
    "time_one_second_later": ("card_time_us", lambda v: v + 1_000_000),
    "time_negative": ("card_time_us", lambda v: -1),
    "seq_out_of_range": ("terminal_seq", lambda v: v + 2**32),
    "amount_out_of_range": ("amount", lambda v: 2**32),
    "mac_flipped": ("mac", lambda v: f"{int(v[:2], 16) ^ 1:02x}" + v[2:]),
    "mac_truncated": ("mac", lambda v: v[:-2]),
}


@settings(max_examples=60, deadline=None)
@given(
    serial=st.binary(min_size=8, max_size=8),
    made=st.lists(certificates, min_size=1, max_size=12),
    data=st.data(),
)
def test_the_signature_recheck_rejects_exactly_the_edited_records(
    serial: bytes, made: list[dict[str, Any]], data: st.DataObject
) -> None:
    """The MAC re-check (DuckDB packs, `verify_batch` verifies) accepts every record as the
    card signed it, and rejects every record edited after it, whatever the column."""
    key = KEYS.certificate_key(serial)
    edited: dict[int, str] = {}
    rows = []
    for counter, fields in enumerate(made, start=1):
        cert = Certificate(
            card_serial=serial, counter=counter, journey=None, mac=bytes(16), **fields
        )
        record = {
            "kind": cert.kind.value,
            "amount": cert.amount,
            "balance_after": cert.balance_after,
            "terminal_code": cert.terminal_id,
            "terminal_seq": cert.terminal_seq,
            "card_time_us": cert.timestamp * 1_000_000 + counter % 1_000_000,
            "mac": certificate_mac(key, cert.signed_bytes()).hex(),
        }
        edit = data.draw(st.none() | st.sampled_from(sorted(EDITS)), label=f"edit {counter}")
        if edit is not None:
            column, how = EDITS[edit]
            record[column] = how(record[column])
            edited[counter] = edit
        rows.append(
            (f"{counter:032x}", CARD, counter, record["kind"], record["amount"],
             record["balance_after"], 0, None, record["terminal_code"], record["terminal_seq"],
             record["card_time_us"], None, record["mac"], None, "2026-01-01", 1, 0)
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as spill:
        (Path(spill) / "spill").mkdir()
        duck = create_duck(Path(spill), "128MB", 1)
        load_rows(duck, "tx", (*TX_COLUMNS, Column("shard", "INTEGER")), rows)
        sealed = SECRETS.seal(SERIAL_PURPOSE, serial).hex()
        load_rows(duck, "cards", CARD_COLUMNS, [(CARD, "active", CARD, 0, 0, 0, sealed)])
        result = check_signatures(duck, "2026-01-01", KEYS, SECRETS, lambda: None)
        duck.close()
    rejected = {f.reference for f in result.findings if f.type is BreakType.SIGNATURE_INVALID}
    assert rejected == {str(counter) for counter in edited}, edited
