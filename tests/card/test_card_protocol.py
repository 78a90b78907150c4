"""The card protocol end to end over the in-process transport."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card_reader.apdu import SW, Command, Ins
from card_reader.card import VirtualCard
from card_reader.card_state import REGISTERED_MAX_BALANCE, MemoryStore
from card_reader.certificate import (
    Journey,
    JourneyAction,
    LoadVerification,
    TransactionKind,
    TransitMode,
    make_load_cryptogram,
    verify_certificate,
    verify_load_certificate,
)
from card_reader.errors import CardRefusedError, CardRemovedError, CardResponseInvalidError
from card_reader.keys import BackOfficeKeys, SoftwareSam
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel, InProcessTransport
from tests.card.conftest import BACK_OFFICE, SERIAL, CardRig, new_state

NOW = 1_735_700_000
JOURNEY = Journey(TransitMode.MRT, JourneyAction.ENTRY, 2, 201, 0, NOW, NOW, 0)


def debit(session: CardSession, amount: int, seq: int = 1, journey: Journey | None = JOURNEY):
    return session.debit(
        amount=amount, terminal_id="MRT-LBB-01", terminal_seq=seq, timestamp=NOW, journey=journey
    )


def test_gate_debit_is_three_round_trips_and_signed(rig: CardRig) -> None:
    info = rig.session.select()
    assert info.serial == SERIAL and not info.blocked
    purse = rig.session.authenticate()
    assert (purse.balance, purse.counter, purse.journey, purse.last_certificate) == (
        50_000,
        0,
        None,
        None,
    )
    cert = debit(rig.session, 3_500)
    assert rig.channel.exchanges == 3
    assert (cert.balance_after, cert.counter, cert.kind) == (46_500, 1, TransactionKind.DEBIT)
    assert verify_certificate(cert, BACK_OFFICE)
    state = rig.card.state
    assert (state.balance, state.counter, state.journey) == (46_500, 1, JOURNEY)
    assert state.log == (cert.to_bytes(),)
    assert rig.store.saved == state


def test_a_debit_without_journey_keeps_the_cards_journey(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    debit(rig.session, 0)
    cert = debit(rig.session, 12_000, seq=2, journey=None)
    assert cert.journey is None
    assert rig.card.state.journey == JOURNEY
    purse = rig.session.read_purse()
    assert purse.last_certificate == cert
    assert purse.counter == 2


def test_insufficient_funds_changes_nothing_and_ends_the_session(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    before = rig.card.state
    with pytest.raises(CardRefusedError) as info:
        debit(rig.session, 50_001)
    assert info.value.code == "insufficient_funds"
    assert info.value.sw == SW.CONDITIONS_NOT_SATISFIED
    assert rig.card.state is before
    assert rig.store.saves == 0
    with pytest.raises(CardRefusedError) as info:
        rig.session.read_purse()
    assert info.value.code == "no_session"


def test_exact_balance_can_be_spent(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    assert debit(rig.session, 50_000).balance_after == 0


def test_a_terminal_without_the_key_cannot_authenticate(rig: CardRig) -> None:
    session = rig.new_session(SoftwareSam(bytes(16)))
    session.select()
    with pytest.raises(CardRefusedError) as info:
        session.authenticate()
    assert info.value.code == "authentication_failed"
    # One attempt per challenge, even for the right key.
    good = CardSession(rig.channel, SoftwareSam(bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")))
    good._info = session._info
    with pytest.raises(CardRefusedError) as info:
        good.authenticate()
    assert info.value.code == "not_selected"


def test_wrong_application_is_not_found(rig: CardRig) -> None:
    response = rig.channel.send(Command(0x00, Ins.SELECT, 0x04, 0x00, b"\xa0\x00\x00\x00\x03", 256))
    assert response.sw == SW.NOT_FOUND


def test_power_reset_ends_the_session(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    rig.transport.tap()  # power cycled by the reader
    with pytest.raises(CardRefusedError) as info:
        rig.session.read_purse()
    assert info.value.code == "no_session"


def test_a_forged_command_mac_is_refused_and_closes_the_session(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    data = b"\x00\x00\x27\x10" + bytes(8) + b"\x01A\x00" + bytes(8)
    response = rig.channel.send(Command(0x80, Ins.DEBIT, 0, 0, data, 256))
    assert response.sw == SW.SM_DATA_INCORRECT
    assert rig.card.state.counter == 0
    with pytest.raises(CardRefusedError):
        rig.session.read_purse()


class FlippingTransport:
    """Flips one bit in every answer to a given INS: a man in the middle."""

    def __init__(self, inner: InProcessTransport, ins: int) -> None:
        self.inner, self.ins = inner, ins

    def transmit(self, apdu: bytes) -> bytes:
        raw = bytearray(self.inner.transmit(apdu))
        if apdu[1] == self.ins and len(raw) > 2:
            raw[0] ^= 0x01
        return bytes(raw)


def test_an_altered_answer_fails_its_session_mac(rig: CardRig) -> None:
    session = CardSession(
        ApduChannel(FlippingTransport(rig.transport, Ins.AUTHENTICATE)),
        SoftwareSam(bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")),
    )
    session.select()
    with pytest.raises(CardResponseInvalidError):
        session.authenticate()


def test_load_with_a_cryptogram_and_never_twice(make_rig: Callable[..., CardRig]) -> None:
    rig = make_rig(balance=10_000)
    rig.session.select()
    purse = rig.session.authenticate()
    cryptogram = make_load_cryptogram(SERIAL, purse.counter, 100_000, BACK_OFFICE)
    load = dict(
        amount=100_000,
        counter_before=purse.counter,
        cryptogram=cryptogram,
        terminal_id="TOPUP-01",
        terminal_seq=9,
        timestamp=NOW,
    )
    cert = rig.session.credit(**load)  # type: ignore[arg-type]
    assert (cert.kind, cert.balance_after, cert.counter) == (TransactionKind.CREDIT, 110_000, 1)
    assert verify_load_certificate(cert, BACK_OFFICE, counter_before=0, amount=100_000) is (
        LoadVerification.OK
    )
    # The same cryptogram again: the counter has moved on.
    rig.new_session().select()
    rig.session.authenticate()
    with pytest.raises(CardRefusedError) as info:
        rig.session.credit(**load)  # type: ignore[arg-type]
    assert info.value.code == "load_counter_mismatch"
    # Claiming the old counter does not help: the cryptogram is checked against the card's.
    rig.new_session().select()
    rig.session.authenticate()
    with pytest.raises(CardRefusedError) as info:
        rig.session.credit(**{**load, "counter_before": 1})  # type: ignore[arg-type]
    assert info.value.code == "load_cryptogram_invalid"
    assert rig.card.state.balance == 110_000


def test_a_cryptogram_from_other_keys_or_for_another_amount_is_refused(rig: CardRig) -> None:
    other = BackOfficeKeys(bytes(range(16)), bytes(range(16, 32)))
    for keys, amount, signed_amount in ((other, 5_000, 5_000), (BACK_OFFICE, 9_000, 5_000)):
        rig.new_session().select()
        rig.session.authenticate()
        with pytest.raises(CardRefusedError) as info:
            rig.session.credit(
                amount=amount,
                counter_before=0,
                cryptogram=make_load_cryptogram(SERIAL, 0, signed_amount, keys),
                terminal_id="TOPUP-01",
                terminal_seq=1,
                timestamp=NOW,
            )
        assert info.value.code == "load_cryptogram_invalid"
    assert rig.card.state.balance == 50_000 and rig.card.state.counter == 0


@pytest.mark.parametrize(
    ("max_balance", "amount", "ok"),
    [
        (2_000_000, 1_950_000, True),
        (2_000_000, 1_950_001, False),
        (REGISTERED_MAX_BALANCE, 19_950_000, True),
    ],
)
def test_load_over_the_maximum_balance_is_refused(
    make_rig: Callable[..., CardRig], max_balance: int, amount: int, ok: bool
) -> None:
    rig = make_rig(balance=50_000, max_balance=max_balance)
    rig.session.select()
    rig.session.authenticate()
    load = lambda: rig.session.credit(  # noqa: E731
        amount=amount,
        counter_before=0,
        cryptogram=make_load_cryptogram(SERIAL, 0, amount, BACK_OFFICE),
        terminal_id="TOPUP-01",
        terminal_seq=1,
        timestamp=NOW,
    )
    if ok:
        assert load().balance_after == max_balance
    else:
        with pytest.raises(CardRefusedError) as info:
            load()
        assert info.value.code == "over_max_balance"
        assert rig.card.state.balance == 50_000


def test_a_blocked_card_refuses_debits_and_loads_for_good(rig: CardRig) -> None:
    rig.session.select()
    rig.session.authenticate()
    rig.session.block()
    assert rig.store.saved is not None and rig.store.saved.blocked
    session = rig.new_session()
    assert session.select().blocked
    purse = session.authenticate()
    assert purse.blocked
    with pytest.raises(CardRefusedError) as info:
        debit(session, 100)
    assert info.value.code == "card_blocked"
    rig.new_session().select()
    rig.session.authenticate()
    with pytest.raises(CardRefusedError) as info:
        rig.session.credit(
            amount=1_000,
            counter_before=0,
            cryptogram=make_load_cryptogram(SERIAL, 0, 1_000, BACK_OFFICE),
            terminal_id="TOPUP-01",
            terminal_seq=1,
            timestamp=NOW,
        )
    assert info.value.code == "card_blocked"
    assert rig.card.state.balance == 50_000


def test_read_log_chains_long_answers_with_61xx(make_rig: Callable[..., CardRig]) -> None:
    rig = make_rig(balance=1_000_000)
    made = []
    for seq in range(1, 21):
        rig.new_session().select()
        rig.session.authenticate()
        made.append(debit(rig.session, 100, seq=seq))
    rig.new_session().select()
    rig.session.authenticate()
    before = rig.channel.exchanges
    log = rig.session.read_log(16)
    assert log == list(reversed(made))[:16]
    assert all(verify_certificate(cert, BACK_OFFICE) for cert in log)
    # 16 certificates with journeys are about 1,250 bytes: several GET RESPONSE rounds.
    assert rig.channel.exchanges - before >= 5
    assert rig.session.read_log(1) == [made[-1]]


def test_wrong_le_is_answered_6cxx_and_retried(rig: CardRig) -> None:
    select = Command(0x00, Ins.SELECT, 0x04, 0x00, bytes.fromhex("F04A414B4F4E4531"), 5)
    raw = rig.transport.transmit(select.to_bytes())
    assert raw[-2] == 0x6C and raw[-1] == 26
    response = rig.channel.send(select)
    assert response.sw == SW.OK and len(response.data) == 26
    assert rig.channel.exchanges == 2


@pytest.mark.parametrize("after_commit", [False, True])
def test_removal_mid_debit_is_all_or_nothing(rig: CardRig, after_commit: bool) -> None:
    rig.session.select()
    rig.session.authenticate()
    rig.transport.tear_next(Ins.DEBIT, after_commit=after_commit)
    with pytest.raises(CardRemovedError):
        debit(rig.session, 3_000, seq=77)
    state = rig.card.state
    if not after_commit:
        assert (state.balance, state.counter, state.log) == (50_000, 0, ())
        return
    assert (state.balance, state.counter) == (47_000, 1)
    # The next terminal finds the whole certificate in the purse record.
    session = rig.new_session()
    session.select()
    last = session.authenticate().last_certificate
    assert last is not None
    assert (last.terminal_seq, last.amount, last.counter) == (77, 3_000, 1)
    assert verify_certificate(last, BACK_OFFICE)


commands = st.builds(
    lambda cla, ins, p1, p2, data, le: bytes([cla, ins, p1, p2]) + data + le,
    st.sampled_from([0x00, 0x80, 0x84, 0xFF]) | st.integers(0, 255),
    st.sampled_from(list(Ins)) | st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.just(b"")
    | st.binary(max_size=40).map(lambda d: bytes([len(d)]) + d)
    | st.binary(max_size=260),
    st.sampled_from([b"", b"\x00", b"\x10"]),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(apdus=st.lists(st.binary(max_size=300) | commands, max_size=8), authenticated=st.booleans())
def test_random_apdus_never_crash_the_card(
    rig: CardRig, apdus: list[bytes], authenticated: bool
) -> None:
    rig.new_session()
    if authenticated:
        rig.session.select()
        rig.session.authenticate()
    before = rig.card.state
    for apdu in apdus:
        raw = rig.card.process(apdu)
        assert len(raw) >= 2
        sw = int.from_bytes(raw[-2:], "big")
        assert sw != SW.NO_PRECISE_DIAGNOSIS, apdu.hex()
        assert raw[-2] in (0x90, 0x61, 0x6C, 0x62, 0x63, 0x64, 0x65, 0x67, 0x69, 0x6A, 0x6D, 0x6E)
    # Without the session key nothing random can change money, counter or log.
    after = rig.card.state
    assert (after.balance, after.counter, after.log, after.journey) == (
        before.balance,
        before.counter,
        before.log,
        before.journey,
    )


def test_state_commits_go_through_the_store_whole() -> None:
    store = MemoryStore()
    card = VirtualCard(new_state(), store)
    transport = InProcessTransport(card)
    session = CardSession(
        ApduChannel(transport), SoftwareSam(bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"))
    )
    session.select()
    session.authenticate()
    debit(session, 1_000)
    assert store.saves == 1
    assert store.saved == card.state
    assert dataclasses.replace(card.state) == store.saved
