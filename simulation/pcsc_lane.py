"""A share of the day's taps through real PC/SC: pyscard -> pcscd -> vpcd -> the virtual
card, where pcscd and vsmartcard-vpcd are installed (started here if need be, as the
card tests do); everywhere else every tap goes through the in-process transport.

The lane uses vpcd's second reader ("Virtual PCD 00 01", TCP 35964), leaving the first to
the test suite. Approximation, labelled: the card in the reader's field stays connected to
vpcd and each tap puts the next holder's card logic behind it, where a real reader would
see one card leave and the next arrive (vpcd's 0.6 s re-appearance delay per card would
otherwise dominate the run). Every APDU of those taps still crosses pcscd.

Between those taps the reader holds a card of the lane's own: pcscd powers the card off
when a tap's connection closes, and vpcd delivers that later, in its own thread; it must
reach no holder's card, which a worker may be topping up by then.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable

from card_reader.card import VirtualCard
from card_reader.card_state import UNREGISTERED_MAX_BALANCE, CardState, MemoryStore
from card_reader.errors import CardReaderError
from card_reader.keys import BackOfficeKeys, personalize
from card_reader.pcsc import PcscContext, PcscTransport
from card_reader.pcscd import PcscdProcess, ensure_pcscd
from card_reader.transport import Transport
from card_reader.vpcd import VpcdCard
from simulation.people import Rider

READER = "Virtual PCD 00 01"
PORT = 35964


class PcscLane:
    def __init__(self) -> None:
        self.why_not = ""
        self._pcscd: PcscdProcess | None = None
        self._context: PcscContext | None = None
        self._vpcd: VpcdCard | None = None
        self.reader = ""
        self._idle = _idle_card()

    def start(self) -> bool:
        """True if real PC/SC is available; else `why_not` says why."""
        try:
            self._pcscd = ensure_pcscd()
            self._context = PcscContext()
            self.reader = self._context.find_reader(READER)
            self._vpcd = VpcdCard(self._idle, port=PORT)
            self._vpcd.tap()
            PcscTransport.when_present(self._context, self.reader, timeout=10).close()
        except (CardReaderError, OSError) as error:
            self.why_not = str(error) or type(error).__name__
            self.stop()
            return False
        return True

    def transport_for(self, rider: Rider) -> Transport | None:
        """The rider's card in the reader, for one tap; closing the transport ends it."""
        if self._vpcd is None or self._context is None:
            return None
        self._vpcd.card = rider.card
        rider.card.power_reset()
        try:
            return _Tap(PcscTransport(self._context, self.reader), self._park)
        except CardReaderError:
            self._park()
            return None

    def _park(self) -> None:
        if self._vpcd is not None:
            self._vpcd.card = self._idle

    @property
    def transports(self) -> Callable[[Rider], Transport | None]:
        return self.transport_for

    def stop(self) -> None:
        if self._vpcd is not None:
            self._vpcd.remove()
            self._vpcd = None
        if self._context is not None:
            with contextlib.suppress(Exception):
                self._context.close()
            self._context = None
        if self._pcscd is not None:
            self._pcscd.stop()
            self._pcscd = None


class _Tap:
    """One tap through the reader: the PC/SC connection, and the lane's idle card back in
    the field when it closes."""

    def __init__(self, transport: PcscTransport, park: Callable[[], None]) -> None:
        self._transport = transport
        self._park = park

    def transmit(self, apdu: bytes) -> bytes:
        return self._transport.transmit(apdu)

    def close(self) -> None:
        try:
            self._transport.close()
        finally:
            self._park()


def _idle_card() -> VirtualCard:
    """A card no one holds, personalized with keys made for it alone."""
    serial = secrets.token_bytes(8)
    keys = BackOfficeKeys(secrets.token_bytes(16), secrets.token_bytes(16))
    state = CardState(
        serial=serial,
        keys=personalize(serial, secrets.token_bytes(16), keys),
        balance=0,
        max_balance=UNREGISTERED_MAX_BALANCE,
    )
    return VirtualCard(state, MemoryStore())
