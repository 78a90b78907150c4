"""The API key cache: a looked-up key is trusted for the cache's TTL and never longer, and
halfway through one request at a time refreshes it while the others go on with the
record, so that requests in flight never wait on lookups together."""

from __future__ import annotations

import threading
import uuid

from merchant_api.auth import KeyCache, Scope, _KeyRecord

TTL = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(scope: Scope = Scope.MERCHANT) -> _KeyRecord:
    return _KeyRecord(uuid.uuid4(), b"h" * 32, scope, uuid.uuid4(), None, None)


def test_a_key_is_looked_up_first_and_then_trusted_until_its_refresh_is_due() -> None:
    clock = Clock()
    cache = KeyCache(TTL, clock)
    assert cache.claim_lookup("jo_a")
    assert cache.get("jo_a") == (False, None)
    first = record()
    cache.put("jo_a", first)
    clock.now += TTL / 2 - 0.01
    assert not cache.claim_lookup("jo_a")
    assert cache.get("jo_a") == (True, first)


def test_once_due_exactly_one_caller_refreshes_while_the_others_use_the_record() -> None:
    clock = Clock()
    cache = KeyCache(TTL, clock)
    first = record()
    cache.put("jo_a", first)
    clock.now += TTL / 2
    claims = [cache.claim_lookup("jo_a") for _ in range(16)]
    assert claims == [True] + [False] * 15
    assert cache.get("jo_a") == (True, first)
    refreshed = record(Scope.ANALYST)
    cache.put("jo_a", refreshed)
    assert cache.get("jo_a") == (True, refreshed)
    assert not cache.claim_lookup("jo_a")  # trusted afresh for another half


def test_claims_race_to_one_winner_across_threads() -> None:
    clock = Clock()
    cache = KeyCache(TTL, clock)
    cache.put("jo_a", record())
    clock.now += TTL * 0.75
    start = threading.Barrier(8)
    won: list[bool] = []

    def claim() -> None:
        start.wait()
        won.append(cache.claim_lookup("jo_a"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_a_failed_refresh_lets_the_next_request_try_again() -> None:
    clock = Clock()
    cache = KeyCache(TTL, clock)
    cache.put("jo_a", record())
    clock.now += TTL / 2
    assert cache.claim_lookup("jo_a")
    assert not cache.claim_lookup("jo_a")
    cache.release("jo_a")
    assert cache.claim_lookup("jo_a")


def test_a_record_is_never_trusted_past_its_ttl_even_while_a_refresh_is_claimed() -> None:
    """A revocation on another process takes effect within the TTL: a refresh that has
    not come back by then does not extend the old record's trust."""
    clock = Clock()
    cache = KeyCache(TTL, clock)
    cache.put("jo_a", record())
    clock.now += TTL / 2
    assert cache.claim_lookup("jo_a")
    clock.now += TTL / 2 + 0.01
    assert cache.get("jo_a") == (False, None)
    assert cache.claim_lookup("jo_a") and cache.claim_lookup("jo_a")


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(0)
    cache.put("jo_a", record())
    assert cache.get("jo_a") == (False, None)
    assert cache.claim_lookup("jo_a")
