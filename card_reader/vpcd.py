"""The virtual card on the wire: a vpcd client, so that real pcscd sees a JakartaOne card.

vsmartcard's vpcd is a pcscd reader driver listening on TCP (35963 for reader
"Virtual PCD 00 00", 35964 for "... 00 01"). A card is a TCP client: connecting is a tap,
closing the socket is the card leaving the field. Both directions frame each message
with a 2-byte big-endian length. A 1-byte message from vpcd is control: 00 power off,
01 power on, 02 reset (no reply), 04 get ATR (reply with the ATR). Anything longer is a
command APDU, answered with exactly one response APDU.

Latency: vpcd writes the length and the payload in two sends. If this socket delays its
ACK of the first (Linux delayed ACK, 40 ms), vpcd's Nagle waits for it before the second
send, and every APDU costs 40 ms. TCP_QUICKACK (which Linux clears again after each ACK)
is therefore re-armed after every read; with it an APDU round trip stays under 1 ms.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from card_reader.card import VirtualCard

DEFAULT_PORT = 35963
ATR = bytes.fromhex("3B80800101")  # T=1, no historical bytes
CONTROL_POWER_OFF = 0x00
CONTROL_POWER_ON = 0x01
CONTROL_RESET = 0x02
CONTROL_GET_ATR = 0x04
# The least time between a card leaving and the same card tapping again (see `tap`).
REAPPEAR_SECONDS = 0.6

log = logging.getLogger(__name__)


class VpcdCard:
    """A `VirtualCard` that can be tapped on and removed from a vpcd reader.

    Thread-safe: `tap`, `remove` and `tear_next` may be called from any thread; the card
    logic runs only on the connection's own thread.
    """

    def __init__(self, card: VirtualCard, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.card = card
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._tear: tuple[int, bool] | None = None
        self._closed = threading.Event()
        self._left_at = -REAPPEAR_SECONDS
        self.apdus = 0

    @property
    def present(self) -> bool:
        return self._thread is not None and not self._closed.is_set()

    def tap(self, timeout: float = 10.0) -> None:
        """Bring the card into the field: connect to vpcd (retrying until it listens)."""
        with self._lock:
            if self.present:
                return
            if self._thread is not None:
                self._thread.join(timeout=5)  # a connection that just ended (a tear)
                self._thread = None
            # vpcd notices a card left only at its next presence poll; a connection made
            # before that is never served. No real card comes back that fast anyway.
            time.sleep(max(0.0, self._left_at + REAPPEAR_SECONDS - time.monotonic()))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    sock = socket.create_connection((self.host, self.port), timeout=1.0)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            sock.settimeout(None)
            self._closed = threading.Event()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _quickack(sock)
            self._socket = sock
            self._thread = threading.Thread(
                target=self._serve, args=(sock, self._closed), name="vpcd-card", daemon=True
            )
            self._thread.start()

    def remove(self) -> None:
        """Take the card out of the field (close the connection)."""
        with self._lock:
            sock, thread = self._socket, self._thread
            self._socket = None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if thread is not None:
                thread.join(timeout=5)
            self._thread = None

    def tear_next(self, ins: int, *, after_commit: bool) -> None:
        """Pull the card out during the next command with this INS: before the card
        processes it, or after it committed but before the answer goes out."""
        self._tear = (ins, after_commit)

    def _serve(self, sock: socket.socket, closed: threading.Event) -> None:
        try:
            while True:
                header = _receive(sock, 2)
                if header is None:
                    return
                length = int.from_bytes(header, "big")
                payload = _receive(sock, length)
                if payload is None:
                    return
                if length == 1:
                    self._control(sock, payload[0])
                    continue
                self.apdus += 1
                tear = self._tear
                if tear is not None and len(payload) > 1 and payload[1] == tear[0]:
                    self._tear = None
                    if tear[1]:
                        self.card.process(payload)
                    return  # the card leaves: the finally closes the socket unanswered
                response = self.card.process(payload)
                sock.sendall(len(response).to_bytes(2, "big") + response)
        except OSError as error:
            log.debug("virtual card connection ended: %s", error)
        finally:
            self._left_at = time.monotonic()
            closed.set()
            self.card.power_reset()
            with contextlib.suppress(OSError):
                sock.close()

    def _control(self, sock: socket.socket, code: int) -> None:
        if code == CONTROL_GET_ATR:
            # pcscd polls presence with get-ATR about every 400 ms: answer at once.
            sock.sendall(len(ATR).to_bytes(2, "big") + ATR)
        elif code in (CONTROL_POWER_OFF, CONTROL_POWER_ON, CONTROL_RESET):
            self.card.power_reset()
        else:
            log.warning("unknown vpcd control byte %02x", code)


def _quickack(sock: socket.socket) -> None:
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:  # Linux only; elsewhere delayed ACKs cost latency, not function
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _receive(sock: socket.socket, count: int) -> bytes | None:
    """Exactly `count` bytes, or None when vpcd closed the connection."""
    buffer = bytearray()
    while len(buffer) < count:
        chunk = sock.recv(count - len(buffer))
        _quickack(sock)  # re-armed after every read: see the module docstring
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer)
