"""The terminal's side of the JakartaOne protocol, over any `ApduChannel`.

A gate debit is three round trips: SELECT (serial, challenge), AUTHENTICATE (mutual
authentication; answers with the purse record), DEBIT (answers with the new balance,
counter and the certificate MAC). docs/card-protocol.md specifies every byte.

Guarantees:
- Every answer inside a session is checked against its session MAC (via the SAM) before
  it is believed; a wrong MAC raises `CardResponseInvalidError`.
- A card's refusal raises `CardRefusedError` with the meaning of its status word for that
  command (`STATUS_MEANINGS`), never a bare number.
"""

from __future__ import annotations

from card_reader.apdu import CLA_ISO, CLA_PROPRIETARY, SW, Command, Ins, Response
from card_reader.certificate import (
    Certificate,
    CertificateFormatError,
    Journey,
    TransactionKind,
)
from card_reader.errors import CardRefusedError, CardResponseInvalidError
from card_reader.keys import JAKARTAONE_AID, Sam, SamSession
from card_reader.messages import (
    CreditCommand,
    DebitCommand,
    MessageFormatError,
    PurseRecord,
    SelectInfo,
    TransactionResult,
    command_mac_message,
    decode_log,
    response_mac_message,
    split_mac,
)
from card_reader.transport import ApduChannel

# What each status word means, per command; then for any command.
STATUS_MEANINGS: dict[Ins | None, dict[int, str]] = {
    Ins.SELECT: {SW.NOT_FOUND: "application_not_found"},
    Ins.AUTHENTICATE: {
        SW.VERIFICATION_FAILED: "authentication_failed",
        SW.CONDITIONS_NOT_SATISFIED: "not_selected",
    },
    Ins.DEBIT: {
        SW.CONDITIONS_NOT_SATISFIED: "insufficient_funds",
        SW.CARD_BLOCKED: "card_blocked",
        SW.COUNTER_EXHAUSTED: "counter_exhausted",
        SW.WRONG_DATA: "debit_data_invalid",
    },
    Ins.CREDIT: {
        SW.CONDITIONS_NOT_SATISFIED: "load_counter_mismatch",
        SW.VERIFICATION_FAILED: "load_cryptogram_invalid",
        SW.PURSE_LIMIT: "over_max_balance",
        SW.CARD_BLOCKED: "card_blocked",
        SW.COUNTER_EXHAUSTED: "counter_exhausted",
        SW.WRONG_DATA: "credit_data_invalid",
    },
    None: {
        SW.SECURITY_STATUS_NOT_SATISFIED: "no_session",
        SW.SM_DATA_INCORRECT: "session_mac_invalid",
        SW.WRONG_LENGTH: "wrong_length",
        SW.WRONG_P1P2: "wrong_p1p2",
        SW.INS_NOT_SUPPORTED: "ins_not_supported",
        SW.CLA_NOT_SUPPORTED: "cla_not_supported",
        SW.MEMORY_FAILURE: "card_memory_failure",
        SW.NO_PRECISE_DIAGNOSIS: "card_internal_error",
    },
}


def refusal_code(ins: Ins, sw: int) -> str:
    meaning = STATUS_MEANINGS.get(ins, {}).get(sw) or STATUS_MEANINGS[None].get(sw)
    return meaning or f"status_{sw:04x}"


class CardSession:
    """One card in the field, from SELECT to the end of its session."""

    def __init__(self, channel: ApduChannel, sam: Sam) -> None:
        self.channel = channel
        self._sam = sam
        self._info: SelectInfo | None = None
        self._sam_session: SamSession | None = None
        self._counter = 0

    @property
    def serial(self) -> bytes:
        if self._info is None:
            raise CardResponseInvalidError("SELECT first")
        return self._info.serial

    def _send(self, ins: Ins, command: Command) -> bytes:
        response: Response = self.channel.send(command)
        if response.sw != SW.OK:
            if ins is not Ins.SELECT:
                self._sam_session = None  # a refused secured command ends the session
            raise CardRefusedError(refusal_code(ins, response.sw), response.sw)
        return response.data

    def _secured(self, ins: Ins, p1: int, data: bytes) -> bytes:
        sam = self._sam_session
        if sam is None:
            raise CardRefusedError("no_session", SW.SECURITY_STATUS_NOT_SATISFIED)
        self._counter += 1
        header = bytes([CLA_PROPRIETARY, ins, p1, 0])
        mac = sam.command_mac(self._counter, command_mac_message(header, data))
        answer = self._send(ins, Command(CLA_PROPRIETARY, ins, p1, 0, data + mac, 256))
        return self._checked(answer)

    def _checked(self, answer: bytes) -> bytes:
        sam = self._sam_session
        assert sam is not None
        try:
            data, mac = split_mac(answer)
        except MessageFormatError:
            raise CardResponseInvalidError("answer too short for its MAC") from None
        if not sam.response_mac_valid(self._counter, response_mac_message(data), mac):
            self._sam_session = None
            raise CardResponseInvalidError("wrong session MAC on the card's answer")
        return data

    def select(self) -> SelectInfo:
        data = self._send(Ins.SELECT, Command(CLA_ISO, Ins.SELECT, 0x04, 0x00, JAKARTAONE_AID, 256))
        try:
            self._info = SelectInfo.from_bytes(data)
        except MessageFormatError as error:
            raise CardResponseInvalidError(f"SELECT answer: {error.reason}") from None
        self._sam_session = None
        return self._info

    def authenticate(self) -> PurseRecord:
        """Mutual authentication; the card answers with its purse record."""
        info = self._info
        if info is None:
            raise CardResponseInvalidError("SELECT first")
        sam = self._sam.open_session(info.serial, info.challenge)
        data = sam.terminal_challenge + sam.terminal_cryptogram
        answer = self._send(
            Ins.AUTHENTICATE, Command(CLA_PROPRIETARY, Ins.AUTHENTICATE, 0, 0, data, 256)
        )
        self._sam_session = sam
        self._counter = 0
        return self._purse(self._checked(answer))

    def _purse(self, data: bytes) -> PurseRecord:
        try:
            return PurseRecord.from_bytes(data)
        except MessageFormatError as error:
            raise CardResponseInvalidError(f"purse record: {error.reason}") from None

    def read_purse(self) -> PurseRecord:
        return self._purse(self._secured(Ins.READ_PURSE, 0, b""))

    def debit(
        self,
        *,
        amount: int,
        terminal_id: str,
        terminal_seq: int,
        timestamp: int,
        journey: Journey | None,
    ) -> Certificate:
        command = DebitCommand(amount, terminal_seq, timestamp, terminal_id, journey)
        result = self._result(self._secured(Ins.DEBIT, 0, command.to_bytes()))
        return self._certificate(
            TransactionKind.DEBIT, amount, result, terminal_id, terminal_seq, timestamp, journey
        )

    def credit(
        self,
        *,
        amount: int,
        counter_before: int,
        cryptogram: bytes,
        terminal_id: str,
        terminal_seq: int,
        timestamp: int,
    ) -> Certificate:
        command = CreditCommand(
            amount, counter_before, cryptogram, terminal_seq, timestamp, terminal_id
        )
        result = self._result(self._secured(Ins.CREDIT, 0, command.to_bytes()))
        return self._certificate(
            TransactionKind.CREDIT, amount, result, terminal_id, terminal_seq, timestamp, None
        )

    def read_log(self, count: int) -> list[Certificate]:
        """The card's last `count` certificates (1 to 16), newest first."""
        data = self._secured(Ins.READ_LOG, count, b"")
        try:
            return decode_log(data)
        except MessageFormatError as error:
            raise CardResponseInvalidError(f"log: {error.reason}") from None

    def block(self) -> None:
        """Block the card on the chip (it refuses DEBIT and CREDIT from now on)."""
        if self._secured(Ins.BLOCK, 0, b"") != b"\x01":
            raise CardResponseInvalidError("BLOCK answer")

    def _result(self, data: bytes) -> TransactionResult:
        try:
            return TransactionResult.from_bytes(data)
        except MessageFormatError as error:
            raise CardResponseInvalidError(f"transaction result: {error.reason}") from None

    def _certificate(
        self,
        kind: TransactionKind,
        amount: int,
        result: TransactionResult,
        terminal_id: str,
        terminal_seq: int,
        timestamp: int,
        journey: Journey | None,
    ) -> Certificate:
        try:
            return Certificate(
                card_serial=self.serial,
                counter=result.counter,
                kind=kind,
                amount=amount,
                balance_after=result.balance,
                terminal_id=terminal_id,
                terminal_seq=terminal_seq,
                timestamp=timestamp,
                journey=journey,
                mac=result.certificate_mac,
            )
        except CertificateFormatError as error:
            raise CardResponseInvalidError(f"certificate: {error.reason.value}") from None
