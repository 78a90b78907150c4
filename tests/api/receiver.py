"""An independent webhook receiver for tests: a real HTTP server on 127.0.0.1 that checks
each delivery's signature its own way (from the documented scheme, not the API's code).
It can answer every delivery with a redirect, and serve TLS with a certificate made for a
name (`certificate_for`)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    redirect_to: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    attempts: int = 0

    def start(self, tls: tuple[Path, Path] | None = None) -> str:
        """Listen on 127.0.0.1 (TLS with `tls`, a certificate and its key); the URL."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts += 1
                header = self.headers.get("JakartaOne-Signature", "")
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                elif receiver.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect_to)
                elif any(signature_ok(header, body, s, time.time()) for s in receiver.secrets):
                    receiver.received.append(
                        {
                            "event_id": self.headers.get("JakartaOne-Event-Id"),
                            "host": self.headers.get("Host"),
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
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hooks"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def certificate_for(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate valid for the DNS name `name` only (no IP address), and
    its key: a client that checks it against any other name, 127.0.0.1 included, fails."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "receiver.pem", directory / "receiver.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path
