"""What the day did, counted as it happens (the summary's numbers)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from card_reader.backoffice import BackOfficeClient, ItemOutcome
from card_reader.journal import Batch


@dataclass
class Tally:
    taps: Counter[str] = field(default_factory=Counter)  # gate outcome code -> count
    taps_pcsc: int = 0
    fares_rupiah: int = 0
    sales: int = 0
    sales_rupiah: int = 0
    sales_refused: Counter[str] = field(default_factory=Counter)
    loads: Counter[str] = field(default_factory=Counter)  # channel -> count
    loads_rupiah: int = 0
    refunds: int = 0
    refunds_rupiah: int = 0
    uploads: Counter[str] = field(default_factory=Counter)  # outcome -> certificates
    quarantined: Counter[str] = field(default_factory=Counter)  # reason -> certificates
    batches: int = 0
    requests: int = 0
    # Wall times: the upload rounds, in the background; the day's top-ups, in workers,
    # added up; what the day's thread waited for: the last round and the cards' top-ups
    # before a round, a card's own top-up before its next tap.
    upload_seconds: float = 0.0
    top_up_seconds: float = 0.0
    upload_wait_seconds: float = 0.0
    card_wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_batch(self, items: list[ItemOutcome]) -> None:
        with self._lock:
            self.batches += 1
            for item in items:
                self.uploads[item.outcome] += 1
                if item.outcome == "quarantined":
                    self.quarantined[item.reason or "unknown"] += 1

    def load(self, channel: str, amount: int) -> None:
        with self._lock:
            self.loads[channel] += 1
            self.loads_rupiah += amount

    def count_top_up(self, seconds: float) -> None:
        with self._lock:
            self.top_up_seconds += seconds

    @property
    def tap_count(self) -> int:
        return sum(self.taps.values())

    @property
    def rupiah_moved(self) -> int:
        return self.fares_rupiah + self.sales_rupiah + self.loads_rupiah + self.refunds_rupiah


class CountingClient(BackOfficeClient):
    """The devices' own HTTP client, with every certificate's outcome counted for the
    summary (the uploader itself only logs them)."""

    def __init__(self, base_url: str, api_key: str, tally: Tally) -> None:
        super().__init__(base_url, api_key, timeout=120)
        self.tally = tally

    def post_batch(self, batch: Batch) -> list[ItemOutcome]:
        items = super().post_batch(batch)
        self.tally.count_batch(items)
        return items
