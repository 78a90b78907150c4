"""A gate whose journal cannot be written (disk full, file size limit, read-only file
system) takes no value: it refuses the tap, says why, and works again once it can write."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_reader.card import VirtualCard
from card_reader.card_state import FileStore, MemoryStore
from card_reader.fares import GateMode, find_station
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal, JournalUnavailableError
from card_reader.keys import SoftwareSam
from card_reader.terminal import Gate, TapResult
from card_reader.transport import ApduChannel, InProcessTransport
from tests.api.live import BIN
from tests.card.backoffice_server import running_back_office
from tests.card.conftest import AUTH_MASTER, BACK_OFFICE, new_state, signed_certificate
from tests.reliability.gate_process import TERMINAL_ID, fares_since
from tests.reliability.test_gate_crash import answer, run_gate


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs) for the journal, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"mounting a tmpfs needs root: {mounted.stderr.strip()}"
        if os.environ.get("JAKARTAONE_CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free block of `disk`; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


class Rig:
    def __init__(self, journal_dir: Path) -> None:
        self.card = VirtualCard(new_state(balance=50_000), MemoryStore())
        self.transport = InProcessTransport(self.card)
        line, station = find_station("TJ-1", "Monas")
        self.gate = Gate(
            TERMINAL_ID,
            line,
            station,
            GateMode.FLAT,
            SoftwareSam(AUTH_MASTER),
            Journal(journal_dir, TERMINAL_ID),
            HotlistStore(journal_dir.parent),
        )

    def tap(self) -> TapResult:
        self.transport.tap()
        return self.gate.process(ApduChannel(self.transport))


def test_a_full_disk_refuses_the_debit_and_says_why(small_disk: Path) -> None:
    """Promise: with no room left for the journal the gate does not debit the card (it
    never takes value it cannot record); it answers `journal_disk_full`, and taps work
    again as soon as there is room, without a restart."""
    rig = Rig(small_disk / "journal")
    filler = fill(small_disk)
    refused = rig.tap()
    assert (refused.opened, refused.code) == (False, "journal_disk_full")
    assert (rig.card.state.balance, rig.card.state.counter) == (50_000, 0)
    filler.unlink()
    started = time.time()
    paid = rig.tap()
    assert (paid.opened, paid.code) == (True, "ok") and paid.amount in fares_since(started)
    assert rig.gate.journal.stats().certificates == 1


def test_a_gate_on_a_read_only_journal_refuses_to_run_and_says_why(small_disk: Path) -> None:
    """Promise: `jakartaone gate run` on a journal it cannot write (a read-only file
    system) does not start taking taps: it exits and names `journal_read_only`."""
    journal = Journal(small_disk / "journal", TERMINAL_ID)
    journal.record_certificate(signed_certificate(1, journal.next_terminal_seq()))
    journal.close()
    view = small_disk.parent / "read-only-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        env = {**os.environ, "JAKARTAONE_AUTHENTICATION_MASTER_KEY": AUTH_MASTER.hex()}
        done = subprocess.run(
            [
                str(BIN / "jakartaone"),
                "gate",
                "run",
                "--station",
                "Monas",
                "--line",
                "TJ-1",
                "--mode",
                "flat",
                "--terminal-id",
                TERMINAL_ID,
                "--data-dir",
                str(view / "journal"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
    assert done.returncode != 0
    assert "journal_read_only" in done.stderr, done.stderr
    assert "ready" not in done.stdout


def test_a_write_that_runs_out_of_room_leaves_no_torn_line(small_disk: Path) -> None:
    """Promise: a journal write cut short by a full disk raises `journal_disk_full` and
    leaves the file at its last whole record, so later records (and a reopen) are sound."""
    journal = Journal(small_disk / "journal", TERMINAL_ID)
    assert journal.record_certificate(signed_certificate(1, journal.next_terminal_seq()))
    size = journal.path.stat().st_size
    filler = fill(small_disk)
    for counter in range(2, 40):  # the last page of the file fills, then nothing fits
        try:
            journal.record_certificate(
                signed_certificate(counter, journal.next_terminal_seq(), amount=100)
            )
        except JournalUnavailableError as error:
            assert error.code == "journal_disk_full"
            break
        size = journal.path.stat().st_size
    else:
        pytest.fail("the disk never filled")
    assert journal.path.stat().st_size == size  # no partial line left behind
    filler.unlink()
    journal.record_certificate(signed_certificate(99, journal.next_terminal_seq(), amount=100))
    journal.close()
    reopened = Journal(small_disk / "journal", TERMINAL_ID)  # not corrupt
    assert reopened.stats().certificates == counter  # 1 to counter - 1, then 99
    reopened.close()


def test_a_gate_process_at_its_file_size_limit_refuses_the_debit(tmp_path: Path) -> None:
    """Promise: a real gate process whose file size limit (RLIMIT_FSIZE) leaves no room
    for the journal refuses the tap with `journal_disk_full`; the card keeps its value."""
    card = tmp_path / "card.json"
    FileStore(card).save(new_state(balance=50_000))
    data = tmp_path / "gate"
    answer(run_gate(data, card, "http://127.0.0.1:9", "--no-tap"))  # the journal exists
    size = (data / "journal.log").stat().st_size

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, resource.RLIM_INFINITY))

    refused = answer(run_gate(data, card, "http://127.0.0.1:9", preexec_fn=limited))
    assert (refused["opened"], refused["code"]) == (False, "journal_disk_full")
    chip = FileStore(card).load()
    assert (chip.balance, chip.counter) == (50_000, 0)
    paid = answer(run_gate(data, card, "http://127.0.0.1:9"))
    assert (paid["opened"], paid["code"], paid["certificates"]) == (True, "ok", 1)


def test_an_upload_the_journal_cannot_record_waits_for_room(tmp_path: Path) -> None:
    """Promise: when the journal cannot record the back office's acknowledgement, the gate
    reports `journal_disk_full` and keeps the batch open (the upload loop does not die);
    once there is room it resends the same batch id, and the certificate is posted once."""
    card = tmp_path / "card.json"
    FileStore(card).save(new_state(balance=50_000))
    data = tmp_path / "gate"
    offline = answer(run_gate(data, card, "http://127.0.0.1:9"))
    assert offline["opened"] and offline["pending"] == 1
    size = (data / "journal.log").stat().st_size

    def no_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    with running_back_office(BACK_OFFICE) as (url, server):
        full = answer(run_gate(data, card, url, "--no-tap", preexec_fn=no_room))
        assert "journal_disk_full" in full["error"] and full["pending"] == 1
        assert len(server.certificates) == 1  # the back office has it; the gate can't say so
        delivered = answer(run_gate(data, card, url, "--no-tap"))
        assert delivered["uploaded"] == {"posted": 1} and delivered["pending"] == 0  # replayed
        assert len(server.certificates) == 1
        assert len(server.requests) == 2 and len(set(server.requests)) == 1
