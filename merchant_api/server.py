"""Running the API: N worker processes, each with its own listening socket on the same
port (SO_REUSEPORT), so the kernel spreads connections evenly over the workers (one shared
socket lets whichever worker wakes first take a burst of connections, and with them the
load). The parent restarts a worker that dies and stops them all on SIGTERM or SIGINT.
A worker whose parent is gone (killed with SIGKILL) stops by itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from types import FrameType

APP = "merchant_api.cli:asgi_app"
_UVICORN_OPTIONS = {
    "loop": "uvloop",
    "http": "httptools",
    "log_level": "warning",
    "access_log": False,
    "timeout_graceful_shutdown": 10,
}


def run(host: str, port: int, workers: int, app: str = APP, factory: bool = True) -> None:
    """Serve `app` (an import string; a factory when `factory`) until SIGTERM or SIGINT."""
    import uvicorn

    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, host=host, port=port, workers=workers, factory=factory, **_UVICORN_OPTIONS)  # type: ignore[arg-type]
        return
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> multiprocessing.process.BaseProcess:
        process = spawn.Process(
            target=_worker, args=(host, port, os.getpid(), app, factory), daemon=False
        )
        process.start()
        return process

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes = [start() for _ in range(workers)]
    while not stopping.wait(0.5):
        for index, process in enumerate(processes):
            if not process.is_alive():
                processes[index] = start()
    for process in processes:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()


def _worker(host: str, port: int, parent: int, app: str, factory: bool) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()
    config = uvicorn.Config(app, factory=factory, **_UVICORN_OPTIONS)  # type: ignore[arg-type]
    uvicorn.Server(config).run(sockets=[sock])
