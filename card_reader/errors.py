"""Every way talking to a card can fail, each with one stable code.

`ReaderError`s come from the reader side (PC/SC service, reader, card presence); a gate
recovers from them by waiting for the next tap or for the service to come back.
`CardRefusedError` is the card saying no with a status word; `CardResponseInvalidError` is an answer
that does not parse or whose session MAC is wrong (treated like a card that left).
Messages never contain a card serial or key material.
"""

from __future__ import annotations


class CardReaderError(Exception):
    """Base of all errors in talking to a card. `code` is stable; match on it."""

    code = "card_reader_error"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{self.code}: {detail}" if detail else self.code)


class ReaderError(CardReaderError):
    code = "reader_error"


class PcscServiceUnavailableError(ReaderError):
    """No PC/SC service: pcscd is not running or its socket is unreachable."""

    code = "pcsc_service_unavailable"


class NoReaderError(ReaderError):
    """The PC/SC service runs but has no (matching) reader."""

    code = "no_reader"


class ReaderUnavailableError(ReaderError):
    """The reader went away (unplugged, driver gone, or pcscd restarted)."""

    code = "reader_unavailable"


class NoCardError(ReaderError):
    """No card in the field when one was needed."""

    code = "no_card"


class CardRemovedError(ReaderError):
    """The card left the field during an exchange: the last command's outcome is unknown."""

    code = "card_removed"


class CardRefusedError(CardReaderError):
    """The card answered a command with an error status word; the card changed nothing.

    `code` names the meaning for that command (docs/card-protocol.md "Status words"),
    e.g. insufficient_funds, card_blocked, load_counter_mismatch.
    """

    def __init__(self, code: str, sw: int) -> None:
        self.code = code
        self.sw = sw
        super().__init__(f"status word {sw:04X}")


class CardResponseInvalidError(CardReaderError):
    """The answer does not parse, or its session MAC is wrong."""

    code = "card_response_invalid"
