"""The real processes the demo drives: `jakartaone db upgrade`, `jakartaone serve`,
`jakartaone api-keys create`, `jakartaone ledger verify`, `jakartaone nightly`, `jakartaone
export`. Each runs as a child process of its own, exactly as an operator would run it.

Secrets: the API's root secret and the card master keys are made fresh for each run
(`RunSecrets`) and reach the children only through their environment; nothing here prints
or writes them. The issuer's first API key comes back on the child's stdout and is kept in
memory only.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from card_reader.keys import BackOfficeKeys

JAKARTAONE = str(Path(sys.executable).parent / "jakartaone")


@dataclass(frozen=True, repr=False)
class RunSecrets:
    """The run's secrets (the API's root secret, the card master keys, the gates' SAM key,
    the analytics release key). `repr` shows none of them."""

    api_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    certificate_master: str = field(default_factory=lambda: secrets.token_hex(16))
    load_master: str = field(default_factory=lambda: secrets.token_hex(16))
    authentication_master: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    release_key: str = field(default_factory=lambda: secrets.token_hex(32))

    def __repr__(self) -> str:
        return "RunSecrets(<redacted>)"

    @property
    def back_office_keys(self) -> BackOfficeKeys:
        return BackOfficeKeys.from_hex(self.certificate_master, self.load_master)


def child_environment(
    database_url: str, run_secrets: RunSecrets | None = None, clock_offset_s: int = 0
) -> dict[str, str]:
    """The environment of a `jakartaone` child: ours without JAKARTAONE_ settings, plus the
    database and (for the server) the secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAKARTAONE_")}
    env["JAKARTAONE_DATABASE_URL"] = database_url
    env["JAKARTAONE_LOG_LEVEL"] = "WARNING"
    env["JAKARTAONE_CLOCK_OFFSET_SECONDS"] = str(clock_offset_s)
    if run_secrets is not None:
        env["JAKARTAONE_API_SECRET_KEY"] = run_secrets.api_secret
        env["JAKARTAONE_CERTIFICATE_MASTER_KEY"] = run_secrets.certificate_master
        env["JAKARTAONE_LOAD_MASTER_KEY"] = run_secrets.load_master
        env["JAKARTAONE_RELEASE_KEY"] = run_secrets.release_key  # the analytics' pseudonyms
        # The server's own rate limits are per key and process; the demo's fleet shares a
        # few keys, so it lifts them (a real fleet has a key per depot).
        env["JAKARTAONE_API_RATE_PER_SECOND"] = "100000"
        env["JAKARTAONE_API_RATE_BURST"] = "100000"
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run `jakartaone ARGS` to completion; the caller judges the exit status."""
    return subprocess.run(  # noqa: S603 - our own executable, arguments from this module
        [JAKARTAONE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `jakartaone ARGS`; the caller collects it (`communicate`) and judges it."""
    return subprocess.Popen(  # noqa: S603 - our own executable, arguments from this module
        [JAKARTAONE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def checked(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """`jakartaone serve` on 127.0.0.1 and a free port, in its own process group."""

    def __init__(
        self,
        database_url: str,
        run_secrets: RunSecrets,
        log_path: Path,
        workers: int,
        clock_offset_s: int = 0,
    ) -> None:
        self.env = child_environment(database_url, run_secrets, clock_offset_s)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers = workers
        self._process: subprocess.Popen[bytes] | None = None
        self.cpu_when_stopped = 0.0  # its CPU seconds, kept once it has ended

    def start(self, timeout: float = 60) -> None:
        command = [
            JAKARTAONE,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own executable
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the API exited at start; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the API did not become ready; see {self.log_path}")

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.cpu_when_stopped += process_group_cpu_seconds(process.pid)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        self._process = None

    def cpu_seconds(self) -> float:
        """User and system CPU of the server's process group so far (its workers too)."""
        process = self._process
        running = process_group_cpu_seconds(process.pid) if process is not None else 0.0
        return self.cpu_when_stopped + running

    def issuer_key(self) -> str:
        """The first issuer-admin key, made by the CLI as the docs say (shown once)."""
        done = run_cli(
            ["api-keys", "create", "--scope", "issuer-admin", "--name", "demo issuer staff"],
            self.env,
            timeout=120,
        )
        return checked(done, "jakartaone api-keys create").strip()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_group_cpu_seconds(group: int) -> float:
    """CPU seconds (user and system, with reaped children) of the processes in `group`,
    from /proc (0 where there is no /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        # After the command name: state, ppid, pgrp, ..., utime (12), stime, cutime, cstime.
        if int(fields[2]) == group:
            total += sum(int(f) for f in fields[11:15])
    return total / _TICKS
