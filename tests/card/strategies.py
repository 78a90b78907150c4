"""Hypothesis strategies for card data."""

from __future__ import annotations

from hypothesis import strategies as st

from card_reader.certificate import (
    U32_MAX,
    Certificate,
    Journey,
    JourneyAction,
    TransactionKind,
    TransitMode,
)

u32 = st.integers(min_value=0, max_value=U32_MAX)
terminal_ids = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
    min_size=1,
    max_size=16,
)
journeys = st.builds(
    Journey,
    mode=st.sampled_from(TransitMode),
    action=st.sampled_from(JourneyAction),
    line=st.integers(min_value=1, max_value=255),
    entry_station=st.integers(min_value=0, max_value=0xFFFF),
    exit_station=st.integers(min_value=0, max_value=0xFFFF),
    entry_time=u32,
    chain_start=u32,
    chain_paid=u32,
    includes_unfinished_fare=st.booleans(),
)


@st.composite
def certificates(draw: st.DrawFn) -> Certificate:
    kind = draw(st.sampled_from(TransactionKind))
    return Certificate(
        card_serial=draw(st.binary(min_size=8, max_size=8)),
        counter=draw(st.integers(min_value=1, max_value=U32_MAX)),
        kind=kind,
        amount=draw(
            st.integers(min_value=1 if kind is TransactionKind.CREDIT else 0, max_value=U32_MAX)
        ),
        balance_after=draw(u32),
        terminal_id=draw(terminal_ids),
        terminal_seq=draw(u32),
        timestamp=draw(u32),
        journey=None if kind is TransactionKind.CREDIT else draw(st.none() | journeys),
        mac=draw(st.binary(min_size=16, max_size=16)),
    )
