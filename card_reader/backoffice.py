"""The gate's HTTP client for the back office: batch upload and hotlist fetch.

The contract is docs/card-protocol.md ("Gate upload", "Hotlist"). Standard library only
(urllib), so a gate needs nothing beyond this package. The API key is sent only in the
Authorization header and never logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from card_reader.hotlist import HotlistError, HotlistUpdate
from card_reader.journal import Batch

OUTCOMES = ("posted", "duplicate", "quarantined")
# 4xx answers that say "not now" rather than "never": retried with backoff.
RETRYABLE_CLIENT_STATUSES = frozenset({401, 403, 408, 429})


class BackOfficeError(Exception):
    """A request that did not get a usable answer.

    retryable: try the same request again later (network, 5xx, 401/403/408/429, an answer
    that does not fit the contract); otherwise the back office refused it for good and
    `code` is its problem code (or `http_<status>` when it gave none).
    """

    def __init__(self, code: str, *, retryable: bool, status: int | None = None) -> None:
        self.code = code
        self.retryable = retryable
        self.status = status
        super().__init__(f"{code} (status {status})" if status else code)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    terminal_seq: int
    outcome: str
    reason: str | None


class BackOfficeClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BackOfficeClient({self.base_url!r})"

    def _request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        url = self.base_url + path
        if not url.startswith(("http://", "https://")):
            raise BackOfficeError("base_url_invalid", retryable=False)
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only, checked above
        request.add_header("Authorization", f"Bearer {self._api_key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise self._refusal(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise BackOfficeError(
                f"network_error: {type(error).__name__}", retryable=True
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise BackOfficeError("response_not_json", retryable=True) from None

    @staticmethod
    def _refusal(error: urllib.error.HTTPError) -> BackOfficeError:
        status = error.code
        code = f"http_{status}"
        try:
            problem = json.loads(error.read())
            if isinstance(problem, dict) and isinstance(problem.get("code"), str):
                code = problem["code"]
        except (ValueError, OSError):
            pass
        retryable = status >= 500 or status in RETRYABLE_CLIENT_STATUSES
        return BackOfficeError(code, retryable=retryable, status=status)

    def post_batch(self, batch: Batch) -> list[ItemOutcome]:
        answer = self._request(
            "POST", "/v1/gate-batches", batch.to_json(), {"Idempotency-Key": batch.batch_id}
        )
        return self._items(answer, batch)

    @staticmethod
    def _items(answer: Any, batch: Batch) -> list[ItemOutcome]:
        # An answer that does not fit the contract is not trusted as an acknowledgement.
        if not isinstance(answer, dict) or answer.get("batch_id") != batch.batch_id:
            raise BackOfficeError("response_batch_id_mismatch", retryable=True)
        items = answer.get("items")
        if not isinstance(items, list) or len(items) != len(batch.certificates):
            raise BackOfficeError("response_items_mismatch", retryable=True)
        outcomes = []
        for item, cert in zip(items, batch.certificates, strict=True):
            if (
                not isinstance(item, dict)
                or item.get("terminal_seq") != cert.terminal_seq
                or item.get("outcome") not in OUTCOMES
                or not (item.get("reason") is None or isinstance(item.get("reason"), str))
            ):
                raise BackOfficeError("response_item_invalid", retryable=True)
            outcomes.append(ItemOutcome(cert.terminal_seq, item["outcome"], item.get("reason")))
        return outcomes

    def fetch_hotlist(self, since_version: int) -> HotlistUpdate:
        query = urllib.parse.urlencode({"since_version": since_version})
        answer = self._request("GET", f"/v1/hotlist?{query}")
        try:
            return HotlistUpdate.from_json(answer)
        except HotlistError as error:
            raise BackOfficeError(error.code, retryable=True) from None
