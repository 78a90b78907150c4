"""The anonymized spending and travel release for policymakers: the one entry point.

    run_release(day, events, cards, seal, out_dir, key, config=ReleaseConfig())
        -> ReleaseSummary

- day: the business day (datetime.date, WIB = UTC+7).
- events, cards: Arrow data matching inputs.EVENTS_SCHEMA and inputs.CARDS_SCHEMA (a
  pyarrow Table or RecordBatchReader, or a DuckDB relation); seal: inputs.Seal.
- out_dir: where the release goes; created if missing, and it must hold no earlier release
  (`output_not_empty`).
- key: the release key, at least 32 bytes, from the environment. It keys the card
  pseudonyms and the DP noise; it is never written anywhere.
- config: thresholds, rounding, optional differential privacy (config.ReleaseConfig).

What it writes in out_dir (docs/privacy.md explains the rules):

    datapackage.json                                   Frictionless Data Package v2
    report.html                                        the policymakers' report, offline
    csv/<table>/date=YYYY-MM-DD/<table>.csv            UTF-8 CSV, one per table
    parquet/<table>/date=YYYY-MM-DD/part-0.parquet     Parquet, Hive-partitioned by date

Tables: daily_totals, spending_by_mcc_group, spending_by_kota, spending_by_kecamatan,
spending_by_hour, loads_by_channel, ridership_station_15min, ridership_station_hour,
ridership_line_hour, ridership_line_day, od_rail, od_brt, transfers, fare_cap_use,
fares_by_mode, card_mix, balances_by_band; the seal is in datapackage.json and the report.

Guarantees:
- Deterministic: the same inputs, key and config give byte-identical files.
- Bad input raises errors.ReleaseError with its code before anything is written.
- The heavy work runs in an in-process DuckDB with a memory cap, no extensions and no file
  access; its spill directory is private to the run and deleted with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import duckdb

from reconciliation.analytics import dp as dpmod
from reconciliation.analytics.cells import CellStats, compute_cells
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.disclosure import Protection, protect
from reconciliation.analytics.errors import ReleaseError, ReleaseErrorCode
from reconciliation.analytics.inputs import ArrowStream, Seal, load_inputs, pseudonymizer
from reconciliation.analytics.package import package_json
from reconciliation.analytics.prepare import prepare
from reconciliation.analytics.publish import (
    SUPPRESSED,
    PublishedTable,
    build_table,
    csv_bytes,
    write_parquet,
)
from reconciliation.analytics.report import report_html
from reconciliation.analytics.tables import (
    CellId,
    Key,
    MeasureKind,
    Rules,
    TableSpec,
    equations,
    table_specs,
)


@dataclass(frozen=True, slots=True)
class TableSummary:
    name: str
    rows: int
    published: int
    suppressed: int


@dataclass(frozen=True, slots=True)
class ReleaseSummary:
    """What a release wrote: files relative to out_dir, in writing order, and a digest."""

    day: dt.date
    out_dir: Path
    tables: tuple[TableSummary, ...]
    files: tuple[str, ...]
    epsilon: float | None
    sha256: str  # over every file's path and bytes, in `files` order


@dataclass(frozen=True, slots=True)
class Computed:
    """The release before it is written (tests inspect it)."""

    specs: tuple[TableSpec, ...]
    stats: dict[CellId, CellStats]
    protection: Protection
    tables: list[PublishedTable]
    budget: list[dpmod.QueryBudget]


def run_release(
    day: dt.date,
    events: ArrowStream,
    cards: ArrowStream,
    seal: Seal,
    out_dir: Path,
    key: bytes,
    config: ReleaseConfig | None = None,
) -> ReleaseSummary:
    """Compute and write the release for `day` (see the module docstring)."""
    config = config or ReleaseConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ReleaseError(ReleaseErrorCode.OUTPUT_NOT_EMPTY, "the output directory is not empty")
    computed = compute_release(day, events, cards, seal, key, config)
    return _write(day, computed, seal, out_dir, config)


def compute_release(
    day: dt.date,
    events: ArrowStream,
    cards: ArrowStream,
    seal: Seal,
    key: bytes,
    config: ReleaseConfig,
) -> Computed:
    config.check()
    seal.check()
    pseudonymizer(key)  # refuses a short key before any work
    specs = table_specs(config)
    stats: dict[CellId, CellStats] = {}
    with tempfile.TemporaryDirectory(prefix="jakartaone-analytics-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": config.duckdb_memory_limit,
                "threads": config.duckdb_threads,
                "temp_directory": spill,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "python_enable_replacements": False,
            }
        )
        try:
            load_inputs(con, day, events, cards, key)
            con.execute("SET enable_external_access = false")
            prepare(con, config)
            for spec in specs:
                for k, s in compute_cells(con, spec, config).items():
                    stats[(spec.name, k)] = s
            digest = _input_digest(con, seal) if config.differential_privacy else b""
        finally:
            con.close()
    budget: list[dpmod.QueryBudget] = []
    if config.differential_privacy:
        stats, budget = _add_noise(specs, stats, key, day, digest, config)
    rules: dict[CellId, Rules] = {(s.name, k): s.rules(k) for s in specs for k in s.keys}
    priority = {s.name: s.priority for s in specs}
    protection = protect(stats, rules, priority, equations(config), config)
    tables = []
    for spec in specs:
        hidden = {k for t, k in protection.suppressed if t == spec.name}
        cell_stats = {k: stats[(spec.name, k)] for k in spec.keys}
        tables.append(build_table(spec, cell_stats, hidden, config))
    return Computed(specs, stats, protection, tables, budget)


def _input_digest(con: duckdb.DuckDBPyConnection, seal: Seal) -> bytes:
    """An order-independent digest of every input row: any change draws fresh DP noise."""
    row = con.execute(
        """
        SELECT (SELECT count(*) FROM ev_raw),
               (SELECT bit_xor(md5_number(concat_ws('|', event_id, hex(card), ts_us, kind,
                    amount, merchant_id, mcc, kota, kecamatan, mode, line, station, tap,
                    entry_station, distance_m, fare_capped, load_channel, balance_after,
                    card_registered))) FROM ev_raw),
               (SELECT count(*) FROM cards_in),
               (SELECT bit_xor(md5_number(concat_ws('|', hex(card), card_registered, balance)))
                FROM cards_in)
        """
    ).fetchone()
    text = f"{row}|{seal.block_no}|{seal.last_seq}|{seal.block_hash}"
    return hashlib.sha256(text.encode()).digest()


def _add_noise(
    specs: tuple[TableSpec, ...],
    stats: dict[CellId, CellStats],
    key: bytes,
    day: dt.date,
    digest: bytes,
    config: ReleaseConfig,
) -> tuple[dict[CellId, CellStats], list[dpmod.QueryBudget]]:
    """Replace every statistic the rules and the tables use by its noisy value."""
    source = dpmod.NoiseSource(key, day.isoformat().encode() + b"|" + digest)
    queries: list[tuple[TableSpec, str]] = []
    for spec in specs:
        queries.append((spec, "cards"))
        queries.extend((spec, m.name) for m in spec.measures)
        if any(spec.rules(k).merchants for k in spec.keys):
            queries += [(spec, "merchants"), (spec, "top_merchants")]
    share = config.epsilon / len(queries)
    k_max, c_max = config.max_events_per_card_day, config.max_amount_idr
    budget: list[dpmod.QueryBudget] = []
    noisy: dict[CellId, dict[str, int]] = {}
    for spec, stat in queries:
        rows = spec.rows_per_card_day or k_max
        kind = next((m.kind for m in spec.measures if m.name == stat), None)
        per_cell = None
        if stat == "cards":
            sensitivity = min(rows, len(spec.keys))
        elif stat == "top_merchants" or kind is MeasureKind.MONEY:
            sensitivity = rows * c_max
            per_cell = spec.money_bound if kind is MeasureKind.MONEY else None
        elif kind is MeasureKind.DISTANCE:
            sensitivity = rows * config.max_distance_m
        else:
            sensitivity = rows
        scales: dict[int, Fraction] = {}
        for k in spec.keys:
            s = stats[(spec.name, k)]
            true = _true_value(s, stat)
            bound, cells = (per_cell(k), str(k[-1])) if per_cell else (sensitivity, "all")
            if bound not in scales:
                scales[bound] = _calibrated(spec.name, stat, bound, share, cells, budget)
            scale = scales[bound]
            noise = source.sample(spec.name, stat, k, scale) if scale else 0
            noisy.setdefault((spec.name, k), {})[stat] = true + noise
    margins = {q.table: q.error95 for q in budget if q.statistic == "cards"}
    out: dict[CellId, CellStats] = {}
    for cell, s in stats.items():
        n = noisy[cell]
        spec = next(sp for sp in specs if sp.name == cell[0])
        money = next((m.name for m in spec.measures if m.kind is MeasureKind.MONEY), None)
        counts = [m.name for m in spec.measures if m.kind is MeasureKind.COUNT]
        out[cell] = replace(
            s,
            rows=n[counts[0]] if counts else n["cards"],
            cards=n["cards"],
            measures={m.name: n[m.name] for m in spec.measures},
            money=n[money] if money else 0,
            merchants=n.get("merchants", s.merchants),
            top_merchants=n.get("top_merchants", s.top_merchants),
            top_cards=0,
            card_set=None,
            merchant_set=None,
            cards_margin=margins[cell[0]],
        )
    return out, budget


def _calibrated(
    table: str, stat: str, bound: int, share: float, cells: str, budget: list[dpmod.QueryBudget]
) -> Fraction:
    """The noise scale for one query (or one band), recorded in the published budget."""
    scale, spent = dpmod.calibrate(bound, share) if bound else (Fraction(0), 0.0)
    error = dpmod.error95(scale) if bound else 0
    budget.append(dpmod.QueryBudget(table, stat, spent, bound, float(scale), error, cells))
    return scale


def _true_value(s: CellStats, stat: str) -> int:
    if stat == "cards":
        return s.cards
    if stat == "merchants":
        return s.merchants
    if stat == "top_merchants":
        return s.top_merchants
    return s.measures[stat]


def _write(
    day: dt.date, computed: Computed, seal: Seal, out_dir: Path, config: ReleaseConfig
) -> ReleaseSummary:
    out_dir.mkdir(parents=True, exist_ok=True)
    part = f"date={day.isoformat()}"
    written: list[tuple[str, bytes]] = []
    paths: dict[str, tuple[str, str]] = {}
    for t in computed.tables:
        name = t.spec.name
        csv_rel = f"csv/{name}/{part}/{name}.csv"
        parquet_rel = f"parquet/{name}/{part}/part-0.parquet"
        paths[name] = (csv_rel, parquet_rel)
        data = csv_bytes(t, day)
        (out_dir / csv_rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / csv_rel).write_bytes(data)
        write_parquet(t, out_dir / parquet_rel)
        written += [(csv_rel, data), (parquet_rel, (out_dir / parquet_rel).read_bytes())]
    pkg = package_json(day, computed.tables, paths, seal, config, computed.budget)
    html = report_html(day, computed.tables, seal, config, computed.budget)
    for rel, data in (("datapackage.json", pkg), ("report.html", html)):
        (out_dir / rel).write_bytes(data)
        written.append((rel, data))
    digest = hashlib.sha256()
    for rel, data in written:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    summaries = tuple(
        TableSummary(
            t.spec.name,
            len(t.rows),
            sum(1 for s in t.column("status") if s != SUPPRESSED),
            sum(1 for s in t.column("status") if s == SUPPRESSED),
        )
        for t in computed.tables
    )
    return ReleaseSummary(
        day,
        out_dir,
        summaries,
        tuple(rel for rel, _ in written),
        config.epsilon if config.differential_privacy else None,
        digest.hexdigest(),
    )


__all__ = [
    "Computed",
    "Key",
    "ReleaseConfig",
    "ReleaseError",
    "ReleaseSummary",
    "Seal",
    "TableSummary",
    "compute_release",
    "run_release",
]
