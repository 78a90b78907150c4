"""An independent webhook receiver for tests: a real HTTP server on 127.0.0.1 that checks
each delivery's signature its own way (from the documented scheme, not the API's code)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 300


def signature_ok(header: str, body: bytes, secret: str, now: float) -> bool:
    """`t=<ts>,v1=<hex>[,v1=<hex>]`: some v1 = HMAC-SHA256(secret, "<t>.<body>"), and t
    within the tolerance window."""
    items = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in items if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs(now - int(stamps[0])) > TOLERANCE_S:
        return False
    expected = hmac.new(
        secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in items if key == "v1")


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    attempts: int = 0

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts += 1
                header = self.headers.get("JakartaOne-Signature", "")
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                elif any(signature_ok(header, body, s, time.time()) for s in receiver.secrets):
                    receiver.received.append(
                        {
                            "event_id": self.headers.get("JakartaOne-Event-Id"),
                            "signature": header,
                            "raw": body,
                            "body": json.loads(body),
                        }
                    )
                    self.send_response(204)
                else:
                    receiver.rejected += 1
                    self.send_response(400)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
