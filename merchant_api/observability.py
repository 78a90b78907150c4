"""Prometheus metrics and structured logs.

Metrics live in each process; under `jakartaone serve` with several workers the server sets
PROMETHEUS_MULTIPROC_DIR and /metrics adds up every worker's. Log lines are JSON objects,
one per request, with the request id; they never hold a secret, an API key or a card
serial (only the API key's public prefix).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "jakartaone_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "jakartaone_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
CERTIFICATES = Counter(
    "jakartaone_certificates_total", "Card certificates by outcome", ["outcome", "reason"]
)
COALESCED = Histogram(
    "jakartaone_coalesced_submissions",
    "Single card-transaction submissions per coalesced database transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
WEBHOOKS = Counter("jakartaone_webhook_deliveries_total", "Webhook delivery attempts", ["result"])
DATABASE_UNAVAILABLE = Counter(
    "jakartaone_database_unavailable_total", "Requests answered 503 because the database was down"
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_metrics() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"), default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the `merchant_api` loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("merchant_api")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
