"""The terminal journal: durable, crash-safe, exactly-once, stable batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from card_reader.journal import RESERVE_BLOCK, Journal, JournalCorruptError
from tests.card.conftest import signed_certificate


def test_certificates_survive_a_restart_and_sequence_numbers_never_repeat(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    seqs = [journal.next_terminal_seq() for _ in range(3)]
    assert seqs == [1, 2, 3]
    for counter, seq in enumerate(seqs, start=1):
        assert journal.record_certificate(signed_certificate(counter, seq))
    journal.close()
    # A crash: the journal is opened again by a new process.
    reopened = Journal(tmp_path, "GATE-1")
    assert reopened.stats().certificates == 3
    assert reopened.has_certificate(signed_certificate(2, 2).card_serial, 2)
    assert reopened.has_own_seq(3) and not reopened.has_own_seq(4)
    # Number 4 may already sit in a card's log (handed out, answer lost): never reuse it.
    assert reopened.next_terminal_seq() == RESERVE_BLOCK + 1


def test_each_card_counter_is_recorded_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    cert = signed_certificate(1, 1)
    assert journal.record_certificate(cert)
    assert not journal.record_certificate(cert)
    assert not journal.record_certificate(signed_certificate(1, 9, terminal_id="GATE-2"))
    assert journal.stats().certificates == 1


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    journal.record_certificate(signed_certificate(1, journal.next_terminal_seq()))
    journal.close()
    intact = journal.path.read_bytes()
    with journal.path.open("ab") as handle:
        handle.write(b'0badc0de {"type":"certificate","cert":{"vers')  # power cut mid-write
    reopened = Journal(tmp_path, "GATE-1")
    assert reopened.stats().certificates == 1
    assert journal.path.read_bytes() == intact
    reopened.record_certificate(signed_certificate(2, reopened.next_terminal_seq()))
    reopened.close()
    assert Journal(tmp_path, "GATE-1").stats().certificates == 2


def test_damage_before_the_end_is_corruption(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    for counter in (1, 2):
        journal.record_certificate(signed_certificate(counter, journal.next_terminal_seq()))
    journal.close()
    lines = journal.path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"amount":3500', b'"amount":9500')
    journal.path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalCorruptError):
        Journal(tmp_path, "GATE-1")


def test_batches_keep_their_id_and_content_until_answered(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    for counter in range(1, 6):
        journal.record_certificate(signed_certificate(counter, journal.next_terminal_seq()))
    journal.record_certificate(signed_certificate(6, 77, terminal_id="GATE-9"))
    first = journal.pending_batch(max_certificates=4)
    assert first is not None and len(first.certificates) == 4
    assert journal.pending_batch(max_certificates=4) == first
    journal.close()
    reopened = Journal(tmp_path, "GATE-1")
    assert reopened.pending_batch(max_certificates=100) == first  # the same batch after a crash
    reopened.mark_acked(first.batch_id, {"posted": 4})
    second = reopened.pending_batch(max_certificates=100)
    assert second is not None and second.batch_id != first.batch_id
    body = second.to_json()
    assert [c["counter"] for c in body["certificates"]] == [5, 6]
    assert (body["first_terminal_seq"], body["last_terminal_seq"]) == (5, 5)  # GATE-9's excluded
    reopened.mark_refused(second.batch_id, "batch_malformed")
    assert reopened.pending_batch() is None
    stats = reopened.stats()
    assert (stats.certificates, stats.uploaded, stats.pending, stats.refused_batches) == (
        6,
        6,
        0,
        1,
    )
    reopened.close()
    assert Journal(tmp_path, "GATE-1").stats() == stats


def test_a_batch_of_forwarded_certificates_only_has_zero_seqs(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    journal.record_certificate(signed_certificate(1, 5, terminal_id="GATE-2"), durable=False)
    batch = journal.pending_batch()
    assert batch is not None
    assert (batch.to_json()["first_terminal_seq"], batch.to_json()["last_terminal_seq"]) == (0, 0)
