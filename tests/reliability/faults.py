"""Faults to inject into a live `jakartaone serve`: SIGKILL of the whole server or of one
of its worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.api.live import LiveServer


def server_workers(server: LiveServer) -> list[int]:
    """The worker processes `jakartaone serve` supervises (its direct children that run
    the app; multiprocessing's resource tracker is not one)."""
    pid = server.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    workers = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(int(child))
    return workers


def kill_whole_server(server: LiveServer) -> None:
    """SIGKILL every process of the server at once (a power cut for the API)."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=15)


def kill_worker(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
