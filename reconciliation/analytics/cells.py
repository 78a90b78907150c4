"""Per-cell statistics of every table, computed in DuckDB.

For each public key of a table: the measures, the distinct cards, and what the magnitude
rules need (merchants, the sums of the top-n cards and top-n merchants). Cells with fewer
cards (merchants) than the thresholds also carry their sets of card pseudonyms (merchant
ids): complementary suppression needs them to check a union of small cells, and they never
leave the process. A key with no contributing rows gets zero statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.tables import Key, MeasureKind, TableSpec


@dataclass(frozen=True, slots=True)
class CellStats:
    rows: int = 0
    cards: int = 0
    measures: dict[str, int] = field(default_factory=dict)
    money: int = 0  # the cell's rupiah sum that dominance is judged on
    merchants: int = 0
    top_cards: int = 0
    top_merchants: int = 0
    card_set: frozenset[bytes] | None = frozenset()
    merchant_set: frozenset[str] | None = frozenset()
    # DP only: the 95 % error bound of the noisy card count; a cell is published only when
    # its noisy count clears the threshold by this much, so that published cells are
    # likely real and not noise on an empty key.
    cards_margin: int = 0


def compute_cells(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, config: ReleaseConfig
) -> dict[Key, CellStats]:
    """Statistics for every key of `spec`, in key order."""
    dims = [d.name for d in spec.dims]
    dim_list = ", ".join(dims)
    money = next((m for m in spec.measures if m.kind is MeasureKind.MONEY), None)
    measure_sql = "".join(f", {m.sql} AS m_{i}" for i, m in enumerate(spec.measures))
    top_n = config.dominance_top_n
    top = ""
    joins = ""
    if money is not None:
        for who in ("card", "merchant"):
            top += f"""
            , top_{who} AS (
                SELECT {dim_list}, sum(s) AS top_sum FROM (
                    SELECT {dim_list}, {who}, s, row_number() OVER (
                        PARTITION BY {dim_list} ORDER BY s DESC, {who}) AS rank
                    FROM (SELECT {dim_list}, {who}, sum(amount) AS s FROM src
                          WHERE {who} IS NOT NULL GROUP BY ALL)
                ) WHERE rank <= {top_n} GROUP BY ALL
            )"""
            joins += f" LEFT JOIN top_{who} USING ({dim_list})"
    sql = f"""
        WITH src AS ({spec.source}),
        cell AS (
            SELECT {dim_list}, count(*) AS rows_, count(DISTINCT card) AS cards_,
                   coalesce(sum(amount), 0) AS money_,
                   count(DISTINCT merchant) AS merchants_,
                   CASE WHEN count(DISTINCT card) < {config.min_cards}
                        THEN list(DISTINCT card) END AS card_set,
                   CASE WHEN count(DISTINCT merchant) < {config.min_merchants}
                        THEN list(DISTINCT merchant) FILTER (merchant IS NOT NULL) END
                       AS merchant_set
                   {measure_sql}
            FROM src GROUP BY {dim_list}
        ){top}
        SELECT cell.*{", top_card.top_sum, top_merchant.top_sum" if money else ""}
        FROM cell{joins}
    """
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    found: dict[Key, CellStats] = {}
    n = len(dims)
    for row in result.fetchall():
        rec = dict(zip(names, row, strict=False))
        key = tuple(row[:n])
        measures = {m.name: int(rec[f"m_{i}"] or 0) for i, m in enumerate(spec.measures)}
        tops = row[len(names) - 2 :] if money else (0, 0)
        found[key] = CellStats(
            rows=int(rec["rows_"]),
            cards=int(rec["cards_"]),
            measures=measures,
            money=int(rec["money_"]) if money else 0,
            merchants=int(rec["merchants_"]),
            top_cards=int(tops[0] or 0),
            top_merchants=int(tops[1] or 0),
            card_set=None if rec["card_set"] is None else frozenset(rec["card_set"]),
            merchant_set=None if rec["merchant_set"] is None else frozenset(rec["merchant_set"]),
        )
    stray = set(found) - set(spec.keys)
    if stray:
        # A contributing row outside the public keys would be silently lost and would
        # break the table's sums: the key mapping in prepare.py must cover every value.
        raise RuntimeError(f"{spec.name}: {len(stray)} cells outside the public keys")
    empty = CellStats(measures={m.name: 0 for m in spec.measures})
    return {key: found.get(key, empty) for key in spec.keys}
