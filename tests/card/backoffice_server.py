"""A tiny real HTTP back office for the gate tests: the server side of the contract in
docs/card-protocol.md ("Gate upload", "Hotlist"), for these tests only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from card_reader.certificate import Certificate, CertificateFormatError, verify_certificate
from card_reader.keys import BackOfficeKeys

API_KEY = "test-gate-key"


@dataclass
class BackOfficeState:
    keys: BackOfficeKeys
    certificates: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    answers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # batch ids, in arrival order
    # Failure injection, consumed one per request.
    fail_next: list[str] = field(default_factory=list)  # "503", "422", "401", "drop_after"
    hotlist_versions: list[tuple[set[str], set[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        items = []
        for raw in body["certificates"]:
            try:
                cert = Certificate.from_json(raw)
            except CertificateFormatError as error:
                items.append(
                    {
                        "terminal_seq": raw.get("terminal_seq", 0),
                        "outcome": "quarantined",
                        "reason": error.reason.value,
                    }
                )
                continue
            key = (cert.card_serial, cert.counter)
            if not verify_certificate(cert, self.keys):
                outcome, reason = "quarantined", "mac_invalid"
            elif key in self.certificates:
                same = self.certificates[key] == cert.to_bytes()
                outcome, reason = (
                    ("duplicate", None) if same else ("quarantined", "conflicting_duplicate")
                )
            else:
                self.certificates[key] = cert.to_bytes()
                outcome, reason = "posted", None
            items.append({"terminal_seq": cert.terminal_seq, "outcome": outcome, "reason": reason})
        return {"batch_id": body["batch_id"], "items": items}

    def hotlist(self, since: int) -> dict[str, Any]:
        version = len(self.hotlist_versions)
        if since == 0 or since > version:
            blocked: set[str] = set()
            for added, removed in self.hotlist_versions:
                blocked = (blocked | added) - removed
            return {"version": version, "blocked": sorted(blocked), "unblocked": [], "full": True}
        added_all: set[str] = set()
        removed_all: set[str] = set()
        for added, removed in self.hotlist_versions[since:]:
            added_all = (added_all | added) - removed
            removed_all = (removed_all | removed) - added
        return {
            "version": version,
            "blocked": sorted(added_all),
            "unblocked": sorted(removed_all),
            "full": False,
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: dict[str, Any], content_type: str = "application/json"
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _problem(self, status: int, code: str) -> None:
        self._send(
            status,
            {"type": "about:blank", "title": code, "status": status, "code": code},
            "application/problem+json",
        )

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._problem(401, "unauthorized")
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorized():
            return
        url = urlparse(self.path)
        if url.path != "/v1/hotlist":
            self._problem(404, "not_found")
            return
        since = int(parse_qs(url.query).get("since_version", ["0"])[0])
        with self.server.state.lock:
            self._send(200, self.server.state.hotlist(since))

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorized():
            return
        if self.path != "/v1/gate-batches":
            self._problem(404, "not_found")
            return
        batch_id = self.headers.get("Idempotency-Key")
        with state.lock:
            state.requests.append(str(batch_id))
            failure = state.fail_next.pop(0) if state.fail_next else None
            if failure in ("503", "422", "401"):
                self._problem(
                    int(failure),
                    {"503": "unavailable", "422": "batch_malformed", "401": "unauthorized"}[
                        failure
                    ],
                )
                return
            if batch_id != body.get("batch_id"):
                self._problem(422, "idempotency_key_mismatch")
                return
            fingerprint = json.dumps(body, sort_keys=True)
            if batch_id in state.answers:
                previous, answer = state.answers[batch_id]
                if previous != fingerprint:
                    self._problem(409, "idempotency_key_reused")
                    return
                self._send(200, answer)
                return
            answer = state.post_batch(body)
            state.answers[batch_id] = (fingerprint, answer)
        if failure == "drop_after":
            # Processed and committed, but the answer never reaches the gate.
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send(201, answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: BackOfficeState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def running_back_office(keys: BackOfficeKeys) -> Iterator[tuple[str, BackOfficeState]]:
    state = BackOfficeState(keys)
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
