"""Starting pcscd with the vpcd virtual reader, for tests, benchmarks and the demo.

On a fresh machine (CI, a demo laptop) nothing starts pcscd: `ensure_pcscd` starts it in
the foreground as a child process when its socket does not answer, after making sure
vpcd's reader configuration is in place. A pcscd that already runs (systemd, another
process) is used as it is and never stopped by us.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from card_reader.errors import PcscServiceUnavailableError

PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
VPCD_READER_CONF = Path("/etc/reader.conf.d/vpcd")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
# The Debian package's own configuration: readers on TCP 35963 and 35964.
VPCD_CONF_TEXT = (
    'FRIENDLYNAME "Virtual PCD"\n'
    "DEVICENAME   /dev/null:0x8C7B\n"
    f"LIBPATH      {VPCD_DRIVER}\n"
    "CHANNELID    0x8C7B\n"
)


def pcscd_answers(path: Path = PCSCD_SOCKET) -> bool:
    """True if something accepts connections on pcscd's socket (a stale file does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class PcscdProcess:
    """A pcscd we started (foreground, our child). `stop` ends exactly this process."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not Path(binary).exists():
            raise PcscServiceUnavailableError("pcscd is not installed (Debian package pcscd)")
        if not VPCD_DRIVER.exists():
            raise PcscServiceUnavailableError("vpcd is not installed (package vsmartcard-vpcd)")
        if not VPCD_READER_CONF.exists():
            VPCD_READER_CONF.parent.mkdir(parents=True, exist_ok=True)
            VPCD_READER_CONF.write_text(VPCD_CONF_TEXT)
        # A pcscd killed hard leaves its socket file behind; no one answers on it.
        with contextlib.suppress(FileNotFoundError):
            if not pcscd_answers():
                PCSCD_SOCKET.unlink()
        output = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary, no shell
            [binary, "--foreground"], stdout=output, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not pcscd_answers():
            if self._process.poll() is not None:
                raise PcscServiceUnavailableError(
                    f"pcscd exited at start with status {self._process.returncode}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PcscServiceUnavailableError("pcscd did not open its socket in time")
            time.sleep(0.05)

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None


def ensure_pcscd(log_path: Path | None = None) -> PcscdProcess | None:
    """Make sure pcscd answers. Returns the process if we started it (stop it when done),
    None if it was already running. Raises `PcscServiceUnavailableError` with the reason
    when it cannot be started (not installed, not root)."""
    if pcscd_answers():
        return None
    if os.geteuid() != 0:
        raise PcscServiceUnavailableError("pcscd is not running and only root may start it")
    process = PcscdProcess(log_path)
    process.start()
    return process
