"""The reader side over PC/SC (pyscard): reader discovery, tap detection, the APDU
transport, and clear errors for every way the stack can fail.

- `PcscContext`: one connection to the PC/SC service (pcscd). Lists readers.
- `PcscTransport`: one card connection; `transmit` for `ApduChannel`.
- `TapMonitor`: pyscard's `CardMonitor` turned into a queue of taps, restarted when the
  service comes back after going away.

Every PC/SC failure becomes one of `card_reader.errors`: `PcscServiceUnavailableError`
(no pcscd), `NoReaderError`, `ReaderUnavailableError` (reader gone), `NoCardError`,
`CardRemovedError` (card left mid-exchange).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from types import TracebackType
from typing import Any

from smartcard import CardMonitoring
from smartcard.CardMonitoring import CardMonitor, CardObserver
from smartcard.scard import (
    SCARD_E_INVALID_HANDLE,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_E_NO_SMARTCARD,
    SCARD_E_NOT_TRANSACTED,
    SCARD_E_READER_UNAVAILABLE,
    SCARD_E_SERVICE_STOPPED,
    SCARD_E_UNKNOWN_READER,
    SCARD_F_COMM_ERROR,
    SCARD_PCI_T1,
    SCARD_PROTOCOL_T1,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_SHARE_SHARED,
    SCARD_STATE_PRESENT,
    SCARD_STATE_UNAWARE,
    SCARD_UNPOWER_CARD,
    SCARD_W_REMOVED_CARD,
    SCARD_W_RESET_CARD,
    SCARD_W_UNPOWERED_CARD,
    SCARD_W_UNRESPONSIVE_CARD,
    SCardConnect,
    SCardDisconnect,
    SCardEstablishContext,
    SCardGetErrorMessage,
    SCardGetStatusChange,
    SCardListReaders,
    SCardReleaseContext,
    SCardTransmit,
)

from card_reader.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    PcscServiceUnavailableError,
    ReaderError,
    ReaderUnavailableError,
)

log = logging.getLogger(__name__)

_SERVICE_GONE = {
    SCARD_E_NO_SERVICE,
    SCARD_E_SERVICE_STOPPED,
    SCARD_F_COMM_ERROR,
    SCARD_E_INVALID_HANDLE,
}
_READER_GONE = {SCARD_E_READER_UNAVAILABLE, SCARD_E_UNKNOWN_READER}
_CARD_GONE = {
    SCARD_E_NO_SMARTCARD,
    SCARD_W_REMOVED_CARD,
    SCARD_W_RESET_CARD,
    SCARD_W_UNPOWERED_CARD,
    SCARD_W_UNRESPONSIVE_CARD,
    SCARD_E_NOT_TRANSACTED,
}


def _describe(hresult: int) -> str:
    return f"{SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"


def _error(hresult: int, *, connecting: bool = False) -> ReaderError:
    """The `ReaderError` for a PC/SC result code."""
    detail = _describe(hresult)
    if hresult in _SERVICE_GONE:
        return PcscServiceUnavailableError(detail)
    if hresult in _READER_GONE:
        return ReaderUnavailableError(detail)
    if hresult == SCARD_E_NO_READERS_AVAILABLE:
        return NoReaderError(detail)
    if hresult in _CARD_GONE:
        return NoCardError(detail) if connecting else CardRemovedError(detail)
    return ReaderError(detail)


class PcscContext:
    """A connection to the PC/SC service. Create one per process (or per thread)."""

    def __init__(self) -> None:
        hresult, self._handle = SCardEstablishContext(SCARD_SCOPE_USER)
        if hresult != SCARD_S_SUCCESS:
            raise PcscServiceUnavailableError(_describe(hresult))

    @property
    def handle(self) -> Any:
        return self._handle

    def readers(self) -> list[str]:
        hresult, readers = SCardListReaders(self._handle, [])
        if hresult == SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != SCARD_S_SUCCESS:
            raise _error(hresult)
        return list(readers)

    def find_reader(self, name: str | None = None) -> str:
        """The first reader whose name contains `name` (any reader if None)."""
        readers = self.readers()
        for reader in readers:
            if name is None or name in reader:
                return reader
        wanted = f"matching {name!r}" if name else "at all"
        raise NoReaderError(f"no reader {wanted}; readers: {readers}")

    def card_present(self, reader: str) -> bool:
        """Whether pcscd currently sees a card in `reader` (no connection is made)."""
        hresult, states = SCardGetStatusChange(self._handle, 0, [(reader, SCARD_STATE_UNAWARE)])
        if hresult != SCARD_S_SUCCESS:
            raise _error(hresult)
        _name, event_state, _atr = states[0]
        return bool(event_state & SCARD_STATE_PRESENT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            SCardReleaseContext(self._handle)

    def __enter__(self) -> PcscContext:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcscTransport:
    """One connection to the card in `reader`, T=1. Close it (or use `with`) to power the
    card off, which clears its volatile state for the next terminal."""

    def __init__(self, context: PcscContext, reader: str) -> None:
        hresult, self._card, _protocol = SCardConnect(
            context.handle, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1
        )
        if hresult != SCARD_S_SUCCESS:
            raise _error(hresult, connecting=True)
        self.reader = reader
        self._open = True

    @classmethod
    def when_present(cls, context: PcscContext, reader: str, timeout: float) -> PcscTransport:
        """Connect as soon as a card is in `reader` (pcscd notices a card within about
        400 ms); `NoCardError` if none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls(context, reader)
            except NoCardError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def transmit(self, apdu: bytes) -> bytes:
        if not self._open:
            raise CardRemovedError("connection closed")
        hresult, response = SCardTransmit(self._card, SCARD_PCI_T1, list(apdu))
        if hresult != SCARD_S_SUCCESS:
            raise _error(hresult)
        if len(response) < 2:
            # vpcd (and some readers) report a card that left mid-command as an empty
            # answer rather than an error.
            raise CardRemovedError("no answer: the card left the field")
        return bytes(response)

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                SCardDisconnect(self._card, SCARD_UNPOWER_CARD)

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TapMonitor(CardObserver):  # type: ignore[misc]  # pyscard is untyped
    """Taps from pyscard's CardMonitor, as a queue of reader names.

    CardMonitor runs one process-wide thread; it stops for good when the PC/SC service goes
    away. `wait_for_tap` notices that and raises `PcscServiceUnavailableError`; calling it
    again once the service is back starts a fresh monitor.
    """

    def __init__(self, reader_filter: str | None = None) -> None:
        super().__init__()
        self.reader_filter = reader_filter
        self._taps: queue.Queue[str] = queue.Queue()
        self._monitor: Any = None
        self._lock = threading.Lock()

    def update(self, observable: object, handlers: tuple[list[Any], list[Any]]) -> None:
        added, _removed = handlers
        for card in added:
            reader = str(card.reader)
            if self.reader_filter is None or self.reader_filter in reader:
                self._taps.put(reader)

    def _monitor_alive(self) -> bool:
        thread = CardMonitoring.CardMonitoringThread.instance
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._monitor is not None and self._monitor_alive():
                return
            if not self._monitor_alive():
                # pyscard keeps its dead singletons: forget them so a new thread starts.
                CardMonitoring.CardMonitoringThread.instance = None
                CardMonitoring.CardMonitor.instance = None
            PcscContext().close()  # fail fast, with a clear error, if there is no service
            self._monitor = CardMonitor()
            self._monitor.addObserver(self)

    def wait_for_tap(self, timeout: float) -> str | None:
        """The reader a card was just tapped on, or None after `timeout` seconds."""
        self.start()
        try:
            return self._taps.get(timeout=timeout)
        except queue.Empty:
            if not self._monitor_alive():
                raise PcscServiceUnavailableError("the card monitor stopped") from None
            return None

    def stop(self) -> None:
        with self._lock:
            if self._monitor is not None:
                with contextlib.suppress(Exception):
                    self._monitor.deleteObserver(self)
                self._monitor = None
