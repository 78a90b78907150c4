"""`jakartaone serve` as a real process on PostgreSQL, for tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from jakartaone.migrate import upgrade
from ledger import make_engine

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_API_SECRET = bytes(range(32)).hex()
TEST_CERTIFICATE_MASTER = "11" * 16
TEST_LOAD_MASTER = "22" * 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAKARTAONE_")}
    env.update(
        {
            "JAKARTAONE_DATABASE_URL": database_url,
            "JAKARTAONE_API_SECRET_KEY": TEST_API_SECRET,
            "JAKARTAONE_CERTIFICATE_MASTER_KEY": TEST_CERTIFICATE_MASTER,
            "JAKARTAONE_LOAD_MASTER_KEY": TEST_LOAD_MASTER,
            "JAKARTAONE_LOG_LEVEL": "WARNING",
            # The tests' webhook receivers listen on 127.0.0.1 (production refuses it).
            "JAKARTAONE_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            **extra,
        }
    )
    return env


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    def issuer_key(self) -> str:
        made = subprocess.run(
            [
                str(BIN / "jakartaone"),
                "api-keys",
                "create",
                "--scope",
                "issuer-admin",
                "--name",
                "tests",
            ],
            env=self.env,
            capture_output=True,
            check=True,
            text=True,
            timeout=60,
        )
        return made.stdout.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


def start_server(
    database_url: str,
    log: Path,
    workers: int = 2,
    migrate: bool = True,
    port: int | None = None,
    **env: str,
) -> LiveServer:
    """Start `jakartaone serve` (on `port`, else a free one) and wait until it is ready;
    its output is appended to `log`."""
    if migrate:
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
    port = port or free_port()
    environment = server_environment(database_url, **env)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(BIN / "jakartaone"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, environment, log)
    deadline = time.monotonic() + 120  # a busy 2-core machine starts 2 workers slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not become ready: {log.read_text()[-2000:]}")
