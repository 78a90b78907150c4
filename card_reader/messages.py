"""The byte layouts of the JakartaOne commands and responses, shared by card and terminal.

One encoder and one decoder per message, so the virtual card and the terminal cannot
disagree on a layout. docs/card-protocol.md tables every field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from card_reader.certificate import (
    CERTIFICATE_MAC_LENGTH,
    JOURNEY_LENGTH,
    LOAD_CRYPTOGRAM_LENGTH,
    TERMINAL_ID_PATTERN,
    Certificate,
    CertificateFormatError,
    Journey,
)
from card_reader.keys import CHALLENGE_LENGTH, SERIAL_LENGTH, SESSION_MAC_LENGTH

PROTOCOL_VERSION = 1
STATUS_BLOCKED = 0x01
STATUS_REGISTERED = 0x02
_STATUS_BITS = STATUS_BLOCKED | STATUS_REGISTERED

_SELECT = struct.Struct(f">B{SERIAL_LENGTH}s{CHALLENGE_LENGTH}sB")
# version, status, balance, max_balance, counter, journey flag, journey
_PURSE_HEAD = struct.Struct(f">BBIIIB{JOURNEY_LENGTH}s")
# amount, terminal_seq, timestamp
_DEBIT_HEAD = struct.Struct(">III")
# amount, counter_before, cryptogram, terminal_seq, timestamp
_CREDIT_HEAD = struct.Struct(f">II{LOAD_CRYPTOGRAM_LENGTH}sII")
# balance, counter, certificate mac
_RESULT = struct.Struct(f">II{CERTIFICATE_MAC_LENGTH}s")
RESULT_LENGTH = _RESULT.size


class MessageFormatError(ValueError):
    """Bytes that do not fit the message's layout. `wrong_length` tells 6700 from 6A80."""

    def __init__(self, reason: str, *, wrong_length: bool = False) -> None:
        self.reason = reason
        self.wrong_length = wrong_length
        super().__init__(reason)


def command_mac_message(header: bytes, data: bytes) -> bytes:
    """What a command's session MAC covers: 0x01 || CLA INS P1 P2 || data (MAC excluded)."""
    return b"\x01" + header + data


def response_mac_message(data: bytes) -> bytes:
    """What a response's session MAC covers: 0x02 || data (MAC excluded) || 90 00."""
    return b"\x02" + data + b"\x90\x00"


def split_mac(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < SESSION_MAC_LENGTH:
        raise MessageFormatError("mac_missing", wrong_length=True)
    return data[:-SESSION_MAC_LENGTH], data[-SESSION_MAC_LENGTH:]


def _terminal_id(data: bytes, at: int) -> tuple[str, int]:
    if len(data) <= at:
        raise MessageFormatError("truncated", wrong_length=True)
    length = data[at]
    raw = data[at + 1 : at + 1 + length]
    if len(raw) != length:
        raise MessageFormatError("truncated", wrong_length=True)
    try:
        terminal_id = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MessageFormatError("terminal_id_invalid") from None
    if not TERMINAL_ID_PATTERN.fullmatch(terminal_id):
        raise MessageFormatError("terminal_id_invalid")
    return terminal_id, at + 1 + length


def _encode_terminal_id(terminal_id: str) -> bytes:
    if not TERMINAL_ID_PATTERN.fullmatch(terminal_id):
        raise MessageFormatError("terminal_id_invalid")
    raw = terminal_id.encode("ascii")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True, slots=True)
class SelectInfo:
    """SELECT's answer: who the card is and a fresh challenge for this session."""

    serial: bytes
    challenge: bytes
    blocked: bool
    registered: bool

    def __repr__(self) -> str:
        # Never the serial in clear, even in a traceback.
        return f"SelectInfo(card=JO-****-****-{self.serial[-2:].hex()}, blocked={self.blocked})"

    def to_bytes(self) -> bytes:
        status = (STATUS_BLOCKED if self.blocked else 0) | (
            STATUS_REGISTERED if self.registered else 0
        )
        return _SELECT.pack(PROTOCOL_VERSION, self.serial, self.challenge, status)

    @classmethod
    def from_bytes(cls, data: bytes) -> SelectInfo:
        if len(data) != _SELECT.size:
            raise MessageFormatError("select_length", wrong_length=True)
        version, serial, challenge, status = _SELECT.unpack(data)
        if version != PROTOCOL_VERSION:
            raise MessageFormatError("protocol_version_unsupported")
        if status & ~_STATUS_BITS:
            raise MessageFormatError("status_invalid")
        return cls(
            serial, challenge, bool(status & STATUS_BLOCKED), bool(status & STATUS_REGISTERED)
        )


@dataclass(frozen=True, slots=True)
class PurseRecord:
    """READ PURSE's answer (also AUTHENTICATE's): the purse and its last certificate."""

    blocked: bool
    registered: bool
    balance: int
    max_balance: int
    counter: int
    journey: Journey | None
    last_certificate: Certificate | None

    def to_bytes(self) -> bytes:
        status = (STATUS_BLOCKED if self.blocked else 0) | (
            STATUS_REGISTERED if self.registered else 0
        )
        journey = self.journey.to_bytes() if self.journey else bytes(JOURNEY_LENGTH)
        last = self.last_certificate.to_bytes() if self.last_certificate else b""
        head = _PURSE_HEAD.pack(
            PROTOCOL_VERSION,
            status,
            self.balance,
            self.max_balance,
            self.counter,
            1 if self.journey else 0,
            journey,
        )
        return head + bytes([len(last)]) + last

    @classmethod
    def from_bytes(cls, data: bytes) -> PurseRecord:
        if len(data) < _PURSE_HEAD.size + 1:
            raise MessageFormatError("purse_truncated", wrong_length=True)
        version, status, balance, max_balance, counter, has_journey, journey = (
            _PURSE_HEAD.unpack_from(data)
        )
        if version != PROTOCOL_VERSION:
            raise MessageFormatError("protocol_version_unsupported")
        if status & ~_STATUS_BITS:
            raise MessageFormatError("status_invalid")
        if has_journey not in (0, 1):
            raise MessageFormatError("journey_flag_invalid")
        if has_journey == 0 and journey != bytes(JOURNEY_LENGTH):
            raise MessageFormatError("journey_not_empty")
        at = _PURSE_HEAD.size
        length = data[at]
        if len(data) != at + 1 + length:
            raise MessageFormatError("purse_length", wrong_length=True)
        try:
            last = Certificate.from_bytes(data[at + 1 :]) if length else None
            parsed_journey = Journey.from_bytes(journey) if has_journey == 1 else None
        except CertificateFormatError as error:
            raise MessageFormatError(f"purse_{error.reason.value}") from None
        return cls(
            blocked=bool(status & STATUS_BLOCKED),
            registered=bool(status & STATUS_REGISTERED),
            balance=balance,
            max_balance=max_balance,
            counter=counter,
            journey=parsed_journey,
            last_certificate=last,
        )


@dataclass(frozen=True, slots=True)
class DebitCommand:
    amount: int
    terminal_seq: int
    timestamp: int
    terminal_id: str
    journey: Journey | None

    def to_bytes(self) -> bytes:
        journey = b"\x00" if self.journey is None else b"\x01" + self.journey.to_bytes()
        return (
            _DEBIT_HEAD.pack(self.amount, self.terminal_seq, self.timestamp)
            + _encode_terminal_id(self.terminal_id)
            + journey
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DebitCommand:
        if len(data) < _DEBIT_HEAD.size:
            raise MessageFormatError("truncated", wrong_length=True)
        amount, seq, timestamp = _DEBIT_HEAD.unpack_from(data)
        terminal_id, at = _terminal_id(data, _DEBIT_HEAD.size)
        if len(data) <= at:
            raise MessageFormatError("truncated", wrong_length=True)
        flag = data[at]
        rest = data[at + 1 :]
        journey: Journey | None = None
        if flag == 1:
            if len(rest) != JOURNEY_LENGTH:
                raise MessageFormatError("journey_length", wrong_length=True)
            try:
                journey = Journey.from_bytes(rest)
            except CertificateFormatError as error:
                raise MessageFormatError(error.reason.value) from None
        elif flag != 0:
            raise MessageFormatError("journey_flag_invalid")
        elif rest:
            raise MessageFormatError("trailing_bytes", wrong_length=True)
        return cls(amount, seq, timestamp, terminal_id, journey)


@dataclass(frozen=True, slots=True)
class CreditCommand:
    amount: int
    counter_before: int
    cryptogram: bytes
    terminal_seq: int
    timestamp: int
    terminal_id: str

    def to_bytes(self) -> bytes:
        head = _CREDIT_HEAD.pack(
            self.amount, self.counter_before, self.cryptogram, self.terminal_seq, self.timestamp
        )
        return head + _encode_terminal_id(self.terminal_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> CreditCommand:
        if len(data) < _CREDIT_HEAD.size:
            raise MessageFormatError("truncated", wrong_length=True)
        amount, counter_before, cryptogram, seq, timestamp = _CREDIT_HEAD.unpack_from(data)
        terminal_id, at = _terminal_id(data, _CREDIT_HEAD.size)
        if len(data) != at:
            raise MessageFormatError("trailing_bytes", wrong_length=True)
        return cls(amount, counter_before, cryptogram, seq, timestamp, terminal_id)


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """DEBIT's and CREDIT's answer: the new balance and counter, and the certificate MAC."""

    balance: int
    counter: int
    certificate_mac: bytes

    def to_bytes(self) -> bytes:
        return _RESULT.pack(self.balance, self.counter, self.certificate_mac)

    @classmethod
    def from_bytes(cls, data: bytes) -> TransactionResult:
        if len(data) != _RESULT.size:
            raise MessageFormatError("result_length", wrong_length=True)
        return cls(*_RESULT.unpack(data))


def encode_log(entries: tuple[bytes, ...]) -> bytes:
    """READ LOG's answer: each certificate as length (1) || bytes, newest first."""
    return b"".join(bytes([len(entry)]) + entry for entry in entries)


def decode_log(data: bytes) -> list[Certificate]:
    certificates: list[Certificate] = []
    at = 0
    while at < len(data):
        length = data[at]
        raw = data[at + 1 : at + 1 + length]
        if len(raw) != length:
            raise MessageFormatError("log_truncated", wrong_length=True)
        try:
            certificates.append(Certificate.from_bytes(raw))
        except CertificateFormatError as error:
            raise MessageFormatError(f"log_{error.reason.value}") from None
        at += 1 + length
    return certificates
