"""What a release may publish: thresholds, rounding, differential privacy, engine limits.

The defaults are the rules of issue 6 (docs/privacy.md says why each one is there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.geography import REFERENCE_NETWORK, Network

_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s?(KB|MB|GB|KiB|MiB|GiB)$")


@dataclass(frozen=True, slots=True)
class ReleaseConfig:
    """Constraints:
    - min_cards >= 2: a cell is published only with at least this many distinct cards.
    - min_merchants >= 1, dominance_top_n >= 1, 0 < dominance_percent <= 100: a money cell
      is published only with at least min_merchants merchants and when its top_n merchants
      (and, separately, its top_n cards) hold at most dominance_percent of its sum.
    - count_rounding_base >= 1: published counts are rounded to the nearest multiple.
    - amount_rounding_idr >= 1: published rupiah sums are rounded to the nearest multiple.
    - transit_operators_public: True exempts transit fare sums from the merchant rules
      (fares are public tariffs of four public operators); the card rules still apply.
    - differential_privacy / epsilon > 0: optional DP; the bounds below clip each card-day.
    - max_events_per_card_day >= 1, max_amount_idr >= 1, max_distance_m >= 1: DP bounds.
    - transfer_window_minutes, chaining_walk_m: the travel inferences (docs/privacy.md).
    - duckdb_memory_limit like "1GB"; duckdb_threads >= 1.
    """

    min_cards: int = 10
    min_merchants: int = 3
    dominance_top_n: int = 2
    dominance_percent: int = 85
    count_rounding_base: int = 5
    amount_rounding_idr: int = 1_000
    transit_operators_public: bool = True
    differential_privacy: bool = False
    epsilon: float = 1.0
    max_events_per_card_day: int = 10
    max_amount_idr: int = 200_000
    max_distance_m: int = 60_000
    transfer_window_minutes: int = 60
    chaining_walk_m: int = 1_000
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 2
    network: Network = field(default=REFERENCE_NETWORK)

    def check(self) -> None:
        """Raise `config_invalid` naming the first constraint this config breaks."""
        problems = [
            (self.min_cards >= 2, "min_cards must be at least 2"),
            (self.min_merchants >= 1, "min_merchants must be at least 1"),
            (self.dominance_top_n >= 1, "dominance_top_n must be at least 1"),
            (0 < self.dominance_percent <= 100, "dominance_percent must be in 1..100"),
            (self.count_rounding_base >= 1, "count_rounding_base must be at least 1"),
            (self.amount_rounding_idr >= 1, "amount_rounding_idr must be at least 1"),
            (self.epsilon > 0, "epsilon must be positive"),
            (self.max_events_per_card_day >= 1, "max_events_per_card_day must be >= 1"),
            (self.max_amount_idr >= 1, "max_amount_idr must be at least 1"),
            (self.max_distance_m >= 1, "max_distance_m must be at least 1"),
            (self.transfer_window_minutes >= 1, "transfer_window_minutes must be >= 1"),
            (self.chaining_walk_m >= 1, "chaining_walk_m must be at least 1"),
            (self.duckdb_threads >= 1, "duckdb_threads must be at least 1"),
            (bool(_MEMORY.match(self.duckdb_memory_limit)), "duckdb_memory_limit like 1GB"),
        ]
        for ok, message in problems:
            if not ok:
                raise ReleaseError(ReleaseErrorCode.CONFIG_INVALID, message)
