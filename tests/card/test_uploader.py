"""Uploading over real HTTP: idempotent batches, retries, refusals, quarantine, hotlist."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from card_reader.backoffice import BackOfficeClient, BackOfficeError
from card_reader.certificate import serial_hash
from card_reader.hotlist import HotlistError, HotlistStore, HotlistUpdate
from card_reader.journal import Journal
from card_reader.uploader import Backoff, Uploader
from tests.card.backoffice_server import API_KEY, running_back_office
from tests.card.conftest import BACK_OFFICE, SERIAL, signed_certificate


def fill(journal: Journal, count: int, start: int = 1) -> None:
    for counter in range(start, start + count):
        journal.record_certificate(signed_certificate(counter, journal.next_terminal_seq()))


def test_upload_posts_everything_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    fill(journal, 7)
    with running_back_office(BACK_OFFICE) as (url, server):
        uploader = Uploader(journal, BackOfficeClient(url, API_KEY), batch_size=3)
        report = uploader.upload_pending()
        assert report.complete and report.batches == 3
        assert report.outcomes == {"posted": 7}
        assert len(server.certificates) == 7
        assert uploader.upload_pending().batches == 0
        assert len(server.requests) == 3
    assert journal.stats().pending == 0


def test_server_errors_are_retried_with_the_same_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    fill(journal, 2)
    with running_back_office(BACK_OFFICE) as (url, server):
        server.fail_next = ["503", "drop_after"]
        uploader = Uploader(journal, BackOfficeClient(url, API_KEY, timeout=5))
        first = uploader.upload_pending()
        assert first.error is not None and first.error.retryable and first.error.status == 503
        second = uploader.upload_pending()  # the server commits, the answer is lost
        assert second.error is not None and second.error.retryable
        assert len(server.certificates) == 2
        journal.close()
        # The gate restarts; the same batch id is sent again and answered as before.
        journal = Journal(tmp_path, "GATE-1")
        third = Uploader(journal, BackOfficeClient(url, API_KEY)).upload_pending()
        assert third.complete and third.outcomes == {"posted": 2}
        assert len(set(server.requests)) == 1 and len(server.requests) == 3
        assert len(server.certificates) == 2
    assert journal.stats().pending == 0


def test_unauthorized_is_retried_and_a_refused_batch_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    fill(journal, 2)
    with running_back_office(BACK_OFFICE) as (url, server):
        bad_key = Uploader(journal, BackOfficeClient(url, "wrong-key"), batch_size=1)
        report = bad_key.upload_pending()
        assert report.error is not None and report.error.code == "unauthorized"
        assert report.error.retryable and journal.stats().pending == 2
        server.fail_next = ["422"]
        report = Uploader(journal, BackOfficeClient(url, API_KEY), batch_size=1).upload_pending()
        assert report.refused == ["batch_malformed"]
        assert report.outcomes == {"posted": 1}
    stats = journal.stats()
    assert (stats.pending, stats.refused_batches) == (0, 1)
    assert journal.path.read_text().count('"type":"certificate"') == 2  # nothing dropped


def test_forged_and_forwarded_certificates(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    genuine = signed_certificate(1, journal.next_terminal_seq())
    forged = dataclasses.replace(signed_certificate(2, journal.next_terminal_seq()), amount=1)
    journal.record_certificate(genuine)
    journal.record_certificate(forged)
    with running_back_office(BACK_OFFICE) as (url, server):
        # Another gate already delivered a certificate that this gate forwards.
        other = signed_certificate(3, 40, terminal_id="GATE-2")
        server.post_batch({"batch_id": "x", "certificates": [other.to_json()]})
        journal.record_certificate(other, durable=False)
        report = Uploader(journal, BackOfficeClient(url, API_KEY)).upload_pending()
    assert report.outcomes == {"posted": 1, "quarantined": 1, "duplicate": 1}


def test_network_down_is_retryable(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    fill(journal, 1)
    with running_back_office(BACK_OFFICE) as (url, _server):
        pass  # the server is gone now
    report = Uploader(journal, BackOfficeClient(url, API_KEY, timeout=2)).upload_pending()
    assert report.error is not None and report.error.retryable
    assert report.error.code.startswith("network_error")
    assert journal.stats().pending == 1


def test_backoff_doubles_to_five_minutes_and_resets() -> None:
    backoff = Backoff(rng=lambda low, high: high)
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays[:4] == [1, 2, 4, 8] and max(delays) == 300 and delays[-1] == 300
    backoff.reset()
    assert backoff.next_delay() == 1
    assert 0.5 <= Backoff().next_delay() <= 1.0


def test_hotlist_full_then_deltas_and_kept_offline(tmp_path: Path) -> None:
    a, b, c = (serial_hash(bytes([n]) * 8) for n in (1, 2, 3))
    with running_back_office(BACK_OFFICE) as (url, server):
        store = HotlistStore(tmp_path)
        uploader = Uploader(Journal(tmp_path, "GATE-1"), BackOfficeClient(url, API_KEY), store)
        server.hotlist_versions = [({a, b}, set())]
        assert uploader.refresh_hotlist()
        assert store.version == 1 and store.is_blocked(bytes([1]) * 8)
        server.hotlist_versions.append(({c}, {a}))
        assert uploader.refresh_hotlist()
        assert store.version == 2
        assert not store.is_blocked(bytes([1]) * 8) and store.is_blocked(bytes([3]) * 8)
        # The server was reset behind the gate's back: the delta does not fit, full list.
        server.hotlist_versions = [({a}, set())]
        assert uploader.refresh_hotlist()
        assert store.version == 1 and store.is_blocked(bytes([1]) * 8)
        assert not store.is_blocked(bytes([3]) * 8)
    assert not uploader.refresh_hotlist()  # offline: keeps the last list
    reopened = HotlistStore(tmp_path)
    assert reopened.version == 1 and reopened.is_blocked(bytes([1]) * 8) and len(reopened) == 1
    assert not reopened.is_blocked(SERIAL)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ([], "hotlist_not_object"),
        ({"version": -1, "blocked": [], "unblocked": [], "full": True}, "hotlist_version_invalid"),
        (
            {"version": 1, "blocked": ["abc"], "unblocked": [], "full": True},
            "hotlist_blocked_invalid",
        ),
        ({"version": 1, "blocked": [], "unblocked": [], "full": "yes"}, "hotlist_full_invalid"),
        (
            {"version": 1, "blocked": [], "unblocked": ["0" * 64], "full": True},
            "hotlist_full_with_unblocked",
        ),
    ],
)
def test_malformed_hotlists_are_refused(answer: object, code: str) -> None:
    with pytest.raises(HotlistError) as info:
        HotlistUpdate.from_json(answer)
    assert info.value.code == code


def test_a_bad_base_url_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(BackOfficeError) as info:
        BackOfficeClient("file:///etc", API_KEY).fetch_hotlist(0)
    assert not info.value.retryable


def test_the_background_loop_delivers_then_backs_off_when_offline(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "GATE-1")
    fill(journal, 3)
    store = HotlistStore(tmp_path)
    with running_back_office(BACK_OFFICE) as (url, server):
        uploader = Uploader(journal, BackOfficeClient(url, API_KEY), store)
        stop = threading.Event()
        thread = threading.Thread(target=uploader.run, args=(stop, 0.05))
        thread.start()
        deadline = time.monotonic() + 5
        while len(server.certificates) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert len(server.certificates) == 3 and journal.stats().pending == 0
    fill(journal, 1, start=4)
    assert uploader.sync_once() >= 0.5  # offline now: wait before trying again
    assert uploader.backoff.failures == 1 and journal.stats().pending == 1
