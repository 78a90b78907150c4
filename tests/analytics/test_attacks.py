"""Attacks on the release: totals against their parts, two releases differenced, a card
seen once. The attacker works from the published files and the public table structure
(tables.equations), with an algebra of its own (peeling, then exact rational elimination),
not the engine's."""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pyarrow as pa

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.release import Computed, compute_release
from reconciliation.analytics.synthetic import SyntheticDay, cards_table, events_table, ts_of
from reconciliation.analytics.tables import CellId, Equation, equations, table_specs

from .conftest import DAY, KEY

CONFIG = ReleaseConfig()
SPECS = {s.name: s for s in table_specs(CONFIG)}


def count_column(table: str) -> str | None:
    """The published column that counts contributing rows (count(*)), if any."""
    spec = SPECS[table]
    return next((m.name for m in spec.measures if m.sql == "count(*)"), None)


def published_counts(out: Path) -> dict[CellId, int | None]:
    """What a reader sees: each cell's row count, None when suppressed."""
    seen: dict[CellId, int | None] = {}
    for name, spec in SPECS.items():
        column = count_column(name) or "cards"
        path = out / "csv" / name / f"date={DAY.isoformat()}" / f"{name}.csv"
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                key = tuple(
                    int(row[d.name]) if d.type == "integer" else row[d.name] for d in spec.dims
                )
                seen[(name, key)] = None if row["status"] == "suppressed" else int(row[column])
    return seen


def attacker_determined(seen: dict[CellId, int | None], eqs: tuple[Equation, ...]) -> set[CellId]:
    """Suppressed cells whose exact value follows from the published ones."""
    rows: list[dict[CellId, int]] = []
    for eq in eqs:
        row = {c: 1 for c in eq.left if seen[c] is None}
        row.update({c: -1 for c in eq.right if seen[c] is None})
        if row:
            rows.append(row)
    # Peeling: a row holding two unknowns that appear in no other row constrains nothing
    # else and determines neither of them; drop it, and repeat.
    alive = set(range(len(rows)))
    while True:
        uses: dict[CellId, int] = defaultdict(int)
        for i in alive:
            for c in rows[i]:
                uses[c] += 1
        drop = {i for i in alive if sum(1 for c in rows[i] if uses[c] == 1) >= 2}
        if not drop:
            break
        alive -= drop
    # Exact elimination over the rationals on what is left, one connected part at a time.
    parent: dict[CellId, CellId] = {}

    def find(c: CellId) -> CellId:
        while parent.setdefault(c, c) != c:
            c = parent[c]
        return c

    for i in alive:
        cells = list(rows[i])
        for c in cells[1:]:
            parent[find(c)] = find(cells[0])
    parts: dict[CellId, list[int]] = defaultdict(list)
    for i in alive:
        parts[find(next(iter(rows[i])))].append(i)
    determined: set[CellId] = set()
    for members in parts.values():
        cells = sorted({c for i in members for c in rows[i]}, key=repr)
        index = {c: j for j, c in enumerate(cells)}
        matrix = [[Fraction(0)] * len(cells) for _ in members]
        for r, i in enumerate(members):
            for c, v in rows[i].items():
                matrix[r][index[c]] = Fraction(v)
        pivots = _rref(matrix)
        for r, col in enumerate(pivots):
            if all(matrix[r][j] == 0 for j in range(len(cells)) if j != col):
                determined.add(cells[col])
    return determined


def _rref(m: list[list[Fraction]]) -> list[int]:
    pivots: list[int] = []
    r = 0
    for col in range(len(m[0]) if m else 0):
        pick = next((i for i in range(r, len(m)) if m[i][col] != 0), None)
        if pick is None:
            continue
        m[r], m[pick] = m[pick], m[r]
        inv = 1 / m[r][col]
        m[r] = [v * inv for v in m[r]]
        for i in range(len(m)):
            if i != r and m[i][col] != 0:
                f = m[i][col]
                m[i] = [a - f * b for a, b in zip(m[i], m[r], strict=True)]
        pivots.append(col)
        r += 1
    return pivots


def release_files(data: SyntheticDay, events: pa.Table, cards: pa.Table, out: Path) -> Computed:
    from reconciliation.analytics.release import _write  # the same writer run_release uses

    computed = compute_release(DAY, events, cards, data.seal, KEY, CONFIG)
    _write(DAY, computed, data.seal, out, CONFIG)
    return computed


def test_no_suppressed_cell_follows_from_totals_and_neighbours(
    day_data: SyntheticDay, tmp_path: Path
) -> None:
    computed = release_files(day_data, day_data.events, day_data.cards, tmp_path)
    seen = published_counts(tmp_path)
    eqs = equations(CONFIG)
    suppressed = {c for c, v in seen.items() if v is None}
    assert computed.protection.suppressed == suppressed
    exposed = attacker_determined(seen, eqs) & computed.protection.primary
    assert not exposed, sorted(exposed, key=repr)[:5]
    # No total minus its published parts isolates a group of small cells either.
    for eq in eqs:
        for hidden, other in ((eq.left, eq.right), (eq.right, eq.left)):
            cells = [c for c in hidden if c in suppressed]
            if cells and not any(c in suppressed for c in other):
                stats = [computed.stats[c] for c in cells]
                if max(s.cards for s in stats) < CONFIG.min_cards:
                    union = set().union(*(s.card_set or set() for s in stats))
                    assert len(union) >= CONFIG.min_cards, cells


def test_the_attacker_is_not_blind(day_data: SyntheticDay) -> None:
    """The same attacker does find a cell left alone in its sum."""
    eqs = equations(CONFIG)
    seen: dict[CellId, int | None] = {c: 1 for eq in eqs for c in (*eq.left, *eq.right)}
    lonely = ("spending_by_kota", ("Jakarta Utara",))
    seen[lonely] = None
    assert lonely in attacker_determined(seen, eqs)
    pair = [("spending_by_hour", (3,)), ("spending_by_hour", (4,))]
    for c in pair:
        seen[c] = None
    assert not set(pair) & attacker_determined(seen, eqs)


def x_card_rows() -> list[dict]:
    base = {"card_id": "card-x", "card_registered": True, "fare_capped": False}
    return [
        {
            **base,
            "event_id": "x-1",
            "ts": ts_of(DAY, 8 * 3600 + 60),
            "kind": "transit",
            "amount": 0,
            "merchant_id": "operator-MRT",
            "mcc": 4111,
            "mode": "MRT",
            "line": "North-South",
            "station": "Blok M",
            "tap": "entry",
            "kota": "Jakarta Selatan",
            "kecamatan": "Kebayoran Baru",
            "balance_after": 100_000,
        },
        {
            **base,
            "event_id": "x-2",
            "ts": ts_of(DAY, 8 * 3600 + 1000),
            "kind": "transit",
            "amount": 5_000,
            "merchant_id": "operator-MRT",
            "mcc": 4111,
            "mode": "MRT",
            "line": "North-South",
            "station": "Senayan",
            "tap": "exit",
            "entry_station": "Blok M",
            "distance_m": 2000,
            "kota": "Jakarta Selatan",
            "kecamatan": "Kebayoran Baru",
            "balance_after": 95_000,
        },
        {
            **base,
            "event_id": "x-3",
            "ts": ts_of(DAY, 12 * 3600 + 600),
            "kind": "purchase",
            "amount": 42_000,
            "merchant_id": "merchant-00003",
            "mcc": 5814,
            "kota": "Jakarta Selatan",
            "kecamatan": "Kebayoran Baru",
            "balance_after": 53_000,
        },
    ]


def differencing_exposures(
    a: Computed, a_out: Path, b: Computed, b_out: Path, delta: Computed, sign: int
) -> list[tuple[CellId, list[int]]]:
    """Cells suppressed in release a but published in b: the values of a's cell that an
    attacker who knows the card's rows (delta, b = a + sign * card) cannot rule out."""
    seen_a, seen_b = published_counts(a_out), published_counts(b_out)
    eqs = equations(CONFIG)
    out = []
    for cell, va in seen_a.items():
        vb = seen_b[cell]
        if va is not None or vb is None or count_column(cell[0]) is None:
            continue
        x = sign * delta.stats[cell].rows
        candidates = {
            t for t in range(max(0, vb - 2 - x), vb + 3 - x) if (t + x + 2) // 5 * 5 == vb
        }
        for eq in eqs:  # bounds from a's own totals, rounding slack included
            for same, other in ((eq.left, eq.right), (eq.right, eq.left)):
                if cell in same and all(seen_a[c] is not None for c in other):
                    upper = sum(seen_a[c] + 2 for c in other) - sum(
                        max(0, seen_a[c] - 2) for c in same if seen_a[c] is not None
                    )
                    candidates = {t for t in candidates if t <= upper}
        out.append((cell, sorted(candidates)))
    return out


def test_two_releases_differenced_recover_no_suppressed_cell(
    day_data: SyntheticDay, tmp_path: Path
) -> None:
    x_events = events_table(x_card_rows())
    x_cards = cards_table([("card-x", True, 53_000)])
    with_x = pa.concat_tables([day_data.events, x_events])
    cards_x = pa.concat_tables([day_data.cards, x_cards])
    r1 = release_files(day_data, day_data.events, day_data.cards, tmp_path / "r1")
    r2 = release_files(day_data, with_x, cards_x, tmp_path / "r2")
    x_alone = compute_release(DAY, x_events, x_cards, day_data.seal, KEY, CONFIG)
    flips = differencing_exposures(r1, tmp_path / "r1", r2, tmp_path / "r2", x_alone, +1)
    flips += differencing_exposures(r2, tmp_path / "r2", r1, tmp_path / "r1", x_alone, -1)
    for cell, candidates in flips:
        assert len(candidates) >= 2, (cell, candidates)
    # Removing a busy card from the day: the same holds.
    busiest = max(
        set(day_data.events.column("card_id").to_pylist()),
        key=day_data.events.column("card_id").to_pylist().count,
    )
    keep = pa.array([c != busiest for c in day_data.events.column("card_id").to_pylist()])
    without = day_data.events.filter(keep)
    r3 = release_files(day_data, without, day_data.cards, tmp_path / "r3")
    removed = day_data.events.filter(pa.compute.invert(keep))
    card_rows = day_data.cards.filter(pa.compute.equal(day_data.cards.column("card_id"), busiest))
    alone = compute_release(DAY, removed, card_rows, day_data.seal, KEY, CONFIG)
    for cell, candidates in differencing_exposures(
        r1, tmp_path / "r1", r3, tmp_path / "r3", alone, -1
    ) + differencing_exposures(r3, tmp_path / "r3", r1, tmp_path / "r1", alone, +1):
        assert len(candidates) >= 2, (cell, candidates)
    # And each release alone withstands the totals attack.
    for r, out in ((r2, tmp_path / "r2"), (r3, tmp_path / "r3")):
        assert (
            not attacker_determined(published_counts(out), equations(CONFIG)) & r.protection.primary
        )


def test_a_card_seen_only_once_leaves_no_trace(day_data: SyntheticDay, tmp_path: Path) -> None:
    once = {
        "event_id": "lonely-event-1",
        "card_id": "lonely-card-0001",
        "card_registered": False,
        "ts": ts_of(DAY, 3 * 3600 + 17 * 60),
        "kind": "transit",
        "amount": 3_500,
        "merchant_id": "operator-TJ",
        "mcc": 4131,
        "mode": "TJ",
        "line": "Koridor 1",
        "station": "Monas",
        "tap": "flat",
        "kota": "Jakarta Pusat",
        "kecamatan": "Gambir",
        "fare_capped": False,
        "balance_after": 16_500,
    }
    events = pa.concat_tables([day_data.events, events_table([once])])
    cards = pa.concat_tables([day_data.cards, cards_table([("lonely-card-0001", False, 16_500)])])
    base = release_files(day_data, day_data.events, day_data.cards, tmp_path / "without")
    lone = release_files(day_data, events, cards, tmp_path / "with")
    blob = b"".join(p.read_bytes() for p in sorted((tmp_path / "with").rglob("*")) if p.is_file())
    pseudonym = hmac.new(KEY, b"lonely-card-0001", hashlib.sha256).digest()[:16]
    for needle in (b"lonely", pseudonym, pseudonym.hex().encode(), b"03:17"):
        assert needle not in blob
    # Every row is the same, except totals of at least min_cards cards that moved by at
    # most one rounding step; no row changed status.
    for t_without, t_with in zip(base.tables, lone.tables, strict=True):
        for r0, r1 in zip(t_without.records(), t_with.records(), strict=True):
            assert r0["status"] == r1["status"], (t_with.spec.name, r1)
            if r0 == r1:
                continue
            assert r1["cards"] is not None and int(r1["cards"]) >= CONFIG.min_cards
            for m in t_with.spec.measures:
                step = CONFIG.amount_rounding_idr if m.kind == "money" else 5
                own = 16_500 if m.kind == "money" else 1  # its fare or its balance
                assert abs(int(r1[m.name] or 0) - int(r0[m.name] or 0)) <= step + own


def test_the_differencing_check_sees_flips(day_data: SyntheticDay, tmp_path: Path) -> None:
    """Adding ten cards to a quiet cell publishes it: the exposure check must notice the flip
    (and then still finds the rounding keeps several values possible)."""
    rows = []
    for i in range(10):
        rows.append(
            {
                "event_id": f"crowd-{i}",
                "card_id": f"crowd-{i}",
                "card_registered": False,
                "ts": ts_of(DAY, 3 * 3600 + 60 * i),
                "kind": "transit",
                "amount": 3_500,
                "merchant_id": "operator-TJ",
                "mcc": 4131,
                "mode": "TJ",
                "line": "Koridor 1",
                "station": "Monas",
                "tap": "flat",
                "kota": "Jakarta Pusat",
                "kecamatan": "Gambir",
                "fare_capped": False,
                "balance_after": 1_000,
            }
        )
    crowd = events_table(rows)
    crowd_cards = cards_table([(f"crowd-{i}", False, 1_000) for i in range(10)])
    r1 = release_files(day_data, day_data.events, day_data.cards, tmp_path / "r1")
    r2 = release_files(
        day_data,
        pa.concat_tables([day_data.events, crowd]),
        pa.concat_tables([day_data.cards, crowd_cards]),
        tmp_path / "r2",
    )
    alone = compute_release(DAY, crowd, crowd_cards, day_data.seal, KEY, CONFIG)
    flips = dict(differencing_exposures(r1, tmp_path / "r1", r2, tmp_path / "r2", alone, +1))
    # Monas alone at 03:00 hides behind the empty stations; the line's hour flips.
    cell = ("ridership_line_hour", ("TJ", "Koridor 1", 3, "board"))
    assert cell in flips and 2 <= len(flips[cell]) <= 5
    assert r1.stats[cell].rows in flips[cell]
