"""Optional differential privacy: the card-day unit, OpenDP accounting, keyed exact noise.

The privacy unit is one card's day. Before anything is counted, each card-day is bounded
(prepare.py): at most `max_events_per_card_day` events (the first ones of the day), each
amount clipped to `max_amount_idr`, each distance to `max_distance_m`, each balance to its
band's top. The cell keys are public (geography), so adding or removing a card-day changes
only values, never which rows exist.

Each noisy statistic (a table's measure, its distinct cards and, where the merchant rules
apply, its merchant count and top-n merchant sum) is one vector query over the table's
cells. Its L1 sensitivity is what one bounded card-day can change in the whole vector. The
total epsilon is split evenly over the queries (basic composition); OpenDP's discrete
Laplace measurement calibrates each query's scale for its share (`make_laplace` over an
integer vector domain with the L1 distance, the scale found by `binary_search_param` and
checked with the measurement's privacy map) and gives the published 95 % error bound
(`discrete_laplacian_scale_to_accuracy`). For balances, a card-day lies in exactly one
band, so each band's sum is calibrated to its own top (parallel composition).

Noise is drawn by an exact discrete Laplace sampler (Canonne, Kamath and Steinke 2020:
rational arithmetic only, no floating point) from a deterministic random bit generator,
HMAC-SHA256 under a seed derived from the release key and a digest of the whole input.
So the same inputs and key give the same release (a re-run spends no new budget and cannot
be averaged), and any change of input draws fresh, independent noise everywhere, which is
what composition assumes when two releases of a day are compared. Without the key the
noise cannot be predicted or removed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import opendp.prelude as dp
from opendp.accuracy import discrete_laplacian_scale_to_accuracy

from reconciliation.analytics.tables import Key

dp.enable_features("contrib")

ALPHA = 0.05  # the published error bound holds with 95 % probability per cell
_SCALE_DENOMINATOR = 1000  # scales are used as exact fractions k/1000


@dataclass(frozen=True, slots=True)
class QueryBudget:
    """One noisy statistic as published in the data package."""

    table: str
    statistic: str
    epsilon: float
    sensitivity: int
    scale: float
    error95: int
    cells: str = "all"


def calibrate(sensitivity: int, epsilon: float) -> tuple[Fraction, float]:
    """The smallest discrete Laplace scale OpenDP accepts for (sensitivity, epsilon), as an
    exact fraction rounded up to 1/1000, and the epsilon OpenDP's privacy map gives it."""

    def make(scale: float) -> dp.Measurement:
        return dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
        )

    found = dp.binary_search_param(make, d_in=sensitivity, d_out=epsilon, T=float)
    scale = Fraction(math.ceil(found * _SCALE_DENOMINATOR), _SCALE_DENOMINATOR)
    measurement = make(float(scale))
    spent = float(measurement.map(sensitivity))  # type: ignore[no-untyped-call]  # opendp: no annotations
    if spent > epsilon * (1 + 1e-9):
        raise RuntimeError("OpenDP refused the calibrated scale")
    return scale, spent


def error95(scale: Fraction) -> int:
    """Half-width of the interval holding the noise with probability 1 - ALPHA."""
    accuracy = discrete_laplacian_scale_to_accuracy(float(scale), ALPHA)
    # OpenDP answers infinity for scales far below one step: such noise is almost always 0.
    return math.ceil(accuracy) if math.isfinite(accuracy) else 0


class NoiseSource:
    """Deterministic, keyed noise: one independent stream per (statistic, cell)."""

    def __init__(self, key: bytes, label: bytes) -> None:
        self._seed = hmac.new(key, b"jakartaone-analytics-dp-noise|" + label, "sha256").digest()

    def sample(self, table: str, statistic: str, cell: Key, scale: Fraction) -> int:
        name = repr((table, statistic, cell)).encode("utf-8")
        bits = _Bits(hmac.new(self._seed, name, hashlib.sha256).digest())
        return _discrete_laplace(bits, scale)


class _Bits:
    """HMAC-SHA256 in counter mode: an endless stream of uniform random integers."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._pool = 0
        self._have = 0

    def _bits(self, n: int) -> int:
        while self._have < n:
            block = hmac.new(self._seed, self._counter.to_bytes(8, "big"), "sha256").digest()
            self._counter += 1
            self._pool = (self._pool << 256) | int.from_bytes(block, "big")
            self._have += 256
        self._have -= n
        value = self._pool >> self._have
        self._pool &= (1 << self._have) - 1
        return value

    def below(self, n: int) -> int:
        """Uniform on 0..n-1 (rejection sampling: exact, no modulo bias)."""
        k = max(1, (n - 1).bit_length())
        while True:
            v = self._bits(k)
            if v < n:
                return v

    def bernoulli(self, p: Fraction) -> bool:
        return self.below(p.denominator) < p.numerator


def _bernoulli_exp(bits: _Bits, gamma: Fraction) -> bool:
    """Bernoulli(exp(-gamma)) for rational gamma >= 0, exactly."""
    while gamma > 1:
        if not _bernoulli_exp(bits, Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while bits.bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def _discrete_laplace(bits: _Bits, scale: Fraction) -> int:
    """A sample with P(x) proportional to exp(-|x| / scale), scale = t / s."""
    t, s = scale.numerator, scale.denominator
    while True:
        u = bits.below(t)
        if not _bernoulli_exp(bits, Fraction(u, t)):
            continue
        v = 0
        while _bernoulli_exp(bits, Fraction(1)):
            v += 1
        y = (u + t * v) // s
        negative = bits.below(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def samples(source: NoiseSource, scale: Fraction, n: int) -> Iterator[int]:
    """n independent draws (for tests and the docs' error tables)."""
    for i in range(n):
        yield source.sample("sample", "noise", (i,), scale)
