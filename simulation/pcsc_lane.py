"""A share of the day's taps through real PC/SC: pyscard -> pcscd -> vpcd -> the virtual
card, where pcscd and vsmartcard-vpcd are installed (started here if need be, as the
card tests do); everywhere else every tap goes through the in-process transport.

The lane uses vpcd's second reader ("Virtual PCD 00 01", TCP 35964), leaving the first to
the test suite. Approximation, labelled: the card in the reader's field stays connected to
vpcd and each tap puts the next holder's card logic behind it, where a real reader would
see one card leave and the next arrive (vpcd's 0.6 s re-appearance delay per card would
otherwise dominate the run). Every APDU of those taps still crosses pcscd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from card_reader.card import VirtualCard
from card_reader.errors import CardReaderError
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

    def start(self, first_card: VirtualCard) -> bool:
        """True if real PC/SC is available; else `why_not` says why."""
        try:
            self._pcscd = ensure_pcscd()
            self._context = PcscContext()
            self.reader = self._context.find_reader(READER)
            self._vpcd = VpcdCard(first_card, port=PORT)
            self._vpcd.tap()
            PcscTransport.when_present(self._context, self.reader, timeout=10).close()
        except (CardReaderError, OSError) as error:
            self.why_not = str(error) or type(error).__name__
            self.stop()
            return False
        return True

    def transport_for(self, rider: Rider) -> Transport | None:
        if self._vpcd is None or self._context is None:
            return None
        self._vpcd.card = rider.card
        rider.card.power_reset()
        try:
            return PcscTransport(self._context, self.reader)
        except CardReaderError:
            return None

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
