"""ISO 7816-4 short APDUs: parsing, building, status words, instruction codes.

Only short APDUs are used (Lc up to 255, Le up to 256): every JakartaOne command and
response fits, and pcsc-lite's largest buffer is 264 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80
MAX_NE = 256


class Ins(IntEnum):
    SELECT = 0xA4
    GET_RESPONSE = 0xC0
    AUTHENTICATE = 0x82
    READ_PURSE = 0x5C
    DEBIT = 0x30
    CREDIT = 0x32
    READ_LOG = 0xB2
    BLOCK = 0xB4


class SW(IntEnum):
    """The status words the card answers with (docs/card-protocol.md, "Status words")."""

    OK = 0x9000
    CARD_BLOCKED = 0x6283  # selected application deactivated
    VERIFICATION_FAILED = 0x6300  # authentication or load cryptogram failed
    COUNTER_EXHAUSTED = 0x6400  # execution error, state unchanged: counter at maximum
    MEMORY_FAILURE = 0x6581  # the card could not commit; state unchanged
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982  # no authenticated session
    CONDITIONS_NOT_SATISFIED = 0x6985  # insufficient funds, stale counter, no challenge
    SM_DATA_INCORRECT = 0x6988  # command MAC wrong: session closed
    WRONG_DATA = 0x6A80
    NOT_FOUND = 0x6A82  # application (AID) not found
    PURSE_LIMIT = 0x6A84  # credit would exceed the maximum balance
    WRONG_P1P2 = 0x6A86
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


SW1_MORE_DATA = 0x61
SW1_WRONG_LE = 0x6C


class ApduFormatError(ValueError):
    """A command APDU whose length bytes do not add up (answered 6700)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A short command APDU. `ne` is None when Le is absent; Le = 00 means 256."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    ne: int | None = None

    @property
    def header(self) -> bytes:
        return bytes([self.cla, self.ins, self.p1, self.p2])

    def to_bytes(self) -> bytes:
        out = self.header
        if self.data:
            if len(self.data) > 255:
                raise ApduFormatError("short APDUs carry at most 255 data bytes")
            out += bytes([len(self.data)]) + self.data
        if self.ne is not None:
            if not 1 <= self.ne <= MAX_NE:
                raise ApduFormatError("Ne is 1 to 256")
            out += bytes([self.ne & 0xFF])
        return out

    def with_ne(self, ne: int) -> Command:
        return Command(self.cla, self.ins, self.p1, self.p2, self.data, ne)

    @classmethod
    def parse(cls, raw: bytes) -> Command:
        """ISO 7816-3 cases 1 to 4, short form only."""
        if len(raw) < 4:
            raise ApduFormatError("shorter than a header")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0] or MAX_NE)
        lc = body[0]
        if lc == 0:
            raise ApduFormatError("extended length is not supported")
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, body[1:])
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, body[1 : 1 + lc], body[-1] or MAX_NE)
        raise ApduFormatError("Lc does not match the data")


@dataclass(frozen=True, slots=True)
class Response:
    """A response APDU. `sw` is an int: 61XX and 6CXX carry a count, so not every status
    word is an `SW` member."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise ApduFormatError("a response has at least a status word")
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))
