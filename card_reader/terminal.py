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
- A sale or load torn after the card committed it is not made twice: the terminal
  remembers the (card, terminal sequence number) of its attempt that got no answer, and
  when that card comes back with that certificate as its last one, for the same kind and
  amount, the attempt is answered `recovered` (done, from the card's own record) instead
  of charging or loading again.
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
from card_reader.journal import Journal, JournalUnavailableError
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

    def _collect(self, last: Certificate | None) -> None:
        """Journal the card's last certificate if this terminal does not have it yet: the
        tearing recovery (our own, answer lost) or forwarding (another terminal's)."""
        if last is None or self.journal.has_certificate(last.card_serial, last.counter):
            return
        own = last.terminal_id == self.terminal_id
        if own and self.journal.has_own_seq(last.terminal_seq):
            return
        # Our own torn debit is money this terminal opened nothing for yet: make it durable
        # now. Another terminal's rides on the next fsync (the card still carries it).
        self.journal.record_certificate(last, durable=own)
        if own:
            log.info("recovered torn transaction seq %d", last.terminal_seq)

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
            self._collect(purse.last_certificate)
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

    # (card serial, terminal_seq) of the last sale or load sent to a card whose answer
    # was lost (the card left the field); cleared when an answer arrives.
    _unanswered: tuple[bytes, int] | None = None

    def _already_done(
        self, purse: PurseRecord, kind: TransactionKind, amount: int
    ) -> Certificate | None:
        """The card's own record of our unanswered attempt, if it is this very operation:
        the card committed it before it left, so it must not be made again."""
        last = purse.last_certificate
        if (
            last is None
            or self._unanswered != (last.card_serial, last.terminal_seq)
            or last.terminal_id != self.terminal_id
            or (last.kind, last.amount) != (kind, amount)
        ):
            return None
        self._unanswered = None
        log.info("recovered torn %s seq %d", kind.value, last.terminal_seq)
        return last

    def _attempt(self, serial: bytes) -> int:
        """A new terminal sequence number, remembered until the card answers."""
        seq = self.journal.next_terminal_seq()
        self._unanswered = (serial, seq)
        return seq

    def charge(self, channel: ApduChannel, amount: int) -> TapResult:
        if amount <= 0:
            raise ValueError("a sale is a positive amount of rupiah")
        return self._run(channel, lambda session, purse, card: self._sale(session, purse, amount))

    def _sale(self, session: CardSession, purse: PurseRecord, amount: int) -> TapResult:
        card = mask_serial(session.serial)
        done = self._already_done(purse, TransactionKind.DEBIT, amount)
        if done is not None:
            return TapResult(True, "recovered", card, amount, done.balance_after, done)
        if purse.balance < amount:
            return TapResult(False, "insufficient_funds", card, amount, purse.balance)
        self.journal.check_writable()
        cert = session.debit(
            amount=amount,
            terminal_id=self.terminal_id,
            terminal_seq=self._attempt(session.serial),
            timestamp=int(self.clock()),
            journey=None,
        )
        self._unanswered = None
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
        done = self._already_done(purse, TransactionKind.CREDIT, amount)
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
            terminal_seq=self._attempt(session.serial),
            timestamp=int(self.clock()),
        )
        self._unanswered = None
        self.journal.record_certificate(cert)
        return TapResult(True, "ok", card, amount, cert.balance_after, cert)
