"""Moving APDUs: the transport interface, the in-process transport, and the channel that
handles ISO 7816-4 response chaining (61XX) and wrong-Le retries (6CXX).

The protocol code (`card_reader.protocol`) talks to an `ApduChannel`; the channel talks to
a `Transport`: `InProcessTransport` (the card logic in this process, for fast tests) or
`card_reader.pcsc.PcscTransport` (real pcscd, vpcd and a virtual card, or a real reader).
"""

from __future__ import annotations

from typing import Protocol

from card_reader.apdu import CLA_ISO, SW1_MORE_DATA, SW1_WRONG_LE, Command, Ins, Response
from card_reader.card import VirtualCard
from card_reader.errors import CardRemovedError, CardResponseInvalidError, NoCardError

# A response longer than this many GET RESPONSE rounds is a card gone wrong.
MAX_CHAINED_RESPONSES = 16


class Transport(Protocol):
    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU, return the raw response (data and status word).
        Raises a `ReaderError` when the card or reader is not there."""
        ...


class InProcessTransport:
    """The virtual card in this process, with taps, removals and tearing on demand.

    `tear_next(ins, after_commit=...)` makes the next command with that INS "lose the
    card": before the card processes it (nothing happens) or after (the card committed,
    the answer is lost), exactly the two cases of a card pulled mid-command.
    """

    def __init__(self, card: VirtualCard, *, present: bool = True) -> None:
        self.card = card
        self.present = present
        self.exchanges = 0
        self._tear: tuple[int, bool] | None = None

    def tap(self) -> None:
        self.present = True
        self.card.power_reset()

    def remove(self) -> None:
        self.present = False
        self.card.power_reset()

    def tear_next(self, ins: int, *, after_commit: bool) -> None:
        self._tear = (ins, after_commit)

    def transmit(self, apdu: bytes) -> bytes:
        if not self.present:
            raise NoCardError("no card in the field")
        self.exchanges += 1
        tear = self._tear
        if tear is not None and len(apdu) > 1 and apdu[1] == tear[0]:
            self._tear = None
            if tear[1]:
                self.card.process(apdu)
            self.remove()
            raise CardRemovedError("the card left the field during the command")
        return self.card.process(apdu)


class ApduChannel:
    """Sends commands and returns whole responses.

    - 61XX: the card has more data; fetch it with GET RESPONSE (00 C0 00 00 XX) and join.
    - 6CXX: the card wants Le = XX; send the same command again with that Le, once.
    `exchanges` counts every command/response round trip, follow-ups included.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.exchanges = 0

    def _round_trip(self, command: Command) -> Response:
        self.exchanges += 1
        raw = self.transport.transmit(command.to_bytes())
        if len(raw) < 2:
            raise CardResponseInvalidError("a response without a status word")
        return Response.parse(raw)

    def send(self, command: Command) -> Response:
        response = self._round_trip(command)
        if response.sw1 == SW1_WRONG_LE:
            response = self._round_trip(command.with_ne(response.sw2 or 256))
        data = response.data
        rounds = 0
        while response.sw1 == SW1_MORE_DATA:
            rounds += 1
            if rounds > MAX_CHAINED_RESPONSES:
                raise CardResponseInvalidError("the card keeps chaining its response")
            response = self._round_trip(
                Command(CLA_ISO, Ins.GET_RESPONSE, 0, 0, b"", response.sw2 or 256)
            )
            data += response.data
        return Response(data, response.sw)
