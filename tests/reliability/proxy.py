"""A TCP proxy between the API and PostgreSQL that a test (or the soak) can cut.

`cut()` resets every open connection and refuses new ones until `restore()`: to the API it
looks exactly like the database going away (its connections die, new ones are refused),
without stopping the PostgreSQL that everybody else on the machine uses.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from sqlalchemy.engine import make_url


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="db-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """The database goes away: open connections are reset, new ones refused."""
        with self._lock:
            self._cut = True
            self.cuts += 1
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _reset(client)
                    return
                refused = self._cut
            if refused:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._cut:
                    _reset(client)
                    _reset(upstream)
                    continue
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _reset(source)
            _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), the way a crashed peer's connections end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()


def proxied(database_url: str) -> tuple[TcpProxy, str]:
    """A proxy in front of the PostgreSQL that `database_url` names, and the URL that
    reaches the same database through it."""
    target = make_url(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    return proxy, target.set(port=proxy.port).render_as_string(hide_password=False)
