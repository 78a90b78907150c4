"""Card keys: NXP AN10922 diversification, key roles, and the terminal's secure module.

Every JakartaOne card holds three AES-128 keys, each diversified from its own issuer master
key with NXP AN10922 (AES-128, CMAC-based), from the card serial and the application id:

- authentication (role AUTH): proves card and terminal to each other and keys the session.
  Terminals hold its master key, inside a secure module (`Sam`).
- certificate (role CERT): the card signs every transaction with it. Only the back office
  holds its master key (`BackOfficeKeys`); gates and merchant terminals never do, so they
  cannot forge or alter what a card signed.
- load (role LOAD): the card accepts value only with a cryptogram under it. Only the issuer
  holds its master key, so gates and merchants cannot create value.

Guarantees:
- Roles never share key material: each role has its own master key, and the role label is
  part of the diversification input, so even one master key reused by mistake would still
  give unrelated per-card keys.
- Key material never appears in a repr, a log line or an exception message; holders print
  as `<redacted>`.
- `diversify` is AN10922 to the letter (also for inputs shorter than 16 bytes, where it
  differs from a plain CMAC), so its output can be checked against any other
  implementation: `jakartaone keys diversify --master-key HEX --input HEX`.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

KEY_LENGTH = 16
BLOCK = 16
SERIAL_LENGTH = 8
CHALLENGE_LENGTH = 16
SESSION_MAC_LENGTH = 8
# A proprietary application id (ISO 7816-5: a first nibble F means not registered).
# "F0" then "JAKONE1" in ASCII.
JAKARTAONE_AID = bytes.fromhex("F04A414B4F4E4531")
# AN10922 allows 1 to 31 bytes of diversification data after its 0x01 constant.
MAX_DIVERSIFICATION_INPUT = 2 * BLOCK - 1
AN10922_AES128_CONSTANT = b"\x01"

ENV_CERTIFICATE_MASTER_KEY = "JAKARTAONE_CERTIFICATE_MASTER_KEY"
ENV_LOAD_MASTER_KEY = "JAKARTAONE_LOAD_MASTER_KEY"
ENV_AUTHENTICATION_MASTER_KEY = "JAKARTAONE_AUTHENTICATION_MASTER_KEY"

REDACTED = "<redacted>"


class KeyMaterialError(ValueError):
    """Key material or a diversification input is malformed; `code` names which rule.

    Codes: key_length_invalid, key_hex_invalid, key_missing,
    diversification_input_length_invalid, serial_length_invalid, challenge_length_invalid.
    The message never contains key material.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        super().__init__(f"{code}: {detail}" if detail else code)


class KeyRole(Enum):
    """What a per-card key is for. The value is the label in the diversification input."""

    AUTHENTICATION = b"AUTH"
    CERTIFICATE = b"CERT"
    LOAD = b"LOAD"


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LENGTH:
        raise KeyMaterialError("key_length_invalid", f"an AES-128 key is {KEY_LENGTH} bytes")


def _check_serial(card_serial: bytes) -> None:
    if len(card_serial) != SERIAL_LENGTH:
        raise KeyMaterialError("serial_length_invalid", f"a card serial is {SERIAL_LENGTH} bytes")


def key_from_hex(text: str, name: str = "key") -> bytes:
    """Parse a 32-hex-digit AES-128 key (spaces and colons allowed as separators)."""
    cleaned = text.strip().replace(" ", "").replace(":", "")
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise KeyMaterialError("key_hex_invalid", f"{name} is not hexadecimal") from None
    _check_key(key)
    return key


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B), the full 16-byte tag."""
    _check_key(key)
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def _shift_left_one_bit(block: bytes) -> bytes:
    value = (int.from_bytes(block, "big") << 1) & ((1 << 128) - 1)
    return value.to_bytes(BLOCK, "big")


def _cmac_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """K1 and K2 of SP 800-38B section 6.1 (AN10922 uses them directly)."""
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block
    zero_encrypted = encryptor.update(bytes(BLOCK))
    k1 = _shift_left_one_bit(zero_encrypted)
    if zero_encrypted[0] & 0x80:
        k1 = k1[:-1] + bytes([k1[-1] ^ 0x87])
    k2 = _shift_left_one_bit(k1)
    if k1[0] & 0x80:
        k2 = k2[:-1] + bytes([k2[-1] ^ 0x87])
    return k1, k2


def diversify(master_key: bytes, diversification_input: bytes) -> bytes:
    """The AN10922 AES-128 diversified key of `master_key` for `diversification_input`.

    AN10922: D = 0x01 || M, padded with 0x80 00.. to 32 bytes when shorter; the key is the
    CMAC of D where the last block is XORed with K2 if padding was added and K1 if not.
    That is not a plain CMAC of 0x01 || M when that is 16 bytes or shorter (a plain CMAC
    would pad to one block), so the two blocks are computed here explicitly.

    Constraints: master_key 16 bytes; diversification_input 1 to 31 bytes.
    """
    return Diversifier(master_key).derive(diversification_input)


class Diversifier:
    """`diversify` under one master key, for many inputs: the master's subkeys and cipher
    are set up once (they cost more than a derivation itself). Holds key material: its
    repr is redacted."""

    __slots__ = ("_encrypt_block", "_k1", "_k2")

    def __init__(self, master_key: bytes) -> None:
        _check_key(master_key)
        self._k1, self._k2 = _cmac_subkeys(master_key)
        # ECB of one block at a time is the raw block cipher; the two-block CBC with a zero
        # IV that AN10922 specifies is spelled out in `derive`.
        ecb = modes.ECB()  # noqa: S305 - one block at a time, chained in `derive`
        self._encrypt_block = Cipher(algorithms.AES(master_key), ecb).encryptor()

    def __repr__(self) -> str:
        return f"Diversifier({REDACTED})"

    def derive(self, diversification_input: bytes) -> bytes:
        if not 1 <= len(diversification_input) <= MAX_DIVERSIFICATION_INPUT:
            raise KeyMaterialError(
                "diversification_input_length_invalid",
                f"AN10922 takes 1 to {MAX_DIVERSIFICATION_INPUT} bytes",
            )
        data = AN10922_AES128_CONSTANT + diversification_input
        if len(data) < 2 * BLOCK:
            data = data + b"\x80" + bytes(2 * BLOCK - len(data) - 1)
            last_mask = self._k2
        else:
            last_mask = self._k1
        # CBC, zero IV: C1 = E(P1), C2 = E(C1 xor P2'); the key is C2.
        first = self._encrypt_block.update(data[:BLOCK])
        chained = _xor(_xor(data[BLOCK:], last_mask), first)
        return self._encrypt_block.update(chained)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(BLOCK, "big")


def diversification_input(card_serial: bytes, role: KeyRole) -> bytes:
    """M = card serial (8) || AID (8) || role label (4): 20 bytes, AN10922's UID || AID ||
    system identifier order, with the role as the system identifier."""
    _check_serial(card_serial)
    return card_serial + JAKARTAONE_AID + role.value


def card_key(master_key: bytes, card_serial: bytes, role: KeyRole) -> bytes:
    """The per-card key of one role."""
    return diversify(master_key, diversification_input(card_serial, role))


@dataclass(frozen=True, slots=True, repr=False)
class CardKeys:
    """The three keys personalized into one card (the chip's secret memory)."""

    authentication: bytes
    certificate: bytes
    load: bytes

    def __post_init__(self) -> None:
        for key in (self.authentication, self.certificate, self.load):
            _check_key(key)

    def __repr__(self) -> str:
        return f"CardKeys({REDACTED})"


def key_from_env(name: str, environ: Mapping[str, str] | None = None) -> bytes:
    """An AES-128 key from the environment variable `name` (hex)."""
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        raise KeyMaterialError("key_missing", f"{name} is not set")
    return key_from_hex(value, name)


@dataclass(frozen=True, slots=True, repr=False)
class BackOfficeKeys:
    """The back office's master keys: certificates (verify what cards signed) and loads
    (make load cryptograms). Terminals never hold these.

    Constraints: both 16 bytes, and different from each other (key roles kept apart).
    """

    certificate_master: bytes = field(repr=False)
    load_master: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_key(self.certificate_master)
        _check_key(self.load_master)
        if hmac.compare_digest(self.certificate_master, self.load_master):
            raise KeyMaterialError("key_roles_not_distinct", "certificate and load keys match")

    def __repr__(self) -> str:
        return f"BackOfficeKeys({REDACTED})"

    @classmethod
    def from_hex(cls, certificate_master_hex: str, load_master_hex: str) -> BackOfficeKeys:
        return cls(
            key_from_hex(certificate_master_hex, "certificate master key"),
            key_from_hex(load_master_hex, "load master key"),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackOfficeKeys:
        """From JAKARTAONE_CERTIFICATE_MASTER_KEY and JAKARTAONE_LOAD_MASTER_KEY (hex)."""
        env = os.environ if environ is None else environ
        return cls(
            key_from_env(ENV_CERTIFICATE_MASTER_KEY, env), key_from_env(ENV_LOAD_MASTER_KEY, env)
        )

    def certificate_key(self, card_serial: bytes) -> bytes:
        return card_key(self.certificate_master, card_serial, KeyRole.CERTIFICATE)

    def certificate_keys(self) -> Callable[[bytes], bytes]:
        """`certificate_key` for many cards (the nightly MAC re-check): the master's set-up
        is done once, not per card."""
        diversifier = Diversifier(self.certificate_master)

        def certificate_key(card_serial: bytes) -> bytes:
            return diversifier.derive(diversification_input(card_serial, KeyRole.CERTIFICATE))

        return certificate_key

    def load_key(self, card_serial: bytes) -> bytes:
        return card_key(self.load_master, card_serial, KeyRole.LOAD)


def personalize(
    card_serial: bytes, authentication_master: bytes, back_office: BackOfficeKeys
) -> CardKeys:
    """The keys the issuer writes into a new card (at personalization, never afterwards)."""
    _check_key(authentication_master)
    return CardKeys(
        authentication=card_key(authentication_master, card_serial, KeyRole.AUTHENTICATION),
        certificate=back_office.certificate_key(card_serial),
        load=back_office.load_key(card_serial),
    )


# Session cryptography, shared by the card and the terminal's secure module.
# Labels keep the MACs of different purposes apart under the same key.
_TERMINAL_PROOF_LABEL = b"JO-AUTH-TERMINAL"
_SESSION_MAC_LABEL = b"JO-SESSION-MAC"


def terminal_cryptogram(
    authentication_key: bytes, card_challenge: bytes, terminal_challenge: bytes
) -> bytes:
    """The terminal's proof that it holds the card's authentication key (8 bytes)."""
    tag = aes_cmac(authentication_key, _TERMINAL_PROOF_LABEL + card_challenge + terminal_challenge)
    return tag[:SESSION_MAC_LENGTH]


def session_mac_key(
    authentication_key: bytes, card_challenge: bytes, terminal_challenge: bytes
) -> bytes:
    """The session's MAC key: NIST SP 800-108 counter-mode KDF with AES-CMAC as the PRF,
    one block: CMAC(K, [1] || label || 0x00 || context || [128]), context RND_C || RND_T."""
    message = (
        b"\x01" + _SESSION_MAC_LABEL + b"\x00" + card_challenge + terminal_challenge + b"\x00\x80"
    )
    return aes_cmac(authentication_key, message)


def session_mac(session_key: bytes, counter: int, message: bytes) -> bytes:
    """The 8-byte MAC of one secured command or response: CMAC(Ks, counter (2) || message)."""
    return aes_cmac(session_key, counter.to_bytes(2, "big") + message)[:SESSION_MAC_LENGTH]


class SamSession(Protocol):
    """One authenticated session with one card, as the terminal's secure module sees it.
    Session keys stay inside the module; the terminal only gets MACs and yes/no answers."""

    @property
    def terminal_challenge(self) -> bytes: ...

    @property
    def terminal_cryptogram(self) -> bytes: ...

    def command_mac(self, counter: int, message: bytes) -> bytes: ...

    def response_mac_valid(self, counter: int, message: bytes, mac: bytes) -> bool: ...


class Sam(Protocol):
    """A terminal's secure module. It holds the authentication master key and answers
    only with challenges, cryptograms and MACs. A hardware SAM or an HSM client can stand
    in for `SoftwareSam` by implementing this protocol."""

    def open_session(self, card_serial: bytes, card_challenge: bytes) -> SamSession: ...


class SoftwareSamSession:
    """A `SamSession` computed in software. Holds its session key privately."""

    __slots__ = ("_session_key", "terminal_challenge", "terminal_cryptogram")

    def __init__(self, authentication_key: bytes, card_challenge: bytes) -> None:
        if len(card_challenge) != CHALLENGE_LENGTH:
            raise KeyMaterialError("challenge_length_invalid")
        self.terminal_challenge = secrets.token_bytes(CHALLENGE_LENGTH)
        self.terminal_cryptogram = terminal_cryptogram(
            authentication_key, card_challenge, self.terminal_challenge
        )
        self._session_key = session_mac_key(
            authentication_key, card_challenge, self.terminal_challenge
        )

    def __repr__(self) -> str:
        return f"SoftwareSamSession({REDACTED})"

    def command_mac(self, counter: int, message: bytes) -> bytes:
        return session_mac(self._session_key, counter, message)

    def response_mac_valid(self, counter: int, message: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(session_mac(self._session_key, counter, message), mac)


class SoftwareSam:
    """A software secure module holding a terminal's authentication master key.

    The key is read from JAKARTAONE_AUTHENTICATION_MASTER_KEY (or given directly); it is
    never logged and never written anywhere by this class.
    """

    __slots__ = ("_master",)

    def __init__(self, authentication_master: bytes) -> None:
        _check_key(authentication_master)
        self._master = authentication_master

    def __repr__(self) -> str:
        return f"SoftwareSam({REDACTED})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SoftwareSam:
        env = os.environ if environ is None else environ
        return cls(key_from_env(ENV_AUTHENTICATION_MASTER_KEY, env))

    def open_session(self, card_serial: bytes, card_challenge: bytes) -> SoftwareSamSession:
        key = card_key(self._master, card_serial, KeyRole.AUTHENTICATION)
        return SoftwareSamSession(key, card_challenge)
