"""The commands, in-process (click's runner) and, for `card emulate`, as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_reader.card import VirtualCard
from card_reader.card_state import FileStore
from card_reader.certificate import verify_certificate
from card_reader.journal import Journal
from card_reader.keys import SoftwareSam
from card_reader.pcsc import PcscContext, PcscTransport
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel
from card_reader.vpcd import VpcdCard
from jakartaone.cli import main
from tests.card.backoffice_server import API_KEY, running_back_office
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, VPCD_READER

KEY_ENV = {
    "JAKARTAONE_AUTHENTICATION_MASTER_KEY": AUTH_MASTER.hex(),
    "JAKARTAONE_CERTIFICATE_MASTER_KEY": BACK_OFFICE.certificate_master.hex(),
    "JAKARTAONE_LOAD_MASTER_KEY": BACK_OFFICE.load_master.hex(),
    "JAKARTAONE_GATE_API_KEY": API_KEY,
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=KEY_ENV)


def issue(runner: CliRunner, path: Path, *args: str) -> None:
    result = runner.invoke(main, ["card", "issue", "--state", str(path), *args])
    assert result.exit_code == 0, result.output


def test_keys_diversify_prints_the_an10922_vector(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "keys",
            "diversify",
            "--master-key",
            "00112233445566778899AABBCCDDEEFF",
            "--input",
            "04782E21801D803042F54E585020416275",
        ],
    )
    assert result.exit_code == 0
    assert result.output.strip() == "a8dd63a3b89d54b37ca802473fda9175"
    bad = runner.invoke(main, ["keys", "diversify", "--master-key", "0011", "--input", "01"])
    assert bad.exit_code != 0 and "key_length_invalid" in bad.output


def test_card_issue_and_show(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    issue(runner, path, "--serial", "4a4f0000c0ffee01", "--balance", "25000", "--registered")
    shown = runner.invoke(main, ["card", "show", "--state", str(path)])
    assert shown.exit_code == 0
    assert "JO-****-****-ee01" in shown.output and "4a4f0000c0ffee01" not in shown.output
    assert "Rp 25,000 (max Rp 20,000,000)" in shown.output
    again = runner.invoke(main, ["card", "issue", "--state", str(path)])
    assert again.exit_code != 0 and "issued once" in again.output
    no_keys = CliRunner(env={k: "" for k in KEY_ENV}).invoke(
        main, ["card", "issue", "--state", str(tmp_path / "other.json")]
    )
    assert no_keys.exit_code != 0 and "key_missing" in no_keys.output


def test_gate_run_rejects_unknown_stations(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        main,
        [
            "gate",
            "run",
            "--station",
            "Atlantis",
            "--line",
            "MRT-NS",
            "--mode",
            "entry",
            "--terminal-id",
            "G1",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "station_unknown" in result.output
    result = runner.invoke(
        main,
        [
            "gate",
            "run",
            "--station",
            "Blok M",
            "--line",
            "TJ-1",
            "--mode",
            "exit",
            "--terminal-id",
            "G1",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "gate_mode_invalid" in result.output


def tap_soon(virtual: VpcdCard, delay: float = 0.5) -> threading.Thread:
    """Tap the card once the command under test is waiting for it."""

    def later() -> None:
        time.sleep(delay)
        virtual.remove()
        virtual.tap()

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def test_gates_of_every_mode_over_real_pcsc(
    runner: CliRunner, tmp_path: Path, vpcd_card: Callable[..., VpcdCard]
) -> None:
    path = tmp_path / "card.json"
    issue(runner, path, "--balance", "50000")
    store = FileStore(path)
    virtual = vpcd_card(VirtualCard(store.load(), store))
    runs = [
        ("KRL-JAK-E1", "KRL-BOGOR", "Jakarta Kota", "entry", "Rp 0 balance Rp 50,000"),
        ("KRL-BOO-X1", "KRL-BOGOR", "Bogor", "exit", "Rp 6,000 balance Rp 44,000"),
        ("LRT-VEL-01", "LRT-JAKARTA", "Velodrome", "flat", "Rp 5,000 balance Rp 39,000"),
    ]
    for terminal_id, line, station, mode, expected in runs:
        tapper = tap_soon(virtual)
        result = runner.invoke(
            main,
            [
                "gate",
                "run",
                "--station",
                station,
                "--line",
                line,
                "--mode",
                mode,
                "--terminal-id",
                terminal_id,
                "--data-dir",
                str(tmp_path / terminal_id),
                "--max-taps",
                "1",
            ],
        )
        tapper.join()
        assert result.exit_code == 0, result.output
        assert "OPEN ok card" in result.output and expected in result.output
        assert "(3 APDUs" in result.output
    assert store.load().balance == 39_000
    journal = Journal(tmp_path / "LRT-VEL-01", "LRT-VEL-01")
    batch = journal.pending_batch()
    assert batch is not None and all(verify_certificate(c, BACK_OFFICE) for c in batch.certificates)
    # The validator forwarded the KRL exit it found on the card; it delivers both.
    with running_back_office(BACK_OFFICE) as (url, server):
        journal.close()
        uploaded = runner.invoke(
            main,
            [
                "gate",
                "upload",
                "--terminal-id",
                "LRT-VEL-01",
                "--data-dir",
                str(tmp_path / "LRT-VEL-01"),
                "--api-url",
                url,
            ],
        )
        assert uploaded.exit_code == 0, uploaded.output
        assert "posted 2" in uploaded.output and "0 pending" in uploaded.output
        assert len(server.certificates) == 2


def test_merchant_charge_and_load_over_real_pcsc(
    runner: CliRunner, tmp_path: Path, vpcd_card: Callable[..., VpcdCard]
) -> None:
    path = tmp_path / "card.json"
    issue(runner, path, "--balance", "20000")
    store = FileStore(path)
    virtual = vpcd_card(VirtualCard(store.load(), store))
    common = ["--terminal-id", "SHOP-7", "--data-dir", str(tmp_path / "shop"), "--timeout", "10"]
    tapper = tap_soon(virtual)
    sale = runner.invoke(main, ["terminal", "charge", "--amount", "12500", *common])
    tapper.join()
    assert sale.exit_code == 0, sale.output
    assert "OPEN ok" in sale.output and "balance Rp 7,500" in sale.output
    tapper = tap_soon(virtual)
    refused = runner.invoke(main, ["terminal", "charge", "--amount", "8000", *common])
    tapper.join()
    assert refused.exit_code == 1 and "REFUSED insufficient_funds" in refused.output
    tapper = tap_soon(virtual)
    load = runner.invoke(main, ["terminal", "load", "--amount", "100000", *common])
    tapper.join()
    assert load.exit_code == 0, load.output
    assert store.load().balance == 107_500


def test_card_emulate_as_a_process(tmp_path: Path, pcscd: object) -> None:
    path = tmp_path / "card.json"
    issue(CliRunner(env=KEY_ENV), path, "--balance", "9000")
    env = {**os.environ, **KEY_ENV}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "jakartaone"),
            "card",
            "emulate",
            "--state",
            str(path),
            "--removed",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("tap\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "tapped"
        with (
            PcscContext() as context,
            PcscTransport.when_present(
                context, context.find_reader(VPCD_READER), timeout=5
            ) as transport,
        ):
            session = CardSession(ApduChannel(transport), SoftwareSam(AUTH_MASTER))
            session.select()
            assert session.authenticate().balance == 9_000
            session.debit(
                amount=2_000, terminal_id="T-1", terminal_seq=1, timestamp=1, journey=None
            )
        process.stdin.write("remove\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "removed"
        assert FileStore(path).load().balance == 7_000  # committed by the card process
        process.stdin.write("quit\n")
        process.stdin.flush()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
