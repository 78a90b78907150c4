"""Which cells are published: the primary rules and complementary suppression.

Guarantees (with the thresholds of the release config):
1. Primary rule: a cell is published only if it has at least `min_cards` distinct cards and,
   where its rules say so (tables.Rules), at least `min_merchants` merchants, its top
   `dominance_top_n` merchants hold at most `dominance_percent` % of its sum, and its top
   `dominance_top_n` cards hold at most that share too. `primary_fails` is the one place
   this is decided.
2. No equation (tables.equations: a total equals the sum of its parts) has exactly one
   suppressed cell: that cell would be its total minus its published neighbours.
3. Where one side of an equation is fully published, the suppressed cells of the other
   side, whose sum a reader can therefore compute, together pass the primary rule (two
   small cells cannot shelter each other).
4. No cell that failed the primary rule is determined by all the equations together: the
   audit solves the whole linear system (`determined_cells`) and suppresses more until
   none is.
An empty catch-all cell is published as zero (see `_empty_catch_all`).
Secondary suppressions are chosen cheapest first: the lowest table priority, then the
fewest contributing rows, then the key, so the choice is deterministic.

Under differential privacy the statistics are the noisy ones, the card threshold must be
cleared by the noise's 95 % error bound (CellStats.cards_margin), and rule 3 is not applied
(the union of small cells is not measured; the noise protects it); card dominance is not
applied either, since every card-day's contribution is clipped. Everything here is then
post-processing of the noisy measurements.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciliation.analytics.cells import CellStats
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.geography import OTHER, OUTSIDE_DKI, UNKNOWN
from reconciliation.analytics.tables import CellId, Equation, Rules

CATCH_ALL = frozenset({OTHER, UNKNOWN, OUTSIDE_DKI})

_PRIME = (1 << 61) - 1  # exact arithmetic modulo a large prime (see determined_cells)


def primary_fails(stats: CellStats, rules: Rules, config: ReleaseConfig) -> bool:
    """True when the cell must not be published on its own account (guarantee 1)."""
    if stats.cards - stats.cards_margin < config.min_cards:
        return True
    share = config.dominance_percent
    if rules.merchants and (
        stats.merchants < config.min_merchants or stats.top_merchants * 100 > share * stats.money
    ):
        return True
    dp = config.differential_privacy
    return rules.card_dominance and not dp and stats.top_cards * 100 > share * stats.money


def union_fails(cells: list[CellStats], rules: Rules, config: ReleaseConfig) -> bool:
    """True when the sum of these cells, taken as one cell, would fail the primary rule.

    Exact for the distinct cards and merchants (small cells carry their sets); for
    dominance it uses sum(top-n of each cell) >= top-n of the union, so it can only err
    towards suppressing.
    """
    if max(c.cards for c in cells) < config.min_cards:
        union: set[bytes] = set()
        for c in cells:
            assert c.card_set is not None  # small cells always carry their card set
            union |= c.card_set
        if len(union) < config.min_cards:
            return True
    money = sum(c.money for c in cells)
    share = config.dominance_percent
    if rules.merchants:
        if max(c.merchants for c in cells) < config.min_merchants:
            merchants: set[str] = set()
            for c in cells:
                assert c.merchant_set is not None
                merchants |= c.merchant_set
            if len(merchants) < config.min_merchants:
                return True
        if sum(c.top_merchants for c in cells) * 100 > share * money:
            return True
    return rules.card_dominance and sum(c.top_cards for c in cells) * 100 > share * money


@dataclass(frozen=True, slots=True)
class Protection:
    suppressed: frozenset[CellId]
    primary: frozenset[CellId]


def protect(
    stats: Mapping[CellId, CellStats],
    rules: Mapping[CellId, Rules],
    priority: Mapping[str, int],
    eqs: tuple[Equation, ...],
    config: ReleaseConfig,
) -> Protection:
    """The set of suppressed cells meeting guarantees 1 to 4."""
    primary = frozenset(
        c
        for c, s in stats.items()
        if primary_fails(s, rules[c], config) and not _empty_catch_all(c, s, config)
    )
    suppressed = set(primary)
    by_cell: dict[CellId, list[int]] = defaultdict(list)
    for i, eq in enumerate(eqs):
        for c in (*eq.left, *eq.right):
            by_cell[c].append(i)

    def cost(c: CellId) -> tuple[int, int, str]:
        return (priority[c[0]], stats[c].rows, repr(c))

    def cheapest(cells: Iterable[CellId]) -> CellId | None:
        free = [c for c in cells if c not in suppressed]
        # An empty cell hides nothing: a reader who suspects it is empty learns the rest.
        useful = [c for c in free if stats[c].rows > 0] or free
        return min(useful, key=cost) if useful else None

    def repair(eq: Equation) -> CellId | None:
        left = [c for c in eq.left if c in suppressed]
        right = [c for c in eq.right if c in suppressed]
        if len(left) + len(right) == 1:
            side, other = (eq.left, eq.right) if left else (eq.right, eq.left)
            return cheapest(side) or cheapest(other)
        if config.differential_privacy:
            return None
        for hidden, side, other in ((left, eq.left, eq.right), (right, eq.right, eq.left)):
            if (
                hidden
                and not any(c in suppressed for c in other)
                and union_fails([stats[c] for c in hidden], rules[hidden[0]], config)
            ):
                return cheapest(side) or cheapest(other)
        return None

    def settle(queue: list[int]) -> None:
        heapq.heapify(queue)
        while queue:
            i = heapq.heappop(queue)
            cell = repair(eqs[i])
            if cell is None:
                continue
            suppressed.add(cell)
            heapq.heappush(queue, i)
            for j in by_cell[cell]:
                heapq.heappush(queue, j)

    settle(list(range(len(eqs))))
    while True:
        exposed = determined_cells(suppressed, eqs) & primary
        if not exposed:
            break
        queue: list[int] = []
        for cell in sorted(exposed, key=repr):
            for i in by_cell[cell]:
                extra = cheapest((*eqs[i].left, *eqs[i].right))
                if extra is not None:
                    suppressed.add(extra)
                    queue.extend(by_cell[extra])
                    break
            else:
                # Every equation through the cell is fully suppressed, yet the system
                # pins it: open the cheapest published cell of any equation that
                # touches a suppressed cell.
                touching = {
                    c for s in suppressed for i in by_cell[s] for c in (*eqs[i].left, *eqs[i].right)
                }
                extra = cheapest(touching)
                if extra is None:
                    raise RuntimeError("complementary suppression cannot protect a cell")
                suppressed.add(extra)
                queue.extend(by_cell[extra])
        settle(queue)
    return Protection(frozenset(suppressed), primary)


def _empty_catch_all(cell: CellId, stats: CellStats, config: ReleaseConfig) -> bool:
    """An empty catch-all row ((other), (unknown), outside DKI) is published as zero.

    It says only that every input value matched the public reference data, nothing about a
    person; suppressing it would force a large partner cell out of every sum it is part of
    (a line total, a mode total). Other empty cells stay suppressed, so that a card alone
    in a cell leaves no trace. Under DP every cell is noisy and nothing is special.
    """
    return (
        not config.differential_privacy
        and stats.rows == 0
        and any(part in CATCH_ALL for part in cell[1])
    )


def determined_cells(suppressed: set[CellId], eqs: tuple[Equation, ...]) -> set[CellId]:
    """Suppressed cells whose value follows exactly from the published cells and `eqs`.

    Each equation, with published values moved to its right-hand side, is a linear
    equation in the suppressed cells. A cell x_i is determined exactly when the unit vector
    e_i lies in the row space; in the reduced row echelon form that is a pivot row with no
    other entry. Elimination is exact, modulo a 61-bit prime: every coefficient is 0 or +-1,
    and the ranks agree with those over the rationals unless the prime divides a minor of
    the system, which is far beyond the sizes here.
    """
    pivots: dict[CellId, dict[CellId, int]] = {}
    holders: dict[CellId, set[CellId]] = defaultdict(set)  # cell -> pivots whose row has it
    for eq in eqs:
        row: dict[CellId, int] = {}
        for c in eq.left:
            if c in suppressed:
                row[c] = (row.get(c, 0) + 1) % _PRIME
        for c in eq.right:
            if c in suppressed:
                row[c] = (row.get(c, 0) - 1) % _PRIME
        row = {c: v for c, v in row.items() if v}
        for p in [c for c in row if c in pivots]:
            factor = row.get(p, 0)
            if factor:
                _axpy(row, pivots[p], -factor)
        if not row:
            continue
        pivot = min(row, key=repr)
        inverse = pow(row[pivot], _PRIME - 2, _PRIME)
        row = {c: v * inverse % _PRIME for c, v in row.items()}
        for q in list(holders[pivot]):
            q_row = pivots[q]
            factor = q_row[pivot]
            before = set(q_row)
            _axpy(q_row, row, -factor)
            for c in before - set(q_row):
                holders[c].discard(q)
            for c in set(q_row) - before:
                holders[c].add(q)
        pivots[pivot] = row
        for c in row:
            holders[c].add(pivot)
    return {p for p, row in pivots.items() if len(row) == 1}


def _axpy(row: dict[CellId, int], other: Mapping[CellId, int], factor: int) -> None:
    """row += factor * other (mod the prime), dropping zeros."""
    for c, v in other.items():
        value = (row.get(c, 0) + factor * v) % _PRIME
        if value:
            row[c] = value
        else:
            row.pop(c, None)
