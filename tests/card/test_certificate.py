"""Certificates: exact layouts, strict parsing, MAC verification, load cryptograms."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader.certificate import (
    Certificate,
    CertificateFormatError,
    CertificateFormatReason,
    Journey,
    JourneyAction,
    LoadVerification,
    TransactionKind,
    TransitMode,
    certificate_mac,
    make_load_cryptogram,
    mask_serial,
    serial_hash,
    verify_certificate,
    verify_load_certificate,
)
from card_reader.keys import BackOfficeKeys, aes_cmac
from tests.card.strategies import certificates

KEYS = BackOfficeKeys(bytes(range(16, 32)), bytes(range(32, 48)))
OTHER_KEYS = BackOfficeKeys(bytes(range(48, 64)), bytes(range(64, 80)))
SERIAL = bytes.fromhex("a1b2c3d4e5f60718")
R = CertificateFormatReason


def signed(cert: Certificate, keys: BackOfficeKeys = KEYS) -> Certificate:
    """What the card would produce: the MAC under its certificate key."""
    mac = certificate_mac(keys.certificate_key(cert.card_serial), cert.signed_bytes())
    return dataclasses.replace(cert, mac=mac)


def sample(**changes: Any) -> Certificate:
    base = Certificate(
        card_serial=SERIAL,
        counter=7,
        kind=TransactionKind.DEBIT,
        amount=3_500,
        balance_after=46_500,
        terminal_id="TJ1-GBK-01",
        terminal_seq=42,
        timestamp=1_735_700_000,
        journey=Journey(TransitMode.TRANSJAKARTA, JourneyAction.BOARD, 1, 104, 0, 1_735_700_000),
        mac=bytes(16),
    )
    return signed(dataclasses.replace(base, **changes))


def test_documented_byte_layout() -> None:
    cert = sample()
    raw = cert.to_bytes()
    assert raw[0] == 1  # version
    assert raw[1] == 1  # debit
    assert raw[2:10] == SERIAL
    assert int.from_bytes(raw[10:14], "big") == 7  # counter after
    assert int.from_bytes(raw[14:18], "big") == 3_500
    assert int.from_bytes(raw[18:22], "big") == 46_500
    assert int.from_bytes(raw[22:26], "big") == 1_735_700_000
    assert int.from_bytes(raw[26:30], "big") == 42
    assert raw[30] == len("TJ1-GBK-01")
    assert raw[31:41] == b"TJ1-GBK-01"
    assert raw[41] == 1  # journey present
    assert raw[42:62] == cert.journey.to_bytes()  # type: ignore[union-attr]
    assert raw[62:] == cert.mac
    assert len(raw) == 78
    assert cert.mac == aes_cmac(KEYS.certificate_key(SERIAL), raw[:62])


@settings(max_examples=150)
@given(certificates())
def test_bytes_and_json_round_trip(cert: Certificate) -> None:
    assert Certificate.from_bytes(cert.to_bytes()) == cert
    as_json = json.loads(json.dumps(cert.to_json()))
    assert Certificate.from_json(as_json) == cert


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_bytes_parse_or_fail_with_a_reason(data: bytes) -> None:
    try:
        cert = Certificate.from_bytes(data)
    except CertificateFormatError as error:
        assert isinstance(error.reason, CertificateFormatReason)
    else:
        assert cert.to_bytes() == data


@settings(max_examples=100)
@given(certificates(), st.data())
def test_any_changed_byte_breaks_the_mac(cert: Certificate, data: st.DataObject) -> None:
    genuine = signed(cert)
    assert verify_certificate(genuine, KEYS)
    assert not verify_certificate(genuine, OTHER_KEYS)
    raw = bytearray(genuine.to_bytes())
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        altered = Certificate.from_bytes(bytes(raw))
    except CertificateFormatError:
        return  # malformed: refused before any MAC check
    assert not verify_certificate(altered, KEYS)


def test_forged_fields_fail_verification() -> None:
    genuine = sample()
    assert verify_certificate(genuine, KEYS)
    for change in (
        {"amount": 1},
        {"balance_after": 1_000_000},
        {"counter": 8},
        {"terminal_id": "FORGED"},
        {"journey": None},
        {"card_serial": bytes(8)},
    ):
        assert not verify_certificate(dataclasses.replace(genuine, **change), KEYS), change


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda raw: raw[:20], R.TRUNCATED),
        (lambda raw: raw + b"\x00", R.TRAILING_BYTES),
        (lambda raw: b"\x02" + raw[1:], R.VERSION_UNSUPPORTED),
        (lambda raw: raw[:1] + b"\x09" + raw[2:], R.KIND_UNKNOWN),
        (lambda raw: raw[:30] + b"\x00" + raw[31:], R.TERMINAL_ID_INVALID),
        (lambda raw: raw[:30] + b"\x11" + raw[31:], R.TERMINAL_ID_INVALID),
        (lambda raw: raw[:31] + b"\xff" + raw[32:], R.TERMINAL_ID_INVALID),
        (lambda raw: raw[:31] + b" " + raw[32:], R.TERMINAL_ID_INVALID),
        (lambda raw: raw[:41] + b"\x02" + raw[42:], R.JOURNEY_FLAG_INVALID),
        (lambda raw: raw[:42] + b"\x07" + raw[43:], R.JOURNEY_MODE_UNKNOWN),
        (lambda raw: raw[:43] + b"\x00" + raw[44:], R.JOURNEY_ACTION_UNKNOWN),
        (lambda raw: raw[:44] + b"\x80" + raw[45:], R.JOURNEY_FLAGS_INVALID),
        (lambda raw: raw[:45] + b"\x00" + raw[46:], R.JOURNEY_FIELD_OUT_OF_RANGE),
        (lambda raw: raw[:10] + bytes(4) + raw[14:], R.COUNTER_OUT_OF_RANGE),
        (lambda raw: raw[:-1], R.TRUNCATED),
    ],
)
def test_malformed_bytes_have_specific_reasons(mutate: Any, reason: R) -> None:
    with pytest.raises(CertificateFormatError) as info:
        Certificate.from_bytes(mutate(sample().to_bytes()))
    assert info.value.reason is reason


def test_credit_with_a_journey_or_zero_amount_is_malformed() -> None:
    with pytest.raises(CertificateFormatError) as info:
        sample(kind=TransactionKind.CREDIT)
    assert info.value.reason is R.JOURNEY_ON_CREDIT
    with pytest.raises(CertificateFormatError) as info:
        sample(kind=TransactionKind.CREDIT, journey=None, amount=0)
    assert info.value.reason is R.CREDIT_AMOUNT_NOT_POSITIVE


def _json_with(**changes: Any) -> dict[str, Any]:
    data = sample().to_json()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "reason", "field"),
    [
        ([], R.JSON_NOT_OBJECT, None),
        (
            {k: v for k, v in sample().to_json().items() if k != "amount"},
            R.JSON_FIELD_MISSING,
            "amount",
        ),
        (_json_with(extra=1), R.JSON_FIELD_UNKNOWN, "extra"),
        (_json_with(amount="3500"), R.JSON_FIELD_TYPE, "amount"),
        (_json_with(amount=True), R.JSON_FIELD_TYPE, "amount"),
        (_json_with(amount=3500.0), R.JSON_FIELD_TYPE, "amount"),
        (_json_with(amount=-1), R.AMOUNT_OUT_OF_RANGE, "amount"),
        (_json_with(amount=2**32), R.AMOUNT_OUT_OF_RANGE, "amount"),
        (_json_with(balance_after=-5), R.BALANCE_OUT_OF_RANGE, "balance_after"),
        (_json_with(counter=0), R.COUNTER_OUT_OF_RANGE, "counter"),
        (_json_with(version=2), R.VERSION_UNSUPPORTED, "version"),
        (_json_with(kind="refund"), R.KIND_UNKNOWN, "kind"),
        (_json_with(card_serial="xyz"), R.JSON_HEX_INVALID, "card_serial"),
        (_json_with(card_serial="a1b2"), R.SERIAL_LENGTH_INVALID, "card_serial"),
        (_json_with(mac="00" * 8), R.MAC_LENGTH_INVALID, "mac"),
        (_json_with(terminal_id="gate 1"), R.TERMINAL_ID_INVALID, "terminal_id"),
        (_json_with(terminal_id=7), R.JSON_FIELD_TYPE, "terminal_id"),
        (_json_with(terminal_seq=-1), R.TERMINAL_SEQ_OUT_OF_RANGE, "terminal_seq"),
        (_json_with(timestamp=2**32), R.TIMESTAMP_OUT_OF_RANGE, "timestamp"),
        (_json_with(journey=[]), R.JSON_NOT_OBJECT, "journey"),
        (
            _json_with(journey={**sample().to_json()["journey"], "mode": "ferry"}),
            R.JOURNEY_MODE_UNKNOWN,
            "mode",
        ),
        (
            _json_with(journey={**sample().to_json()["journey"], "line": 0}),
            R.JOURNEY_FIELD_OUT_OF_RANGE,
            "line",
        ),
        (
            _json_with(journey={**sample().to_json()["journey"], "includes_unfinished_fare": 1}),
            R.JSON_FIELD_TYPE,
            "includes_unfinished_fare",
        ),
    ],
)
def test_malformed_json_has_specific_reasons(data: Any, reason: R, field: str | None) -> None:
    with pytest.raises(CertificateFormatError) as info:
        Certificate.from_json(data)
    assert info.value.reason is reason
    assert info.value.field == field


def test_errors_and_repr_never_show_the_serial() -> None:
    cert = sample()
    assert SERIAL.hex() not in repr(cert)
    assert mask_serial(SERIAL) in repr(cert)
    with pytest.raises(CertificateFormatError) as info:
        Certificate.from_json(_json_with(card_serial=SERIAL.hex() + "00"))
    assert SERIAL.hex() not in str(info.value)


def test_masked_and_hashed_serials() -> None:
    assert mask_serial(SERIAL) == "JO-****-****-0718"
    assert len(serial_hash(SERIAL)) == 64
    assert serial_hash(SERIAL) == serial_hash(bytes(SERIAL))
    assert serial_hash(SERIAL) != serial_hash(bytes(8))
    assert SERIAL.hex() not in serial_hash(SERIAL)


def test_load_cryptogram_binds_card_counter_and_amount() -> None:
    base = make_load_cryptogram(SERIAL, 7, 50_000, KEYS)
    assert len(base) == 16
    assert make_load_cryptogram(SERIAL, 7, 50_000, KEYS) == base
    assert make_load_cryptogram(SERIAL, 8, 50_000, KEYS) != base
    assert make_load_cryptogram(SERIAL, 7, 50_001, KEYS) != base
    assert make_load_cryptogram(bytes(8), 7, 50_000, KEYS) != base
    assert make_load_cryptogram(SERIAL, 7, 50_000, OTHER_KEYS) != base
    with pytest.raises(CertificateFormatError) as info:
        make_load_cryptogram(SERIAL, 7, 0, KEYS)
    assert info.value.reason is R.AMOUNT_OUT_OF_RANGE


def test_verify_load_certificate_outcomes() -> None:
    credit = sample(kind=TransactionKind.CREDIT, journey=None, amount=50_000, counter=8)
    ok = verify_load_certificate(credit, KEYS, counter_before=7, amount=50_000)
    assert ok is LoadVerification.OK
    assert (
        verify_load_certificate(credit, KEYS, counter_before=8, amount=50_000)
        is LoadVerification.COUNTER_MISMATCH
    )
    assert (
        verify_load_certificate(credit, KEYS, counter_before=7, amount=40_000)
        is LoadVerification.AMOUNT_MISMATCH
    )
    assert (
        verify_load_certificate(credit, OTHER_KEYS, counter_before=7, amount=50_000)
        is LoadVerification.MAC_INVALID
    )
    assert (
        verify_load_certificate(sample(), KEYS, counter_before=6, amount=3_500)
        is LoadVerification.NOT_A_CREDIT
    )
