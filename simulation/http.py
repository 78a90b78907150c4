"""The demo's only way to the back office: HTTP to the merchant API (httpx).

Every POST carries an Idempotency-Key derived from what it does, so a retry (after a
timeout, a 503, a 409 in flight) has exactly one effect, as the API guarantees.
"""

from __future__ import annotations

import functools
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUSES = frozenset({409, 429, 502, 503, 504})
ATTEMPTS = 8
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ApiRefusedError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"{method} {path}: {status} {code} {detail}")


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: httpx makes one per client otherwise (about 50 ms
    each, and the demo makes a client for every shop), though the API it talks to is on
    plain HTTP on 127.0.0.1."""
    return ssl.create_default_context()


class Api:
    """One API key's view of the API; safe to share between threads."""

    def __init__(self, base_url: str, key: str, pool: int = 32) -> None:
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._http = httpx.Client(
            base_url=base_url,
            timeout=120,
            limits=limits,
            headers={"Authorization": f"Bearer {key}"},
            verify=_tls(),
        )
        self.requests = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Api({self._http.base_url})"

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(ATTEMPTS):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            with self._lock:
                self.requests += 1
            retry = response.status_code in RETRY_STATUSES and (
                response.status_code != 409 or _code(response) == "idempotency_request_in_flight"
            )
            if not retry or attempt == ATTEMPTS - 1:
                return response
            time.sleep(float(response.headers.get("Retry-After", "0.2") or 0.2) * 0.5)
        raise AssertionError("unreachable")

    def post(self, path: str, body: Any, key: str) -> Any:
        """POST with `key` (made of what the request does) as its Idempotency-Key."""
        headers = {"Idempotency-Key": _KEY_UNSAFE.sub("-", key)}
        response = self._send("POST", path, json=body, headers=headers)
        return _answer("POST", path, response)

    def get(self, path: str, **params: Any) -> Any:
        return _answer("GET", path, self._send("GET", path, params=params))

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every object of a list, newest first, page by page."""
        after: str | None = None
        while True:
            query = {"limit": 100, **params}
            if after is not None:
                query["starting_after"] = after
            page = self.get(path, **query)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            after = page["data"][-1]["id"]


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return ""


def _answer(method: str, path: str, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise ApiRefusedError(
            method, path, response.status_code, _code(response), response.text[:300]
        )
    return response.json()


def parallel(
    work: Callable[[T], R],
    items: Iterable[T],
    threads: int,
    on_done: Callable[[int], None] | None = None,
) -> list[R]:
    """`work` over `items` on `threads` threads, results in order; `on_done(n)` as they end."""
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        results = []
        for result in pool.map(work, items):
            results.append(result)
            if on_done is not None:
                on_done(1)
        return results
    except BaseException:
        # Ctrl-C or a failure: what has not started yet never will.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
