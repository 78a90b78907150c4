"""Transaction certificates: what a card signs, and how the back office checks it.

A certificate is one card-signed transaction record. The card computes its MAC with its
certificate key (AN10922-diversified from the back office's certificate master key), which
no gate or terminal holds: a terminal can store and forward a certificate but cannot make
or alter one. The exact byte layout is in docs/card-protocol.md ("Certificates").

Guarantees:
- A `Certificate` value is always well formed: every constructor (direct, `from_bytes`,
  `from_json`) checks every field and raises `CertificateFormatError` with one specific
  reason code for the first broken rule. `to_bytes`/`from_bytes` and `to_json`/
  `from_json` are exact inverses.
- `verify_certificate` recomputes the MAC under the card's certificate key and compares
  in constant time; any changed byte (amount, counter, journey, ...) makes it fail.
- A load cryptogram binds one card serial, one card counter (the counter before the load)
  and one amount. The card accepts a CREDIT only with a cryptogram for its own serial and
  current counter; since every CREDIT increments the counter, no cryptogram works twice.

Card serials are personal data: log `mask_serial(serial)`, publish `serial_hash(serial)`,
never the serial itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from card_reader.keys import SERIAL_LENGTH, BackOfficeKeys, aes_cmac

CERTIFICATE_VERSION = 1
CERTIFICATE_MAC_LENGTH = 16
LOAD_CRYPTOGRAM_LENGTH = 16
MAX_TERMINAL_ID_LENGTH = 16
JOURNEY_LENGTH = 20
U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
TERMINAL_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,16}")

_LOAD_CRYPTOGRAM_LABEL = b"JO-LOAD-v1"
_SERIAL_HASH_LABEL = b"JakartaOne card serial v1\x00"
# version, kind, serial, counter, amount, balance_after, timestamp, terminal_seq
_FIXED_HEAD = struct.Struct(">BB8sIIIII")
# mode, action, flags, line, entry_station, exit_station, entry_time, chain_start, chain_paid
_JOURNEY = struct.Struct(">BBBBHHIII")
assert _JOURNEY.size == JOURNEY_LENGTH

JOURNEY_FLAG_INCLUDES_UNFINISHED_FARE = 0x01

E = TypeVar("E", bound=StrEnum)


class CertificateFormatReason(StrEnum):
    """Every way a certificate can be malformed. Stable strings: the API reports them."""

    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    VERSION_UNSUPPORTED = "version_unsupported"
    KIND_UNKNOWN = "kind_unknown"
    SERIAL_LENGTH_INVALID = "serial_length_invalid"
    COUNTER_OUT_OF_RANGE = "counter_out_of_range"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    CREDIT_AMOUNT_NOT_POSITIVE = "credit_amount_not_positive"
    BALANCE_OUT_OF_RANGE = "balance_out_of_range"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    TERMINAL_SEQ_OUT_OF_RANGE = "terminal_seq_out_of_range"
    TERMINAL_ID_INVALID = "terminal_id_invalid"
    JOURNEY_FLAG_INVALID = "journey_flag_invalid"
    JOURNEY_MODE_UNKNOWN = "journey_mode_unknown"
    JOURNEY_ACTION_UNKNOWN = "journey_action_unknown"
    JOURNEY_FLAGS_INVALID = "journey_flags_invalid"
    JOURNEY_FIELD_OUT_OF_RANGE = "journey_field_out_of_range"
    JOURNEY_ON_CREDIT = "journey_on_credit"
    MAC_LENGTH_INVALID = "mac_length_invalid"
    JSON_NOT_OBJECT = "json_not_object"
    JSON_FIELD_MISSING = "json_field_missing"
    JSON_FIELD_UNKNOWN = "json_field_unknown"
    JSON_FIELD_TYPE = "json_field_type"
    JSON_HEX_INVALID = "json_hex_invalid"


class CertificateFormatError(ValueError):
    """A certificate (bytes, JSON or fields) is malformed. `reason` names the rule,
    `field` the offending field when there is one. Messages never contain a serial."""

    def __init__(self, reason: CertificateFormatReason, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason.value} ({field})" if field else reason.value)


class TransactionKind(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"  # a load

    @property
    def code(self) -> int:
        return _KIND_CODES[self]


class TransitMode(StrEnum):
    TRANSJAKARTA = "transjakarta"
    MRT = "mrt"
    KRL = "krl"
    LRT = "lrt"

    @property
    def code(self) -> int:
        return _MODE_CODES[self]


class JourneyAction(StrEnum):
    ENTRY = "entry"  # tap-in at a distance-fare gate: opens a journey
    EXIT = "exit"  # tap-out at a distance-fare gate: closes it, charges the distance
    BOARD = "board"  # tap at a flat-fare gate or bus

    @property
    def code(self) -> int:
        return _ACTION_CODES[self]


_KIND_CODES = {TransactionKind.DEBIT: 1, TransactionKind.CREDIT: 2}
_MODE_CODES = {
    TransitMode.TRANSJAKARTA: 1,
    TransitMode.MRT: 2,
    TransitMode.KRL: 3,
    TransitMode.LRT: 4,
}
_ACTION_CODES = {JourneyAction.ENTRY: 1, JourneyAction.EXIT: 2, JourneyAction.BOARD: 3}
_KINDS_BY_CODE = {v: k for k, v in _KIND_CODES.items()}
_MODES_BY_CODE = {v: k for k, v in _MODE_CODES.items()}
_ACTIONS_BY_CODE = {v: k for k, v in _ACTION_CODES.items()}


def _in_range(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


@dataclass(frozen=True, slots=True)
class Journey:
    """The journey record a transit tap writes on the card, atomically with the debit.

    Constraints:
    - line: 1 to 255 (a line code, docs/card-protocol.md "Lines and stations").
    - entry_station, exit_station: 0 to 65535; 0 means none (an exit with no tap-in has
      entry_station 0, an entry or a boarding has exit_station 0).
    - entry_time: Unix seconds of the tap that opened the journey (0 if none).
    - chain_start, chain_paid: the JakLingko integrated fare window this tap belongs to:
      when it started (Unix seconds, 0 if none) and what it has charged so far (rupiah).
    - includes_unfinished_fare: this tap's amount also charges an earlier journey that
      was never tapped out.
    """

    mode: TransitMode
    action: JourneyAction
    line: int
    entry_station: int = 0
    exit_station: int = 0
    entry_time: int = 0
    chain_start: int = 0
    chain_paid: int = 0
    includes_unfinished_fare: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, TransitMode):
            raise CertificateFormatError(CertificateFormatReason.JOURNEY_MODE_UNKNOWN, "mode")
        if not isinstance(self.action, JourneyAction):
            raise CertificateFormatError(CertificateFormatReason.JOURNEY_ACTION_UNKNOWN, "action")
        if type(self.includes_unfinished_fare) is not bool:
            raise CertificateFormatError(
                CertificateFormatReason.JOURNEY_FLAGS_INVALID, "includes_unfinished_fare"
            )
        for name, high in (
            ("line", U8_MAX),
            ("entry_station", U16_MAX),
            ("exit_station", U16_MAX),
            ("entry_time", U32_MAX),
            ("chain_start", U32_MAX),
            ("chain_paid", U32_MAX),
        ):
            low = 1 if name == "line" else 0
            if not _in_range(getattr(self, name), low, high):
                raise CertificateFormatError(
                    CertificateFormatReason.JOURNEY_FIELD_OUT_OF_RANGE, name
                )

    def to_bytes(self) -> bytes:
        flags = JOURNEY_FLAG_INCLUDES_UNFINISHED_FARE if self.includes_unfinished_fare else 0
        return _JOURNEY.pack(
            self.mode.code,
            self.action.code,
            flags,
            self.line,
            self.entry_station,
            self.exit_station,
            self.entry_time,
            self.chain_start,
            self.chain_paid,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Journey:
        if len(data) < JOURNEY_LENGTH:
            raise CertificateFormatError(CertificateFormatReason.TRUNCATED, "journey")
        if len(data) > JOURNEY_LENGTH:
            raise CertificateFormatError(CertificateFormatReason.TRAILING_BYTES, "journey")
        mode, action, flags, line, entry, exit_, entry_time, chain_start, chain_paid = (
            _JOURNEY.unpack(data)
        )
        if mode not in _MODES_BY_CODE:
            raise CertificateFormatError(CertificateFormatReason.JOURNEY_MODE_UNKNOWN, "mode")
        if action not in _ACTIONS_BY_CODE:
            raise CertificateFormatError(CertificateFormatReason.JOURNEY_ACTION_UNKNOWN, "action")
        if flags & ~JOURNEY_FLAG_INCLUDES_UNFINISHED_FARE:
            raise CertificateFormatError(CertificateFormatReason.JOURNEY_FLAGS_INVALID, "flags")
        return cls(
            mode=_MODES_BY_CODE[mode],
            action=_ACTIONS_BY_CODE[action],
            line=line,
            entry_station=entry,
            exit_station=exit_,
            entry_time=entry_time,
            chain_start=chain_start,
            chain_paid=chain_paid,
            includes_unfinished_fare=bool(flags & JOURNEY_FLAG_INCLUDES_UNFINISHED_FARE),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "action": self.action.value,
            "line": self.line,
            "entry_station": self.entry_station,
            "exit_station": self.exit_station,
            "entry_time": self.entry_time,
            "chain_start": self.chain_start,
            "chain_paid": self.chain_paid,
            "includes_unfinished_fare": self.includes_unfinished_fare,
        }

    @classmethod
    def from_json(cls, data: object) -> Journey:
        obj = _json_object(data, _JOURNEY_FIELDS, "journey")
        mode = _json_enum(obj, "mode", TransitMode, CertificateFormatReason.JOURNEY_MODE_UNKNOWN)
        action = _json_enum(
            obj, "action", JourneyAction, CertificateFormatReason.JOURNEY_ACTION_UNKNOWN
        )
        flag = obj["includes_unfinished_fare"]
        if type(flag) is not bool:
            raise CertificateFormatError(
                CertificateFormatReason.JSON_FIELD_TYPE, "includes_unfinished_fare"
            )
        return cls(
            mode=mode,
            action=action,
            line=_json_int(obj, "line"),
            entry_station=_json_int(obj, "entry_station"),
            exit_station=_json_int(obj, "exit_station"),
            entry_time=_json_int(obj, "entry_time"),
            chain_start=_json_int(obj, "chain_start"),
            chain_paid=_json_int(obj, "chain_paid"),
            includes_unfinished_fare=flag,
        )


_JOURNEY_FIELDS = (
    "mode",
    "action",
    "line",
    "entry_station",
    "exit_station",
    "entry_time",
    "chain_start",
    "chain_paid",
    "includes_unfinished_fare",
)
_CERTIFICATE_FIELDS = (
    "version",
    "card_serial",
    "counter",
    "kind",
    "amount",
    "balance_after",
    "terminal_id",
    "terminal_seq",
    "timestamp",
    "journey",
    "mac",
)


@dataclass(frozen=True, slots=True)
class Certificate:
    """One card-signed transaction.

    Constraints:
    - card_serial: 8 bytes.
    - counter: the card's transaction counter after this transaction, 1 to 2^32-1.
    - kind: debit or credit (load).
    - amount: rupiah, 0 to 2^32-1; a credit's is positive (a debit may be 0: a tap-in).
    - balance_after: rupiah on the card after this transaction, 0 to 2^32-1.
    - terminal_id: 1 to 16 characters of A-Z a-z 0-9 . _ -
    - terminal_seq: the terminal's own sequence number for the command, 0 to 2^32-1.
    - timestamp: Unix seconds (UTC) from the terminal's clock, 0 to 2^32-1.
    - journey: the journey record written with a transit debit; None otherwise, and
      always None on a credit.
    - mac: 16 bytes, AES-CMAC under the card's certificate key over `signed_bytes()`.
    """

    card_serial: bytes
    counter: int
    kind: TransactionKind
    amount: int
    balance_after: int
    terminal_id: str
    terminal_seq: int
    timestamp: int
    journey: Journey | None
    mac: bytes

    def __post_init__(self) -> None:
        reason = CertificateFormatReason
        if type(self.card_serial) is not bytes or len(self.card_serial) != SERIAL_LENGTH:
            raise CertificateFormatError(reason.SERIAL_LENGTH_INVALID, "card_serial")
        if not _in_range(self.counter, 1, U32_MAX):
            raise CertificateFormatError(reason.COUNTER_OUT_OF_RANGE, "counter")
        if not isinstance(self.kind, TransactionKind):
            raise CertificateFormatError(reason.KIND_UNKNOWN, "kind")
        if not _in_range(self.amount, 0, U32_MAX):
            raise CertificateFormatError(reason.AMOUNT_OUT_OF_RANGE, "amount")
        if self.kind is TransactionKind.CREDIT and self.amount == 0:
            raise CertificateFormatError(reason.CREDIT_AMOUNT_NOT_POSITIVE, "amount")
        if not _in_range(self.balance_after, 0, U32_MAX):
            raise CertificateFormatError(reason.BALANCE_OUT_OF_RANGE, "balance_after")
        if not isinstance(self.terminal_id, str) or not TERMINAL_ID_PATTERN.fullmatch(
            self.terminal_id
        ):
            raise CertificateFormatError(reason.TERMINAL_ID_INVALID, "terminal_id")
        if not _in_range(self.terminal_seq, 0, U32_MAX):
            raise CertificateFormatError(reason.TERMINAL_SEQ_OUT_OF_RANGE, "terminal_seq")
        if not _in_range(self.timestamp, 0, U32_MAX):
            raise CertificateFormatError(reason.TIMESTAMP_OUT_OF_RANGE, "timestamp")
        if self.journey is not None and not isinstance(self.journey, Journey):
            raise CertificateFormatError(reason.JSON_FIELD_TYPE, "journey")
        if self.journey is not None and self.kind is TransactionKind.CREDIT:
            raise CertificateFormatError(reason.JOURNEY_ON_CREDIT, "journey")
        if type(self.mac) is not bytes or len(self.mac) != CERTIFICATE_MAC_LENGTH:
            raise CertificateFormatError(reason.MAC_LENGTH_INVALID, "mac")

    def __repr__(self) -> str:
        # A dataclass repr would print the serial in clear into any log or traceback.
        return (
            f"Certificate(card={mask_serial(self.card_serial)}, counter={self.counter}, "
            f"kind={self.kind.value}, amount={self.amount}, balance_after={self.balance_after}, "
            f"terminal_id={self.terminal_id!r}, terminal_seq={self.terminal_seq})"
        )

    def signed_bytes(self) -> bytes:
        """The bytes the card MACs: the whole certificate except the MAC."""
        head = _FIXED_HEAD.pack(
            CERTIFICATE_VERSION,
            self.kind.code,
            self.card_serial,
            self.counter,
            self.amount,
            self.balance_after,
            self.timestamp,
            self.terminal_seq,
        )
        tid = self.terminal_id.encode("ascii")
        journey = b"\x00" if self.journey is None else b"\x01" + self.journey.to_bytes()
        return head + bytes([len(tid)]) + tid + journey

    def to_bytes(self) -> bytes:
        return self.signed_bytes() + self.mac

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        reason = CertificateFormatReason
        if len(data) < _FIXED_HEAD.size + 1:
            raise CertificateFormatError(reason.TRUNCATED)
        version, kind, serial, counter, amount, balance, timestamp, seq = _FIXED_HEAD.unpack_from(
            data
        )
        if version != CERTIFICATE_VERSION:
            raise CertificateFormatError(reason.VERSION_UNSUPPORTED, "version")
        if kind not in _KINDS_BY_CODE:
            raise CertificateFormatError(reason.KIND_UNKNOWN, "kind")
        at = _FIXED_HEAD.size
        tid_length = data[at]
        at += 1
        if not 1 <= tid_length <= MAX_TERMINAL_ID_LENGTH:
            raise CertificateFormatError(reason.TERMINAL_ID_INVALID, "terminal_id")
        if len(data) < at + tid_length + 1:
            raise CertificateFormatError(reason.TRUNCATED)
        try:
            terminal_id = data[at : at + tid_length].decode("ascii")
        except UnicodeDecodeError:
            raise CertificateFormatError(reason.TERMINAL_ID_INVALID, "terminal_id") from None
        at += tid_length
        journey_flag = data[at]
        at += 1
        journey: Journey | None = None
        if journey_flag == 1:
            if len(data) < at + JOURNEY_LENGTH:
                raise CertificateFormatError(reason.TRUNCATED, "journey")
            journey = Journey.from_bytes(data[at : at + JOURNEY_LENGTH])
            at += JOURNEY_LENGTH
        elif journey_flag != 0:
            raise CertificateFormatError(reason.JOURNEY_FLAG_INVALID, "journey")
        if len(data) < at + CERTIFICATE_MAC_LENGTH:
            raise CertificateFormatError(reason.TRUNCATED, "mac")
        if len(data) > at + CERTIFICATE_MAC_LENGTH:
            raise CertificateFormatError(reason.TRAILING_BYTES)
        return cls(
            card_serial=serial,
            counter=counter,
            kind=_KINDS_BY_CODE[kind],
            amount=amount,
            balance_after=balance,
            terminal_id=terminal_id,
            terminal_seq=seq,
            timestamp=timestamp,
            journey=journey,
            mac=data[at:],
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form gates upload (bytes as lower-case hex)."""
        return {
            "version": CERTIFICATE_VERSION,
            "card_serial": self.card_serial.hex(),
            "counter": self.counter,
            "kind": self.kind.value,
            "amount": self.amount,
            "balance_after": self.balance_after,
            "terminal_id": self.terminal_id,
            "terminal_seq": self.terminal_seq,
            "timestamp": self.timestamp,
            "journey": None if self.journey is None else self.journey.to_json(),
            "mac": self.mac.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> Certificate:
        obj = _json_object(data, _CERTIFICATE_FIELDS, None)
        if _json_int(obj, "version") != CERTIFICATE_VERSION:
            raise CertificateFormatError(CertificateFormatReason.VERSION_UNSUPPORTED, "version")
        terminal_id = obj["terminal_id"]
        if not isinstance(terminal_id, str):
            raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_TYPE, "terminal_id")
        journey = obj["journey"]
        return cls(
            card_serial=_json_hex(obj, "card_serial"),
            counter=_json_int(obj, "counter"),
            kind=_json_enum(obj, "kind", TransactionKind, CertificateFormatReason.KIND_UNKNOWN),
            amount=_json_int(obj, "amount"),
            balance_after=_json_int(obj, "balance_after"),
            terminal_id=terminal_id,
            terminal_seq=_json_int(obj, "terminal_seq"),
            timestamp=_json_int(obj, "timestamp"),
            journey=None if journey is None else Journey.from_json(journey),
            mac=_json_hex(obj, "mac"),
        )


def _json_object(data: object, fields: tuple[str, ...], where: str | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise CertificateFormatError(CertificateFormatReason.JSON_NOT_OBJECT, where)
    for name in fields:
        if name not in data:
            raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_MISSING, name)
    for name in data:
        if name not in fields:
            # The name is echoed only if it is a short identifier: never arbitrary input.
            shown = (
                name if isinstance(name, str) and name.isidentifier() and len(name) < 40 else None
            )
            raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_UNKNOWN, shown)
    return data


def _json_int(obj: dict[str, Any], name: str) -> int:
    value = obj[name]
    if type(value) is not int:  # bool is an int subclass and is refused here
        raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_TYPE, name)
    return value


def _json_hex(obj: dict[str, Any], name: str) -> bytes:
    value = obj[name]
    if not isinstance(value, str):
        raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_TYPE, name)
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", value):
        raise CertificateFormatError(CertificateFormatReason.JSON_HEX_INVALID, name)
    return bytes.fromhex(value)


def _json_enum(
    obj: dict[str, Any], name: str, enum: type[E], unknown: CertificateFormatReason
) -> E:
    value = obj[name]
    if not isinstance(value, str):
        raise CertificateFormatError(CertificateFormatReason.JSON_FIELD_TYPE, name)
    try:
        return enum(value)
    except ValueError:
        raise CertificateFormatError(unknown, name) from None


def certificate_mac(certificate_key: bytes, signed_bytes: bytes) -> bytes:
    """The certificate MAC as the card computes it (the card holds the per-card key)."""
    return aes_cmac(certificate_key, signed_bytes)


def verify_certificate(cert: Certificate, keys: BackOfficeKeys) -> bool:
    """True if the card that owns `cert.card_serial` made exactly this certificate.

    The comparison is constant-time, so timing tells a forger nothing about how much of a
    guessed MAC was right.
    """
    expected = certificate_mac(keys.certificate_key(cert.card_serial), cert.signed_bytes())
    return hmac.compare_digest(expected, cert.mac)


def load_cryptogram_message(card_serial: bytes, counter: int, amount: int) -> bytes:
    """What a load cryptogram MACs: label || serial (8) || counter (4) || amount (4)."""
    if len(card_serial) != SERIAL_LENGTH:
        raise CertificateFormatError(CertificateFormatReason.SERIAL_LENGTH_INVALID, "card_serial")
    if not _in_range(counter, 0, U32_MAX - 1):
        raise CertificateFormatError(CertificateFormatReason.COUNTER_OUT_OF_RANGE, "counter")
    if not _in_range(amount, 1, U32_MAX):
        raise CertificateFormatError(CertificateFormatReason.AMOUNT_OUT_OF_RANGE, "amount")
    return _LOAD_CRYPTOGRAM_LABEL + card_serial + struct.pack(">II", counter, amount)


def make_load_cryptogram(
    card_serial: bytes, counter: int, amount: int, keys: BackOfficeKeys
) -> bytes:
    """The issuer's permission for one load: `amount` rupiah onto the card `card_serial`
    whose transaction counter is now `counter` (before the load). 16 bytes.

    The card checks it with its own load key and its own counter, then increments the
    counter, so the same cryptogram is refused the second time (and by every other card).
    """
    message = load_cryptogram_message(card_serial, counter, amount)
    return aes_cmac(keys.load_key(card_serial), message)


class LoadVerification(StrEnum):
    """Outcome of checking a card's credit certificate against the load it answers."""

    OK = "ok"
    NOT_A_CREDIT = "not_a_credit"
    MAC_INVALID = "mac_invalid"
    COUNTER_MISMATCH = "counter_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"


def verify_load_certificate(
    cert: Certificate, keys: BackOfficeKeys, *, counter_before: int, amount: int
) -> LoadVerification:
    """Check that `cert` is the card's signed receipt for the load the issuer authorized
    with `make_load_cryptogram(cert.card_serial, counter_before, amount, keys)`: a credit,
    of that amount, at counter `counter_before + 1`, with a valid card MAC."""
    if cert.kind is not TransactionKind.CREDIT:
        return LoadVerification.NOT_A_CREDIT
    if not verify_certificate(cert, keys):
        return LoadVerification.MAC_INVALID
    if cert.counter != counter_before + 1:
        return LoadVerification.COUNTER_MISMATCH
    if cert.amount != amount:
        return LoadVerification.AMOUNT_MISMATCH
    return LoadVerification.OK


def mask_serial(card_serial: bytes) -> str:
    """A card serial for display and logs: only its last 2 bytes, e.g. `JO-****-****-1a2b`."""
    return f"JO-****-****-{card_serial[-2:].hex()}"


def serial_hash(card_serial: bytes) -> str:
    """The card's public reference: SHA-256 over a fixed label and the serial, in hex.

    Hotlists (and any other list that leaves the back office) name cards by this, never by
    serial. It is a pseudonym, not anonymization: anyone holding a serial can compute it.
    """
    return hashlib.sha256(_SERIAL_HASH_LABEL + card_serial).hexdigest()
