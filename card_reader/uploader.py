"""Offline first: the terminal keeps working with no network, and this sends its journal
when it can, and refreshes the hotlist.

Guarantees:
- Nothing is lost: a certificate leaves the upload queue only when the back office
  acknowledged its batch (or refused the batch for good, which is recorded and kept).
- Nothing is sent twice as new: a batch is written to the journal with its id before the
  first attempt, and every retry (after a timeout, a 5xx, a crash, a power cut) sends that
  same id with the same certificates, which the back office answers idempotently.
- Failures back off: 1 s doubling to 5 minutes, with full jitter, reset on success. A
  journal that cannot take the batch or acknowledgement record (disk full, read-only) is
  such a failure too: reported and retried, never the end of the upload loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from card_reader.backoffice import BackOfficeClient, BackOfficeError
from card_reader.hotlist import HotlistError, HotlistStore
from card_reader.journal import MAX_BATCH_CERTIFICATES, Journal, JournalUnavailableError

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0


@dataclass
class Backoff:
    initial: float = BACKOFF_INITIAL_SECONDS
    maximum: float = BACKOFF_MAX_SECONDS
    rng: Callable[[float, float], float] = random.uniform
    failures: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.failures)
        self.failures += 1
        return self.rng(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class UploadReport:
    batches: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    error: BackOfficeError | JournalUnavailableError | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


class Uploader:
    def __init__(
        self,
        journal: Journal,
        client: BackOfficeClient,
        hotlist: HotlistStore | None = None,
        batch_size: int = MAX_BATCH_CERTIFICATES,
    ) -> None:
        self.journal = journal
        self.client = client
        self.hotlist = hotlist
        self.batch_size = batch_size
        self.backoff = Backoff()

    def upload_pending(self) -> UploadReport:
        """Send batches until the journal is all delivered or an attempt fails."""
        report = UploadReport()
        try:
            self._upload(report)
        except JournalUnavailableError as error:
            # The batch stays open (or unopened) in the journal: the next round resends it.
            log.error("upload paused, the journal cannot record it: %s", error)
            report.error = error
        return report

    def _upload(self, report: UploadReport) -> None:
        while (batch := self.journal.pending_batch(self.batch_size)) is not None:
            try:
                items = self.client.post_batch(batch)
            except BackOfficeError as error:
                if error.retryable:
                    log.warning("batch %s not delivered: %s", batch.batch_id, error)
                    report.error = error
                    return
                # Refused for good: record it, keep its certificates, go on with the next.
                log.error("batch %s refused by the back office: %s", batch.batch_id, error.code)
                self.journal.mark_refused(batch.batch_id, error.code)
                report.refused.append(error.code)
                report.batches += 1
                continue
            counts = Counter(item.outcome for item in items)
            for item in items:
                if item.outcome == "quarantined":
                    log.warning("terminal_seq %d quarantined: %s", item.terminal_seq, item.reason)
            self.journal.mark_acked(batch.batch_id, dict(counts))
            report.outcomes.update(counts)
            report.batches += 1

    def refresh_hotlist(self) -> bool:
        """Fetch the hotlist changes (or the whole list) and store them. False on failure."""
        if self.hotlist is None:
            return True
        since = self.hotlist.version
        try:
            update = self.client.fetch_hotlist(since)
            try:
                self.hotlist.apply(update, since)
            except HotlistError:
                # Our base and the server's differ (it was reset, or we missed versions).
                self.hotlist.apply(self.client.fetch_hotlist(0), 0)
        except (BackOfficeError, HotlistError) as error:
            log.warning("hotlist not refreshed: %s", error)
            return False
        return True

    def sync_once(self) -> float:
        """One round of uploading and hotlist refresh; the seconds to wait before the next."""
        report = self.upload_pending()
        hotlist_ok = self.refresh_hotlist()
        if report.complete and hotlist_ok:
            self.backoff.reset()
            return 0.0
        return self.backoff.next_delay()

    def run(self, stop: threading.Event, interval: float = 30.0) -> None:
        """Sync every `interval` seconds (sooner after the journal grows), backing off on
        failure, until `stop` is set."""
        while not stop.is_set():
            delay = self.sync_once()
            stop.wait(delay if delay > 0 else interval)
