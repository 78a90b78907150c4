"""From protected cells to published rows, and the files that carry them.

Guarantees:
- A suppressed row keeps its key and says `suppressed`; every statistic in it is empty.
  Primary and complementary suppressions look the same.
- Counts are rounded to the nearest multiple of `count_rounding_base`, rupiah sums to the
  nearest multiple of `amount_rounding_idr` (halves up), distances to whole km. Ratios
  (average ticket, fare, distance) are computed from those published values only, so they
  carry no precision the release does not already show.
- Output is deterministic: rows in public key order, fixed column order, Parquet written by
  pyarrow with fixed settings and no timestamps, CSV with "\\n" line ends, JSON with fixed
  key order.
- CSV cells that a spreadsheet would read as a formula (starting with = + - @, tab or
  carriage return) are prefixed with an apostrophe (`safe_csv_cell`). Numbers are never
  negative, so numeric cells never need it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reconciliation.analytics.cells import CellStats
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.tables import Key, MeasureKind, TableSpec

PUBLISHED = "published"
SUPPRESSED = "suppressed"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Value = str | int | None


@dataclass(frozen=True, slots=True)
class PublishedTable:
    spec: TableSpec
    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]

    def column(self, name: str) -> list[Value]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, Value]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def round_to(value: int, base: int) -> int:
    """Nearest multiple of base, halves up; value >= 0."""
    return (value + base // 2) // base * base if base > 1 else value


def stat_columns(spec: TableSpec) -> tuple[str, ...]:
    return ("cards", *(m.name for m in spec.measures), *(d.name for d in spec.derived))


def build_table(
    spec: TableSpec,
    stats: Mapping[Key, CellStats],
    suppressed: set[Key],
    config: ReleaseConfig,
) -> PublishedTable:
    const_names = tuple(f.name for f in spec.constant_fields)
    columns = (*(d.name for d in spec.dims), *const_names, "status", *stat_columns(spec))
    rows: list[tuple[Value, ...]] = []
    for key in spec.keys:
        consts = spec.constants(key) if spec.constants else {}
        head: tuple[Value, ...] = (*key, *(consts[n] for n in const_names))
        if key in suppressed:
            rows.append((*head, SUPPRESSED, *([None] * (len(columns) - len(head) - 1))))
            continue
        s = stats[key]
        values: dict[str, int | None] = {"cards": round_to(max(s.cards, 0), _count(config))}
        for m in spec.measures:
            v = max(s.measures[m.name], 0)
            if m.kind is MeasureKind.COUNT:
                values[m.name] = round_to(v, _count(config))
            elif m.kind is MeasureKind.MONEY:
                values[m.name] = round_to(v, config.amount_rounding_idr)
            else:
                values[m.name] = (v + 500) // 1000
        for d in spec.derived:
            num, den = values[d.numerator], values[d.denominator]
            values[d.name] = (
                (2 * num * d.multiplier + den) // (2 * den) if num is not None and den else None
            )
        rows.append((*head, PUBLISHED, *(values[c] for c in stat_columns(spec))))
    return PublishedTable(spec, columns, tuple(rows))


def _count(config: ReleaseConfig) -> int:
    return config.count_rounding_base


def safe_csv_cell(value: Value) -> str:
    """The CSV text of a cell; text a spreadsheet would run as a formula is defused."""
    if value is None:
        return ""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("published numbers are never negative")
        return str(value)
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def csv_bytes(table: PublishedTable, day: dt.date) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["date", *table.columns])
    for row in table.rows:
        writer.writerow([day.isoformat(), *(safe_csv_cell(v) for v in row)])
    return buf.getvalue().encode("utf-8")


def arrow_table(table: PublishedTable) -> pa.Table:
    spec = table.spec
    types: dict[str, pa.DataType] = {"status": pa.string()}
    for f in (*spec.dims, *spec.constant_fields):
        types[f.name] = pa.int64() if f.type == "integer" else pa.string()
    for name in stat_columns(spec):
        types[name] = pa.int64()
    return pa.table(
        {c: pa.array(table.column(c), type=types[c]) for c in table.columns},
    )


def write_parquet(table: PublishedTable, path: Path) -> None:
    """Fixed writer settings: the bytes depend only on the rows (and the pyarrow version,
    which constraints.txt pins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        arrow_table(table),
        path,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1 << 20,
        data_page_version="2.0",
        store_schema=False,
    )
