"""Fixtures for the analytics release: a small synthetic day and a helper to release it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.release import ReleaseSummary, run_release
from reconciliation.analytics.synthetic import SyntheticDay, synthetic_day

DAY = dt.date(2025, 3, 4)
KEY = bytes(range(32))


@pytest.fixture(scope="session")
def day_data() -> SyntheticDay:
    return synthetic_day(DAY, cards=800, seed=7)


@pytest.fixture
def release(tmp_path: Path) -> Callable[..., tuple[ReleaseSummary, Path]]:
    counter = iter(range(1000))

    def run(
        events: pa.Table,
        cards: pa.Table,
        data: SyntheticDay,
        config: ReleaseConfig | None = None,
        key: bytes = KEY,
    ) -> tuple[ReleaseSummary, Path]:
        out = tmp_path / f"release-{next(counter)}"
        return run_release(DAY, events, cards, data.seal, out, key, config), out

    return run
