"""The release end to end on a synthetic day: layout, thresholds, rounding, determinism,
the data package and the input contract."""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections import defaultdict
from pathlib import Path

import frictionless
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.disclosure import CATCH_ALL
from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.geography import KOTA, OUTSIDE_DKI, mcc_group_of
from reconciliation.analytics.inputs import Seal
from reconciliation.analytics.release import run_release
from reconciliation.analytics.synthetic import SyntheticDay
from reconciliation.analytics.tables import table_specs

from .conftest import DAY, KEY


def read_csv(out: Path, table: str) -> list[dict[str, str]]:
    path = out / "csv" / table / f"date={DAY.isoformat()}" / f"{table}.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_layout_every_table_in_csv_and_parquet(day_data: SyntheticDay, release) -> None:
    summary, out = release(day_data.events, day_data.cards, day_data)
    names = [s.name for s in table_specs(ReleaseConfig())]
    assert [t.name for t in summary.tables] == names
    for name in names:
        rows = read_csv(out, name)
        parquet = pq.read_table(
            out / "parquet" / name / f"date={DAY.isoformat()}" / "part-0.parquet"
        )
        assert parquet.num_rows == len(rows) > 0
        assert {r["date"] for r in rows} == {DAY.isoformat()}
        assert parquet.column("status").to_pylist() == [r["status"] for r in rows]
    assert (out / "datapackage.json").is_file() and (out / "report.html").is_file()
    assert sorted(summary.files) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
    )


def test_every_published_cell_meets_the_thresholds(day_data: SyntheticDay, release) -> None:
    """Recomputed from the raw input rows, independently of the engine."""
    _, out = release(day_data.events, day_data.cards, day_data)
    events = day_data.events.to_pylist()
    purchases = [e for e in events if e["kind"] == "purchase"]

    def check_money_cells(table: str, key_of, key_cols: tuple[str, ...]) -> int:
        cells: dict[tuple, list[dict]] = defaultdict(list)
        for e in purchases:
            cells[key_of(e)].append(e)
        published = 0
        for row in read_csv(out, table):
            if row["status"] != "published":
                assert row["cards"] == row["transactions"] == row["amount_idr"] == ""
                continue
            published += 1
            key = tuple(int(row[c]) if c == "hour" else row[c] for c in key_cols)
            rows = cells[key]
            cards = {e["card_id"] for e in rows}
            if not rows:  # an empty catch-all row is published as zero, nothing else is
                assert set(key) & CATCH_ALL and row["transactions"] == "0", (table, key)
                continue
            assert len(cards) >= 10, (table, key)
            by_merchant: dict[str, int] = defaultdict(int)
            by_card: dict[str, int] = defaultdict(int)
            for e in rows:
                by_merchant[e["merchant_id"]] += e["amount"]
                by_card[e["card_id"]] += e["amount"]
            total = sum(e["amount"] for e in rows)
            assert len(by_merchant) >= 3, (table, key)
            assert sum(sorted(by_merchant.values())[-2:]) * 100 <= 85 * total
            assert sum(sorted(by_card.values())[-2:]) * 100 <= 85 * total
            # Rounding: counts to base 5, rupiah to Rp 1,000, the average from those.
            assert int(row["transactions"]) == (len(rows) + 2) // 5 * 5
            assert int(row["cards"]) == (len(cards) + 2) // 5 * 5
            assert int(row["amount_idr"]) == (total + 500) // 1000 * 1000
            amount, count = int(row["amount_idr"]), int(row["transactions"])
            assert int(row["avg_ticket_idr"]) == (2 * amount + count) // (2 * count)  # half up
        return published

    assert check_money_cells(
        "spending_by_kecamatan",
        lambda e: (e["kota"], e["kecamatan"]) if e["kota"] in KOTA else (OUTSIDE_DKI, OUTSIDE_DKI),
        ("kota", "kecamatan"),
    )
    assert check_money_cells(
        "spending_by_mcc_group", lambda e: (mcc_group_of(e["mcc"]),), ("mcc_group",)
    )
    assert check_money_cells("spending_by_hour", lambda e: ((e["ts"].hour + 7) % 24,), ("hour",))

    taps: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e["kind"] == "transit":
            direction = "alight" if e["tap"] == "exit" else "board"
            taps[(e["mode"], e["line"], e["station"], (e["ts"].hour + 7) % 24, direction)].append(e)
    published = 0
    for row in read_csv(out, "ridership_station_hour"):
        if row["status"] == "published" and row["station"] not in CATCH_ALL:
            key = (row["mode"], row["line"], row["station"], int(row["hour"]), row["direction"])
            assert len({e["card_id"] for e in taps[key]}) >= 10
            assert int(row["taps"]) == (len(taps[key]) + 2) // 5 * 5
            published += 1
    assert published > 10


def test_identical_inputs_give_identical_bytes(day_data: SyntheticDay, release) -> None:
    first, out1 = release(day_data.events, day_data.cards, day_data)
    # The same rows in another order, in other batches, through a DuckDB-free reader.
    shuffled = day_data.events.take(pa.array(list(range(day_data.events.num_rows))[::-1]))
    reader = pa.RecordBatchReader.from_batches(
        shuffled.schema, shuffled.to_batches(max_chunksize=977)
    )
    second, out2 = release(reader, day_data.cards, day_data)
    assert first.sha256 == second.sha256
    for rel in first.files:
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes(), rel


def test_the_package_validates_offline(day_data: SyntheticDay, release) -> None:
    _, out = release(day_data.events, day_data.cards, day_data)
    report = frictionless.validate(str(out / "datapackage.json"))
    assert report.valid, report.flatten(["title", "note"])[:5]
    package = frictionless.Package(str(out / "datapackage.json"))
    assert len(package.resources) == len(table_specs(ReleaseConfig()))
    money = package.get_resource("spending_by_kota").schema.get_field("amount_idr")
    assert money.to_descriptor()["jakartaone:unit"] == "IDR"


def test_pseudonyms_and_card_ids_never_reach_the_output(day_data: SyntheticDay, release) -> None:
    _, out = release(day_data.events, day_data.cards, day_data)
    blob = b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())
    for card_id in day_data.cards.column("card_id").to_pylist()[:50]:
        assert card_id.encode() not in blob
        pseudonym = hmac.new(KEY, card_id.encode(), hashlib.sha256).digest()
        assert pseudonym[:16].hex().encode() not in blob and pseudonym[:8] not in blob
    assert b"ev-2025" not in blob and b"merchant-0" not in blob


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: t.drop_columns(["mcc"]), ReleaseErrorCode.SCHEMA_MISMATCH),
        (lambda t: pa.concat_tables([t, t.slice(0, 1)]), ReleaseErrorCode.EVENT_ID_DUPLICATE),
        (
            lambda t: t.set_column(4, "kind", pa.array(["gift"] * t.num_rows)),
            ReleaseErrorCode.KIND_INVALID,
        ),
        (
            lambda t: t.set_column(
                3, "ts", pa.array([None] * t.num_rows, pa.timestamp("us", tz="UTC"))
            ),
            ReleaseErrorCode.NULL_IN_REQUIRED_COLUMN,
        ),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    day_data: SyntheticDay, tmp_path: Path, mutate, code: ReleaseErrorCode
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ReleaseError) as err:
        run_release(DAY, mutate(day_data.events), day_data.cards, day_data.seal, out, KEY)
    assert err.value.code is code
    assert not out.exists()
    assert "card-" not in str(err.value)


def test_events_outside_the_day_short_keys_and_bad_seals_are_refused(
    day_data: SyntheticDay, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    next_day = run_release.__globals__["dt"].date(2025, 3, 5)
    cases = [
        (dict(day=next_day), ReleaseErrorCode.EVENT_OUTSIDE_DAY),
        (dict(key=b"short"), ReleaseErrorCode.KEY_TOO_SHORT),
        (dict(seal=Seal(1, 2, "not-hex")), ReleaseErrorCode.SEAL_INVALID),
        (dict(config=ReleaseConfig(min_cards=1)), ReleaseErrorCode.CONFIG_INVALID),
    ]
    for override, code in cases:
        args = dict(
            day=DAY,
            events=day_data.events,
            cards=day_data.cards,
            seal=day_data.seal,
            out_dir=out,
            key=KEY,
            config=None,
        )
        args.update(override)
        with pytest.raises(ReleaseError) as err:
            run_release(**args)
        assert err.value.code is code
        assert not out.exists()
    out.mkdir()
    (out / "old.csv").write_text("x")
    with pytest.raises(ReleaseError) as err:
        run_release(DAY, day_data.events, day_data.cards, day_data.seal, out, KEY)
    assert err.value.code is ReleaseErrorCode.OUTPUT_NOT_EMPTY
