from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.engine import Engine

from merchant_api.wib import business_date, now_us
from tests.reconciliation.world import World


@pytest.fixture
def world(engine: Engine) -> World:
    """A crafted business day three days ago (closed, with closed days after it)."""
    today = dt.date.fromisoformat(business_date(now_us()))
    return World(engine, today - dt.timedelta(days=3))
