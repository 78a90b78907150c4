"""Property: on any card history, the chain checks find exactly the gaps and the broken
links that were made, and nothing on an intact chain (DuckDB, no database needed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader.certificate import Certificate, CertificateFormatError, TransactionKind
from reconciliation.nightly.cards import check_chains, signed_bytes
from reconciliation.nightly.extract import TX_COLUMNS, Column, create_duck, load_rows
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


@settings(max_examples=200, deadline=None)
@given(
    serial=st.binary(min_size=8, max_size=8),
    counter=st.integers(0, 2**32 - 2),
    kind=st.sampled_from(list(TransactionKind)),
    amount=st.integers(0, 2**32 - 1),
    balance=st.integers(0, 2**32 - 1),
    terminal=st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True),
    seq=st.integers(0, 2**32 - 1),
    timestamp=st.integers(0, 2**32 - 1),
)
def test_the_nightly_packs_certificates_as_the_card_does(
    serial: bytes,
    counter: int,
    kind: TransactionKind,
    amount: int,
    balance: int,
    terminal: str,
    seq: int,
    timestamp: int,
) -> None:
    """The signature re-check's packing equals card_reader's own (what the MAC covers)."""
    try:
        cert = Certificate(
            card_serial=serial,
            counter=counter,
            kind=kind,
            amount=amount,
            balance_after=balance,
            terminal_id=terminal,
            terminal_seq=seq,
            timestamp=timestamp,
            journey=None,
            mac=bytes(16),
        )
    except CertificateFormatError:
        return  # not a certificate a card could make
    packed = signed_bytes(
        serial, counter, kind.value, amount, balance, terminal, seq, timestamp * 1_000_000, None
    )
    assert packed == cert.signed_bytes()
