"""The card's persisted state: atomic commits, strict loading, no keys in reprs."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from card_reader.card import VirtualCard
from card_reader.card_state import CardStateError, FileStore
from card_reader.certificate import Journey, JourneyAction, TransitMode
from card_reader.keys import SoftwareSam
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel, InProcessTransport
from tests.card.conftest import AUTH_MASTER, new_state


def test_file_store_round_trips_a_card_that_has_been_used(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "card.json")
    store.save(new_state())
    card = VirtualCard(store.load(), store)
    session = CardSession(ApduChannel(InProcessTransport(card)), SoftwareSam(AUTH_MASTER))
    session.select()
    session.authenticate()
    journey = Journey(TransitMode.KRL, JourneyAction.ENTRY, 3, 301, 0, 100)
    session.debit(amount=0, terminal_id="KRL-1", terminal_seq=1, timestamp=100, journey=journey)
    loaded = store.load()
    assert loaded == card.state
    assert loaded.journey == journey and loaded.counter == 1 and len(loaded.log) == 1
    assert stat.S_IMODE((tmp_path / "card.json").stat().st_mode) == 0o600
    assert not (tmp_path / ".card.json.tmp").exists()


def test_a_torn_temporary_file_never_replaces_the_state(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "card.json")
    store.save(new_state(balance=1_234))
    # A crash while writing the next state leaves only a partial temporary file.
    (tmp_path / ".card.json.tmp").write_text('{"version": 1, "bal')
    assert store.load().balance == 1_234
    store.save(new_state(balance=999))
    assert store.load().balance == 999


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "state_malformed"),
        ('{"version": 2}', "version_unsupported"),
        ('{"version": 1}', "state_malformed"),
    ],
)
def test_bad_state_files_are_refused(tmp_path: Path, text: str, code: str) -> None:
    path = tmp_path / "card.json"
    path.write_text(text)
    with pytest.raises(CardStateError) as info:
        FileStore(path).load()
    assert info.value.code == code


def test_missing_state_file_and_broken_constraints(tmp_path: Path) -> None:
    with pytest.raises(CardStateError) as info:
        FileStore(tmp_path / "absent.json").load()
    assert info.value.code == "state_file_missing"
    with pytest.raises(CardStateError) as info:
        dataclasses.replace(new_state(), balance=3_000_000)
    assert info.value.code == "balance_out_of_range"


def test_repr_shows_neither_keys_nor_serial() -> None:
    state = new_state()
    text = repr(state)
    assert state.serial.hex() not in text
    assert state.keys.authentication.hex() not in text
