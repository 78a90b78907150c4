"""Gates and merchant terminals: one tap, from card connected to decision.

A gate tap is at most three round trips: SELECT, AUTHENTICATE (answers with the purse
record), DEBIT (or BLOCK for a hotlisted card). Before the gate opens, the certificate is
in the journal and fsynced.

Guarantees:
- A gate opens only for a debit whose certificate is durable in the journal, or for a
  repeated tap the fare rules let through free (`card_reader.fares`).
- Tearing: a card pulled after the debit committed on the chip but before the gate saw the
  answer carries that certificate in its purse record. At its next tap, any terminal
  journals it (as its own if it made it, else as forwarded): no certificate is lost, and
  the fare rules see the journey already recorded, so nothing is charged twice.
- A hotlisted card is blocked on the chip and refused; a card already blocked is refused
  at SELECT.
- A sale or load torn after the card committed it is not made twice: the terminal journals
  each attempt (card, terminal_seq, kind, amount) before sending it, and when the card
  comes back carrying, as a certificate this terminal did not have, exactly its last
  attempt, a retry of the same kind and amount is answered `recovered` (done, from the
  card's own record) instead of charging or loading again, after a restart too.
- A terminal whose journal cannot take the record (disk full, read-only, I/O error) does
  not debit or load: it refuses the tap with the journal's code (`journal_disk_full`,
  `journal_read_only`, `journal_write_failed`) and logs why. If the write fails after the
  card committed, the card carries the certificate and the next tap anywhere collects it.
- Card serials never reach a log in clear: results carry `mask_serial`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from card_reader.certificate import (
    TERMINAL_ID_PATTERN,
    Certificate,
    TransactionKind,
    mask_serial,
)
from card_reader.errors import (
    CardRefusedError,
    CardRemovedError,
    CardResponseInvalidError,
    NoCardError,
)
from card_reader.fares import GateMode, Line, Station, TapOutcome, check_gate_mode, plan_tap
from card_reader.hotlist import HotlistStore
from card_reader.journal import Attempt, Journal, JournalUnavailableError
from card_reader.keys import Sam
from card_reader.messages import PurseRecord
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel

log = logging.getLogger(__name__)

# Makes a load cryptogram for (serial, counter, amount): the issuer back office's answer.
CryptogramSource = Callable[[bytes, int, int], bytes]


@dataclass(frozen=True, slots=True)
class TapResult:
    opened: bool  # the gate opens / the sale or load went through
    code: str  # ok, repeat_tap, insufficient_funds, card_blocked, card_hotlisted, ...
    card: str | None = None  # masked serial
    amount: int = 0
    balance: int | None = None
    certificate: Certificate | None = None
    apdus: int = 0

    def describe(self) -> str:
        verdict = "OPEN" if self.opened else "REFUSED"
        balance = "" if self.balance is None else f" balance Rp {self.balance:,}"
        return f"{verdict} {self.code} card {self.card or '-'} Rp {self.amount:,}{balance}"


class _Terminal:
    """What gates and merchant terminals share: opening a session and collecting the
    card's last certificate."""

    def __init__(
        self,
        terminal_id: str,
        sam: Sam,
        journal: Journal,
        hotlist: HotlistStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not TERMINAL_ID_PATTERN.fullmatch(terminal_id):
            raise ValueError("a terminal id is 1 to 16 of A-Z a-z 0-9 . _ -")
        if journal.terminal_id != terminal_id:
            raise ValueError("the journal belongs to another terminal")
        self.terminal_id = terminal_id
        self.sam = sam
        self.journal = journal
        self.hotlist = hotlist
        self.clock = clock
        self._torn: Certificate | None = None  # this tap's card carried our torn certificate

    def _collect(self, last: Certificate | None) -> Certificate | None:
        """Journal the card's last certificate if this terminal does not have it yet: the
        tearing recovery (our own, answer lost) or forwarding (another terminal's).
        Returns the certificate when it was our own torn one."""
        if last is None or self.journal.has_certificate(last.card_serial, last.counter):
            return None
        own = last.terminal_id == self.terminal_id
        if own and self.journal.has_own_seq(last.terminal_seq):
            return None
        # Our own torn debit is money this terminal opened nothing for yet: make it durable
        # now. Another terminal's rides on the next fsync (the card still carries it).
        self.journal.record_certificate(last, durable=own)
        if not own:
            return None
        log.info("recovered torn transaction seq %d", last.terminal_seq)
        return last

    def _run(
        self, channel: ApduChannel, tap: Callable[[CardSession, PurseRecord, str], TapResult]
    ) -> TapResult:
        session = CardSession(channel, self.sam)
        card: str | None = None
        try:
            info = session.select()
            card = mask_serial(info.serial)
            if info.blocked:
                return TapResult(False, "card_blocked", card, apdus=channel.exchanges)
            purse = session.authenticate()
            self._torn = self._collect(purse.last_certificate)
            if self.hotlist.is_blocked(info.serial):
                session.block()
                log.warning("hotlisted card %s blocked", card)
                return TapResult(False, "card_hotlisted", card, apdus=channel.exchanges)
            result = tap(session, purse, card)
        except (CardRemovedError, NoCardError):
            result = TapResult(False, "card_removed", card)
        except CardRefusedError as error:
            result = TapResult(False, error.code, card)
        except CardResponseInvalidError:
            result = TapResult(False, "card_response_invalid", card)
        except JournalUnavailableError as error:
            log.error("tap refused, the journal cannot record it: %s", error)
            result = TapResult(False, error.code, card)
        return TapResult(
            result.opened,
            result.code,
            result.card,
            result.amount,
            result.balance,
            result.certificate,
            channel.exchanges,
        )


class Gate(_Terminal):
    """A fare gate (or a bus validator) at one station of one line."""

    def __init__(
        self,
        terminal_id: str,
        line: Line,
        station: Station,
        mode: GateMode,
        sam: Sam,
        journal: Journal,
        hotlist: HotlistStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_gate_mode(line, mode)
        super().__init__(terminal_id, sam, journal, hotlist, clock)
        self.line, self.station, self.mode = line, station, mode

    def process(self, channel: ApduChannel) -> TapResult:
        return self._run(channel, self._tap)

    def _tap(self, session: CardSession, purse: PurseRecord, card: str) -> TapResult:
        now = int(self.clock())
        plan = plan_tap(
            self.line,
            self.station,
            self.mode,
            balance=purse.balance,
            journey=purse.journey,
            last=purse.last_certificate,
            now=now,
        )
        if plan.outcome is TapOutcome.FREE:
            self.journal.sync()  # a forwarded certificate, if any, is made durable
            return TapResult(True, plan.code, card, 0, purse.balance)
        if plan.outcome is TapOutcome.REFUSE:
            return TapResult(False, plan.code, card, plan.amount, purse.balance)
        self.journal.check_writable()  # never take value that cannot be recorded
        cert = session.debit(
            amount=plan.amount,
            terminal_id=self.terminal_id,
            terminal_seq=self.journal.next_terminal_seq(),
            timestamp=now,
            journey=plan.journey,
        )
        self.journal.record_certificate(cert)  # fsynced before the gate opens
        return TapResult(True, "ok", card, cert.amount, cert.balance_after, cert)


class MerchantTerminal(_Terminal):
    """A shop's terminal: sales (debits without journey) and, at the issuer's service
    points, loads with a cryptogram from the issuer back office."""

    def _already_done(self, kind: TransactionKind, amount: int) -> Certificate | None:
        """The card's own record of our last attempt, if this retry is that very operation:
        the card committed it before its answer was lost, so it must not be made again."""
        attempt = self.journal.last_attempt()
        torn = self._torn
        if torn is None or attempt is None or not attempt.made(torn):
            return None
        if (torn.kind, torn.amount) != (kind, amount):
            return None
        log.info("recovered torn %s seq %d", kind.value, torn.terminal_seq)
        return torn

    def _attempt(self, serial: bytes, kind: TransactionKind, amount: int) -> int:
        """A new terminal sequence number, journaled with what is about to be sent."""
        seq = self.journal.next_terminal_seq()
        self.journal.record_attempt(Attempt(serial, seq, kind.value, amount))
        return seq

    def charge(self, channel: ApduChannel, amount: int) -> TapResult:
        if amount <= 0:
            raise ValueError("a sale is a positive amount of rupiah")
        return self._run(channel, lambda session, purse, card: self._sale(session, purse, amount))

    def _sale(self, session: CardSession, purse: PurseRecord, amount: int) -> TapResult:
        card = mask_serial(session.serial)
        done = self._already_done(TransactionKind.DEBIT, amount)
        if done is not None:
            return TapResult(True, "recovered", card, amount, done.balance_after, done)
        if purse.balance < amount:
            return TapResult(False, "insufficient_funds", card, amount, purse.balance)
        self.journal.check_writable()
        cert = session.debit(
            amount=amount,
            terminal_id=self.terminal_id,
            terminal_seq=self._attempt(session.serial, TransactionKind.DEBIT, amount),
            timestamp=int(self.clock()),
            journey=None,
        )
        self.journal.record_certificate(cert)
        return TapResult(True, "ok", card, amount, cert.balance_after, cert)

    def load(self, channel: ApduChannel, amount: int, cryptograms: CryptogramSource) -> TapResult:
        if amount <= 0:
            raise ValueError("a load is a positive amount of rupiah")
        return self._run(
            channel,
            lambda session, purse, card: self._load(session, purse, amount, cryptograms),
        )

    def _load(
        self,
        session: CardSession,
        purse: PurseRecord,
        amount: int,
        cryptograms: CryptogramSource,
    ) -> TapResult:
        card = mask_serial(session.serial)
        done = self._already_done(TransactionKind.CREDIT, amount)
        if done is not None:
            return TapResult(True, "recovered", card, amount, done.balance_after, done)
        if purse.balance + amount > purse.max_balance:
            return TapResult(False, "over_max_balance", card, amount, purse.balance)
        self.journal.check_writable()
        cryptogram = cryptograms(session.serial, purse.counter, amount)
        cert = session.credit(
            amount=amount,
            counter_before=purse.counter,
            cryptogram=cryptogram,
            terminal_id=self.terminal_id,
            terminal_seq=self._attempt(session.serial, TransactionKind.CREDIT, amount),
            timestamp=int(self.clock()),
        )
        self.journal.record_certificate(cert)
        return TapResult(True, "ok", card, amount, cert.balance_after, cert)
