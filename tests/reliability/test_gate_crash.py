"""A gate process killed mid-tap, then restarted: the certificate is recovered and reaches
the back office exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from card_reader.card_state import FileStore
from card_reader.certificate import Certificate, verify_certificate
from card_reader.journal import Journal
from tests.api.live import ROOT
from tests.card.backoffice_server import API_KEY, BackOfficeState, running_back_office
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, SERIAL, new_state
from tests.reliability.gate_process import TERMINAL_ID, fares_since


def run_gate(
    data_dir: Path,
    card: Path,
    url: str,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One run of the gate process (tests.reliability.gate_process)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.gate_process",
            "--data-dir",
            str(data_dir),
            "--card",
            str(card),
            "--api-url",
            url,
            "--api-key",
            API_KEY,
            "--auth-master",
            AUTH_MASTER.hex(),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def issued_card(tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    FileStore(path).save(new_state(balance=50_000))
    return path


def posted_once(server: BackOfficeState) -> None:
    """The back office holds exactly the card's one debit, and it verifies."""
    assert len(server.certificates) == 1
    ((serial, counter), stored) = next(iter(server.certificates.items()))
    assert (serial, counter) == (SERIAL, 1)
    assert verify_certificate(Certificate.from_bytes(stored), BACK_OFFICE)


def test_gate_killed_between_card_debit_and_journal_write(tmp_path: Path) -> None:
    """Promise: a gate killed after the card committed a debit but before its journal
    write loses nothing: at the card's next tap the restarted gate recovers the certificate
    from the card, does not charge again, and uploads it exactly once."""
    card = issued_card(tmp_path)
    data = tmp_path / "gate"
    with running_back_office(BACK_OFFICE) as (url, server):
        started = time.time()
        crashed = run_gate(data, card, url, "--crash", "after-debit")
        assert crashed.returncode == -9, crashed.stderr
        chip = FileStore(card).load()
        assert chip.counter == 1 and 50_000 - chip.balance in fares_since(started)  # it paid
        journal = Journal(data, TERMINAL_ID)
        assert journal.stats().certificates == 0  # the gate never wrote it
        journal.close()
        assert server.certificates == {}
        retap = answer(run_gate(data, card, url))
        assert (retap["opened"], retap["code"], retap["amount"]) == (True, "repeat_tap", 0)
        assert retap["uploaded"] == {"posted": 1} and retap["pending"] == 0
        assert FileStore(card).load().balance == chip.balance  # not charged twice
        posted_once(server)
        again = answer(run_gate(data, card, url, "--no-tap"))
        assert again["uploaded"] == {} and again["certificates"] == 1
        posted_once(server)
        assert len(server.requests) == 1
    replayed = [
        json.loads(line.split(" ", 1)[1])
        for line in (data / "journal.log").read_text().splitlines()
        if '"type":"certificate"' in line
    ]
    assert len(replayed) == 1 and replayed[0]["forwarded"] is False


def test_gate_killed_between_journal_write_and_upload(tmp_path: Path) -> None:
    """Promise: a gate killed after its journal write but before the upload delivers the
    certificate after restart, exactly once, with no further tap."""
    card = issued_card(tmp_path)
    data = tmp_path / "gate"
    with running_back_office(BACK_OFFICE) as (url, server):
        crashed = run_gate(data, card, url, "--crash", "after-journal")
        assert crashed.returncode == -9, crashed.stderr
        assert server.certificates == {}
        restarted = answer(run_gate(data, card, url, "--no-tap"))
        assert restarted["uploaded"] == {"posted": 1} and restarted["pending"] == 0
        posted_once(server)
        again = answer(run_gate(data, card, url, "--no-tap"))
        assert again["uploaded"] == {}
        posted_once(server)
    journal = Journal(data, TERMINAL_ID)
    assert journal.stats().certificates == 1 and journal.stats().pending == 0
    journal.close()


def test_a_batch_whose_answer_was_lost_is_resent_with_its_id(tmp_path: Path) -> None:
    """Promise: a gate killed after the back office committed a batch but before the
    answer reached it resends the same batch id after restart, and the back office answers
    it without posting anything twice."""
    card = issued_card(tmp_path)
    data = tmp_path / "gate"
    with running_back_office(BACK_OFFICE) as (url, server):
        server.fail_next = ["drop_after"]  # committed, answer lost: the gate retries later
        first = answer(run_gate(data, card, url))
        assert first["opened"] and first["pending"] == 1 and first["error"]
        restarted = answer(run_gate(data, card, url, "--no-tap"))
        assert restarted["pending"] == 0
        assert len(set(server.requests)) == 1 and len(server.requests) == 2
        posted_once(server)
