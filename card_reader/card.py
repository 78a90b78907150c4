"""The JakartaOne card application: every command, as the chip runs it.

`VirtualCard.process` takes one command APDU and returns one response APDU. It never
raises: anything it cannot handle gets a status word (docs/card-protocol.md, "Status
words"). The same object runs in-process behind `InProcessTransport` (unit tests) and
behind vpcd (`card_reader.vpcd`) where real pcscd sees it.

Guarantees:
- A refused command changes nothing (non-volatile or session).
- DEBIT and CREDIT are atomic: the next state (balance, counter, journey, log) is built
  whole and committed with one `StateStore.save` before the answer is sent. If the card
  leaves the field before the save, nothing happened; after it, everything did, and the
  certificate is in the log for the next terminal to read.
- Every DEBIT and CREDIT increments the counter; a CREDIT needs a load cryptogram for this
  card's current counter, so no cryptogram is accepted twice.
- A blocked card refuses DEBIT and CREDIT (6283) from then on.
- Volatile state (selection, challenge, session, pending response) is cleared on power
  on, power off, reset, and SELECT.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from card_reader.apdu import (
    CLA_ISO,
    CLA_PROPRIETARY,
    MAX_NE,
    SW,
    SW1_MORE_DATA,
    SW1_WRONG_LE,
    ApduFormatError,
    Command,
    Ins,
    Response,
)
from card_reader.card_state import LOG_CAPACITY, REGISTERED_MAX_BALANCE, CardState, StateStore
from card_reader.certificate import (
    U32_MAX,
    Certificate,
    Journey,
    TransactionKind,
    certificate_mac,
    load_cryptogram_message,
)
from card_reader.keys import (
    CHALLENGE_LENGTH,
    JAKARTAONE_AID,
    SESSION_MAC_LENGTH,
    aes_cmac,
    session_mac,
    session_mac_key,
    terminal_cryptogram,
)
from card_reader.messages import (
    RESULT_LENGTH,
    CreditCommand,
    DebitCommand,
    MessageFormatError,
    PurseRecord,
    SelectInfo,
    TransactionResult,
    command_mac_message,
    encode_log,
    response_mac_message,
    split_mac,
)


class _RefusedError(Exception):
    def __init__(self, sw: int) -> None:
        self.sw = sw


@dataclass(slots=True)
class _Session:
    key: bytes
    counter: int  # the counter the next secured command must carry


class VirtualCard:
    def __init__(
        self,
        state: CardState,
        store: StateStore,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._state = state
        self._store = store
        self._random = random_bytes
        self.power_reset()

    @property
    def state(self) -> CardState:
        return self._state

    def power_reset(self) -> None:
        """Power on, power off or reset: forget everything volatile."""
        self._selected = False
        self._challenge: bytes | None = None
        self._session: _Session | None = None
        self._pending = b""

    def process(self, raw: bytes) -> bytes:
        try:
            return self._dispatch(raw).to_bytes()
        except _RefusedError as refusal:
            return Response(b"", refusal.sw).to_bytes()
        except Exception:  # a card never crashes: it answers 6F00
            self._session = None
            return Response(b"", SW.NO_PRECISE_DIAGNOSIS).to_bytes()

    def _dispatch(self, raw: bytes) -> Response:
        try:
            command = Command.parse(raw)
        except ApduFormatError:
            raise _RefusedError(SW.WRONG_LENGTH) from None
        if command.cla not in (CLA_ISO, CLA_PROPRIETARY):
            raise _RefusedError(SW.CLA_NOT_SUPPORTED)
        if command.ins != Ins.GET_RESPONSE:
            self._pending = b""
        handlers = _ISO_HANDLERS if command.cla == CLA_ISO else _PROPRIETARY_HANDLERS
        handler = handlers.get(command.ins)
        if handler is None:
            raise _RefusedError(SW.INS_NOT_SUPPORTED)
        return handler(self, command)

    # Answers ----------------------------------------------------------------------------

    @staticmethod
    def _fixed(command: Command, data: bytes) -> Response:
        """A fixed-length answer: 6CXX (before anything changes) when Le is too short."""
        if command.ne is not None and command.ne < len(data):
            raise _RefusedError(_wrong_le(len(data)))
        return Response(data, SW.OK)

    def _chained(self, command: Command, data: bytes) -> Response:
        """A long answer: the first Ne bytes now, 61XX, the rest by GET RESPONSE."""
        ne = command.ne or MAX_NE
        if len(data) <= ne:
            return Response(data, SW.OK)
        self._pending = data[ne:]
        return Response(data[:ne], _more_data(len(self._pending)))

    def _secured_data(self, command: Command) -> bytes:
        """Check the session and the command MAC; return the data without the MAC."""
        session = self._session
        if session is None:
            raise _RefusedError(SW.SECURITY_STATUS_NOT_SATISFIED)
        try:
            data, mac = split_mac(command.data)
        except MessageFormatError:
            raise _RefusedError(SW.WRONG_LENGTH) from None
        expected = session_mac(
            session.key, session.counter, command_mac_message(command.header, data)
        )
        if not hmac.compare_digest(expected, mac):
            # A wrong MAC may be an attack on the session: end it.
            self._session = None
            raise _RefusedError(SW.SM_DATA_INCORRECT)
        return data

    def _secured_answer(self, data: bytes) -> bytes:
        """Response data || MAC, and move the session counter on."""
        session = self._session
        assert session is not None
        mac = session_mac(session.key, session.counter, response_mac_message(data))
        session.counter += 1
        return data + mac

    def _check_secured_le(self, command: Command, length: int) -> None:
        if command.ne is not None and command.ne < length + SESSION_MAC_LENGTH:
            raise _RefusedError(_wrong_le(length + SESSION_MAC_LENGTH))

    def _commit(self, state: CardState) -> None:
        try:
            self._store.save(state)
        except OSError:
            self._end_session()
            raise _RefusedError(SW.MEMORY_FAILURE) from None
        self._state = state

    def _purse(self) -> PurseRecord:
        state = self._state
        last = state.last_certificate
        return PurseRecord(
            blocked=state.blocked,
            registered=state.max_balance >= REGISTERED_MAX_BALANCE,
            balance=state.balance,
            max_balance=state.max_balance,
            counter=state.counter,
            journey=state.journey,
            last_certificate=Certificate.from_bytes(last) if last else None,
        )

    # Commands ---------------------------------------------------------------------------

    def _select(self, command: Command) -> Response:
        if command.p1 != 0x04 or command.p2 != 0x00:
            raise _RefusedError(SW.WRONG_P1P2)
        if command.data != JAKARTAONE_AID:
            self.power_reset()
            raise _RefusedError(SW.NOT_FOUND)
        info = SelectInfo(
            serial=self._state.serial,
            challenge=self._random(CHALLENGE_LENGTH),
            blocked=self._state.blocked,
            registered=self._state.max_balance >= REGISTERED_MAX_BALANCE,
        )
        answer = self._fixed(command, info.to_bytes())
        self.power_reset()
        self._selected = True
        self._challenge = info.challenge
        return answer

    def _get_response(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        if not self._pending:
            raise _RefusedError(SW.CONDITIONS_NOT_SATISFIED)
        ne = command.ne or MAX_NE
        chunk, self._pending = self._pending[:ne], self._pending[ne:]
        if self._pending:
            return Response(chunk, _more_data(len(self._pending)))
        return Response(chunk, SW.OK)

    def _authenticate(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        if len(command.data) != CHALLENGE_LENGTH + SESSION_MAC_LENGTH:
            raise _RefusedError(SW.WRONG_LENGTH)
        challenge = self._challenge
        if not self._selected or challenge is None:
            raise _RefusedError(SW.CONDITIONS_NOT_SATISFIED)
        purse = self._purse().to_bytes()
        self._check_secured_le(command, len(purse))
        # One attempt per challenge: a wrong guess costs the terminal a new SELECT.
        self._challenge = None
        terminal_challenge = command.data[:CHALLENGE_LENGTH]
        key = self._state.keys.authentication
        proof = terminal_cryptogram(key, challenge, terminal_challenge)
        if not hmac.compare_digest(proof, command.data[CHALLENGE_LENGTH:]):
            raise _RefusedError(SW.VERIFICATION_FAILED)
        self._session = _Session(session_mac_key(key, challenge, terminal_challenge), 0)
        return Response(self._secured_answer(purse), SW.OK)

    def _read_purse(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        purse = self._purse().to_bytes()
        self._check_secured_le(command, len(purse))
        if self._secured_data(command):
            self._end_session()
            raise _RefusedError(SW.WRONG_LENGTH)
        return Response(self._secured_answer(purse), SW.OK)

    def _read_log(self, command: Command) -> Response:
        if not 1 <= command.p1 <= LOG_CAPACITY or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        if self._secured_data(command):
            self._end_session()
            raise _RefusedError(SW.WRONG_LENGTH)
        data = self._secured_answer(encode_log(self._state.log[: command.p1]))
        return self._chained(command, data)

    def _block(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        self._check_secured_le(command, 1)
        if self._secured_data(command):
            self._end_session()
            raise _RefusedError(SW.WRONG_LENGTH)
        if not self._state.blocked:
            self._commit(replace(self._state, blocked=True))
        return Response(self._secured_answer(b"\x01"), SW.OK)

    def _debit(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        self._check_secured_le(command, RESULT_LENGTH)
        data = self._secured_data(command)
        try:
            debit = DebitCommand.from_bytes(data)
        except MessageFormatError as error:
            self._end_session()
            raise _RefusedError(SW.WRONG_LENGTH if error.wrong_length else SW.WRONG_DATA) from None
        state = self._state
        if state.blocked:
            self._end_session()
            raise _RefusedError(SW.CARD_BLOCKED)
        if state.counter >= U32_MAX:
            self._end_session()
            raise _RefusedError(SW.COUNTER_EXHAUSTED)
        if debit.amount > state.balance:
            self._end_session()
            raise _RefusedError(SW.CONDITIONS_NOT_SATISFIED)
        return self._transact(
            TransactionKind.DEBIT,
            amount=debit.amount,
            balance=state.balance - debit.amount,
            terminal_id=debit.terminal_id,
            terminal_seq=debit.terminal_seq,
            timestamp=debit.timestamp,
            journey=debit.journey,
        )

    def _credit(self, command: Command) -> Response:
        if command.p1 != 0 or command.p2 != 0:
            raise _RefusedError(SW.WRONG_P1P2)
        self._check_secured_le(command, RESULT_LENGTH)
        data = self._secured_data(command)
        try:
            credit = CreditCommand.from_bytes(data)
        except MessageFormatError as error:
            self._end_session()
            raise _RefusedError(SW.WRONG_LENGTH if error.wrong_length else SW.WRONG_DATA) from None
        state = self._state
        refusal: int | None = None
        if credit.amount == 0:
            refusal = SW.WRONG_DATA
        elif state.blocked:
            refusal = SW.CARD_BLOCKED
        elif state.counter >= U32_MAX:
            refusal = SW.COUNTER_EXHAUSTED
        elif credit.counter_before != state.counter:
            refusal = SW.CONDITIONS_NOT_SATISFIED  # a replayed or stale cryptogram
        else:
            message = load_cryptogram_message(state.serial, state.counter, credit.amount)
            if not hmac.compare_digest(aes_cmac(state.keys.load, message), credit.cryptogram):
                refusal = SW.VERIFICATION_FAILED
            elif state.balance + credit.amount > state.max_balance:
                refusal = SW.PURSE_LIMIT
        if refusal is not None:
            self._end_session()
            raise _RefusedError(refusal)
        return self._transact(
            TransactionKind.CREDIT,
            amount=credit.amount,
            balance=state.balance + credit.amount,
            terminal_id=credit.terminal_id,
            terminal_seq=credit.terminal_seq,
            timestamp=credit.timestamp,
            journey=None,
        )

    def _end_session(self) -> None:
        """A secured command refused after its MAC was checked ends the session: the
        terminal starts again with SELECT, so both sides never disagree on the counter."""
        self._session = None

    def _transact(
        self,
        kind: TransactionKind,
        *,
        amount: int,
        balance: int,
        terminal_id: str,
        terminal_seq: int,
        timestamp: int,
        journey: Journey | None,
    ) -> Response:
        """Commit one transaction. A journey given is written; None keeps the card's."""
        state = self._state
        unsigned = Certificate(
            card_serial=state.serial,
            counter=state.counter + 1,
            kind=kind,
            amount=amount,
            balance_after=balance,
            terminal_id=terminal_id,
            terminal_seq=terminal_seq,
            timestamp=timestamp,
            journey=journey,
            mac=bytes(16),
        )
        mac = certificate_mac(state.keys.certificate, unsigned.signed_bytes())
        entry = unsigned.signed_bytes() + mac
        self._commit(
            replace(
                state,
                balance=balance,
                counter=state.counter + 1,
                journey=journey or state.journey,
                log=((entry, *state.log))[:LOG_CAPACITY],
            )
        )
        result = TransactionResult(balance, state.counter + 1, mac).to_bytes()
        return Response(self._secured_answer(result), SW.OK)


def _wrong_le(length: int) -> int:
    return (SW1_WRONG_LE << 8) | (length & 0xFF)


def _more_data(remaining: int) -> int:
    # 61 00 means 256 or more bytes remain.
    return (SW1_MORE_DATA << 8) | (min(remaining, MAX_NE) & 0xFF)


_Handler = Callable[[VirtualCard, Command], Response]
_ISO_HANDLERS: dict[int, _Handler] = {
    Ins.SELECT: VirtualCard._select,
    Ins.GET_RESPONSE: VirtualCard._get_response,
}
_PROPRIETARY_HANDLERS: dict[int, _Handler] = {
    Ins.AUTHENTICATE: VirtualCard._authenticate,
    Ins.READ_PURSE: VirtualCard._read_purse,
    Ins.DEBIT: VirtualCard._debit,
    Ins.CREDIT: VirtualCard._credit,
    Ins.READ_LOG: VirtualCard._read_log,
    Ins.BLOCK: VirtualCard._block,
}
