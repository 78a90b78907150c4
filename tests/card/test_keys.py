"""AN10922 diversification, key roles and the software SAM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_reader import keys
from card_reader.keys import (
    BackOfficeKeys,
    KeyMaterialError,
    KeyRole,
    SoftwareSam,
    aes_cmac,
    card_key,
    diversify,
    personalize,
)

MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
SERIAL = bytes.fromhex("0102030405060708")
AUTH_MASTER = bytes(range(16))
BACK_OFFICE = BackOfficeKeys(bytes(range(16, 32)), bytes(range(32, 48)))


def test_published_an10922_aes128_vector() -> None:
    # AN10922 section 2.2.1: UID 04782E21801D80, AID 3042F5, system id "NXP Abu".
    m = bytes.fromhex("04782E21801D803042F54E585020416275")
    assert diversify(MASTER, m).hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"


def test_cmac_subkey_k2_matches_an10922() -> None:
    _, k2 = keys._cmac_subkeys(MASTER)
    assert k2.hex().upper() == "F793EEB928278083BFDC8A5A7E0E0D25"


def test_rfc4493_cmac_vector() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac(key, msg).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


@settings(max_examples=60)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=31))
def test_long_inputs_equal_a_plain_cmac(master: bytes, m: bytes) -> None:
    # With 17 to 32 bytes of D, AN10922's padding is exactly CMAC's own.
    assert diversify(master, m) == aes_cmac(master, b"\x01" + m)


@settings(max_examples=30)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=1, max_size=15))
def test_short_inputs_pad_to_two_blocks_unlike_a_plain_cmac(master: bytes, m: bytes) -> None:
    # AN10922 pads D to 32 bytes; a plain CMAC would stop at one block.
    assert diversify(master, m) != aes_cmac(master, b"\x01" + m)
    assert len(diversify(master, m)) == 16


@pytest.mark.parametrize(
    ("master", "m", "code"),
    [
        (bytes(15), b"\x01", "key_length_invalid"),
        (bytes(24), b"\x01", "key_length_invalid"),
        (bytes(16), b"", "diversification_input_length_invalid"),
        (bytes(16), bytes(32), "diversification_input_length_invalid"),
    ],
)
def test_bad_diversification_arguments_are_refused(master: bytes, m: bytes, code: str) -> None:
    with pytest.raises(KeyMaterialError) as info:
        diversify(master, m)
    assert info.value.code == code


def test_roles_give_unrelated_keys_even_from_one_master() -> None:
    derived = {card_key(MASTER, SERIAL, role) for role in KeyRole}
    assert len(derived) == 3
    assert card_key(MASTER, SERIAL, KeyRole.LOAD) != card_key(MASTER, bytes(8), KeyRole.LOAD)


def test_personalized_keys_match_each_holder() -> None:
    card = personalize(SERIAL, AUTH_MASTER, BACK_OFFICE)
    assert card.certificate == BACK_OFFICE.certificate_key(SERIAL)
    assert card.load == BACK_OFFICE.load_key(SERIAL)
    assert card.authentication == card_key(AUTH_MASTER, SERIAL, KeyRole.AUTHENTICATION)


def test_key_holders_never_show_key_material() -> None:
    card = personalize(SERIAL, AUTH_MASTER, BACK_OFFICE)
    sam = SoftwareSam(AUTH_MASTER)
    session = sam.open_session(SERIAL, bytes(16))
    for holder in (card, BACK_OFFICE, sam, session):
        text = repr(holder) + str(holder)
        assert "redacted" in text
        for secret in (AUTH_MASTER, BACK_OFFICE.certificate_master, card.load):
            assert secret.hex() not in text.lower()


def test_back_office_keys_from_hex_and_env() -> None:
    cert_hex, load_hex = "11" * 16, "22" * 16
    from_hex = BackOfficeKeys.from_hex(cert_hex, load_hex.upper())
    from_env = BackOfficeKeys.from_env(
        {keys.ENV_CERTIFICATE_MASTER_KEY: cert_hex, keys.ENV_LOAD_MASTER_KEY: load_hex}
    )
    assert from_hex.certificate_master == from_env.certificate_master == bytes([0x11] * 16)
    with pytest.raises(KeyMaterialError) as info:
        BackOfficeKeys.from_env({keys.ENV_CERTIFICATE_MASTER_KEY: cert_hex})
    assert info.value.code == "key_missing"
    with pytest.raises(KeyMaterialError) as info:
        BackOfficeKeys.from_hex("zz" * 16, load_hex)
    assert info.value.code == "key_hex_invalid"
    assert "zz" not in str(info.value)
    with pytest.raises(KeyMaterialError) as info:
        BackOfficeKeys.from_hex(cert_hex, cert_hex)
    assert info.value.code == "key_roles_not_distinct"


def test_sam_session_agrees_with_the_card_side_computation() -> None:
    card = personalize(SERIAL, AUTH_MASTER, BACK_OFFICE)
    card_challenge = bytes(range(100, 116))
    session = SoftwareSam(AUTH_MASTER).open_session(SERIAL, card_challenge)
    assert session.terminal_cryptogram == keys.terminal_cryptogram(
        card.authentication, card_challenge, session.terminal_challenge
    )
    session_key = keys.session_mac_key(
        card.authentication, card_challenge, session.terminal_challenge
    )
    mac = keys.session_mac(session_key, 3, b"response")
    assert session.response_mac_valid(3, b"response", mac)
    assert not session.response_mac_valid(4, b"response", mac)
    assert session.command_mac(1, b"cmd") == keys.session_mac(session_key, 1, b"cmd")


def test_sam_challenges_are_fresh() -> None:
    sam = SoftwareSam(AUTH_MASTER)
    a = sam.open_session(SERIAL, bytes(16))
    b = sam.open_session(SERIAL, bytes(16))
    assert a.terminal_challenge != b.terminal_challenge
    assert a.terminal_cryptogram != b.terminal_cryptogram
