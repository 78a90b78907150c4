"""CSV formula injection, the HTML report in real headless Chromium, DP mode, and the
exact algebra of complementary suppression."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from reconciliation.analytics import dp
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.disclosure import determined_cells
from reconciliation.analytics.geography import REFERENCE_NETWORK, Line, Network, Station
from reconciliation.analytics.publish import safe_csv_cell
from reconciliation.analytics.synthetic import SyntheticDay
from reconciliation.analytics.tables import Equation

from .conftest import DAY
from .test_attacks import attacker_determined

FORMULA = ("=", "+", "-", "@", "\t", "\r")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_no_csv_cell_starts_a_formula(text: str) -> None:
    cell = safe_csv_cell(text)
    assert not cell.startswith(FORMULA)
    assert cell.removeprefix("'") == text or cell == text


def test_hostile_names_from_the_config_are_defused_in_csv(day_data: SyntheticDay, release) -> None:
    mrt = REFERENCE_NETWORK.lines[0]
    evil = Station('=HYPERLINK("http://x","y")', 99.0, -6.2, 106.8, "Jakarta Pusat", "Menteng")
    network = Network(
        (Line(mrt.mode, "@SUM(A1)", (*mrt.stations, evil)), *REFERENCE_NETWORK.lines[1:])
    )
    _, out = release(day_data.events, day_data.cards, day_data, ReleaseConfig(network=network))
    path = out / "csv" / "ridership_line_day" / f"date={DAY.isoformat()}" / "ridership_line_day.csv"
    text = path.read_text(encoding="utf-8")
    lines = [row["line"] for row in csv.DictReader(text.splitlines())]
    assert "'@SUM(A1)" in lines and "@SUM(A1)" not in lines
    station_csv = (
        out
        / "csv"
        / "ridership_station_hour"
        / f"date={DAY.isoformat()}"
        / "ridership_station_hour.csv"
    ).read_text(encoding="utf-8")
    assert "'=HYPERLINK" in station_csv
    for row in csv.reader(station_csv.splitlines()):
        assert not any(cell.startswith(FORMULA) for cell in row)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "href=" not in html
    assert "=HYPERLINK(&quot;http://x&quot;" in html  # shown as text, escaped


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_renders_offline_in_headless_chromium(day_data: SyntheticDay, release) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("JAKARTAONE_CI"):
            pytest.fail("chromium is missing on CI (scripts/apt-packages.txt)")
        pytest.skip("chromium is not installed on this machine")
    _, out = release(day_data.events, day_data.cards, day_data)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    shot = out.parent / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1100,2400",
                f"--screenshot={shot}",
                (out / "report.html").as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 2400)
    small = image.resize((220, 480))
    pixels = list(small.get_flattened_data())
    colours = len(set(pixels))
    not_white = sum(1 for p in pixels if p != (255, 255, 255)) / len(pixels)
    assert colours > 50 and not_white > 0.05, (colours, not_white)
    # The mode colours of the hourly chart made it to the screen.
    full = set(image.get_flattened_data())
    assert (0x1F, 0x77, 0xB4) in full and (0xD6, 0x27, 0x28) in full


def test_dp_release_publishes_its_budget_and_is_deterministic(
    day_data: SyntheticDay, release
) -> None:
    config = ReleaseConfig(differential_privacy=True, epsilon=1.0)
    first, out = release(day_data.events, day_data.cards, day_data, config)
    again, _ = release(day_data.events, day_data.cards, day_data, config)
    assert first.sha256 == again.sha256 and first.epsilon == 1.0
    import json

    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    dp_info = package["jakartaone:differential_privacy"]
    assert dp_info["privacy_unit"] == "card-day"
    queries = dp_info["queries"]
    # Basic composition: the shares add up to epsilon (balances' bands run in parallel).
    per_query: dict[tuple[str, str], float] = {}
    for q in queries:
        per_query[(q["table"], q["statistic"])] = max(
            per_query.get((q["table"], q["statistic"]), 0), q["epsilon"]
        )
        assert q["error95"] >= 0 and q["l1_sensitivity"] >= 0
    # (each share is spent at most: scales are rounded up)
    assert 0.999 <= sum(per_query.values()) <= 1.0 + 1e-9
    # A different key draws different noise.
    other, _ = release(day_data.events, day_data.cards, day_data, config, key=b"z" * 32)
    assert other.sha256 != first.sha256


def test_dp_with_a_huge_epsilon_is_close_to_the_truth(day_data: SyntheticDay, release) -> None:
    _, out_exact = release(day_data.events, day_data.cards, day_data)
    _, out_noisy = release(
        day_data.events,
        day_data.cards,
        day_data,
        ReleaseConfig(
            differential_privacy=True,
            epsilon=1e6,
            max_events_per_card_day=100,
            max_amount_idr=10_000_000,
        ),
    )
    rel = f"csv/daily_totals/date={DAY.isoformat()}/daily_totals.csv"
    a = list(csv.DictReader((out_exact / rel).read_text().splitlines()))
    b = list(csv.DictReader((out_noisy / rel).read_text().splitlines()))
    for ra, rb in zip(a, b, strict=True):
        assert abs(int(ra["transactions"]) - int(rb["transactions"])) <= 5


def test_discrete_laplace_sampler_matches_its_distribution() -> None:
    source = dp.NoiseSource(b"k" * 32, b"test")
    scale = Fraction(3, 2)
    draws = list(dp.samples(source, scale, 4000))
    p = pow(2.718281828459045, -1 / float(scale))
    variance = 2 * p / (1 - p) ** 2
    mean = sum(draws) / len(draws)
    var = sum((x - mean) ** 2 for x in draws) / len(draws)
    assert abs(mean) < 0.2 and abs(var - variance) / variance < 0.15
    zero = draws.count(0) / len(draws)
    assert abs(zero - (1 - p) / (1 + p)) < 0.03
    # The error bound OpenDP gives holds for about 95 % of draws.
    bound = dp.error95(scale)
    assert sum(1 for x in draws if abs(x) <= bound) / len(draws) >= 0.93


cells = st.sampled_from([("t", (i,)) for i in range(8)])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(cells, min_size=1, max_size=3, unique=True),
            st.lists(cells, min_size=1, max_size=4, unique=True),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sets(cells, min_size=1),
)
def test_determined_cells_agrees_with_rational_elimination(raw, hidden) -> None:
    eqs = tuple(
        Equation(tuple(left), tuple(c for c in right if c not in left)) for left, right in raw
    )
    eqs = tuple(e for e in eqs if e.right)
    seen = {c: (None if c in hidden else 1) for e in eqs for c in (*e.left, *e.right)}
    suppressed = {c for c, v in seen.items() if v is None}
    assert determined_cells(suppressed, eqs) == attacker_determined(seen, eqs)
