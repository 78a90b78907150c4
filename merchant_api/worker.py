"""Background work in each server process: webhook delivery and housekeeping.

One thread per process. Deliveries are leased in the database before they are sent, so
any number of processes can run this loop at once without sending an attempt twice.
"""

from __future__ import annotations

import logging
import threading
import time

from merchant_api import idempotency
from merchant_api.context import ApiContext
from merchant_api.services.webhooks import deliver_due, delivery_client

log = logging.getLogger("merchant_api.worker")

SWEEP_EVERY_S = 3600.0
IDLE_POLL_S = 0.5
FAILURE_PAUSE_S = 5.0


class BackgroundWorker:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jakartaone-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        last_sweep = 0.0
        with delivery_client(self.ctx) as client:
            while not self._stop.is_set():
                busy = False
                pause = IDLE_POLL_S
                try:
                    busy = deliver_due(self.ctx, client) > 0
                    if time.monotonic() - last_sweep > SWEEP_EVERY_S:
                        idempotency.sweep(self.ctx.engine, self.ctx.limits.idempotency_retention_s)
                        last_sweep = time.monotonic()
                except Exception as exc:
                    # The database may be down for a while: keep trying, without flooding
                    # the log (the deliveries wait in the outbox).
                    log.warning("background work failed: %s; retrying", type(exc).__name__)
                    pause = FAILURE_PAUSE_S
                if not busy:
                    self._stop.wait(pause)
