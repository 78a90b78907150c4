"""Single card-transaction submissions, coalesced: the requests that arrive together are
decided and committed in one database transaction, each still answered on its own.

Terminals submit one certificate per request, hundreds a second. Each request in its own
transaction would pay a full round of locks, statements and a commit; here one thread
per process takes every submission waiting in its queue (up to `MAX_BATCH`) and runs them
through `transactions.submit_many` together, the way a database groups commits.

A transaction costs about ten statements whatever its size, so a group of sixteen costs
far less per request than sixteen groups of one. Requests that arrive together (the
answers of one group go out together, and their terminals' next requests come back
together) reach the queue one after another, each after its own trip through the request
pipeline. So the thread lingers: after the first submission it keeps taking more while
they keep coming, until none has come for `QUIET_S` or `LINGER_S` has passed since the
first. A lone request waits `QUIET_S` at most; a burst goes in one transaction.

Guarantees (the same as one at a time):
- Every request is answered only after the transaction holding it has committed. Its
  Idempotency-Key is claimed in that same transaction and its answer stored there too, so
  a request costs one commit, and a retry replays the answer (`transactions.submit_many`).
- Each certificate is decided on its own (posted, duplicate, quarantined); the requests
  share only the transaction. If that transaction fails, every request in it fails with
  the same error (nothing of any of them was written) and each retry converges.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from merchant_api.auth import Principal
from merchant_api.context import ApiContext
from merchant_api.idempotency import ClaimRequest
from merchant_api.observability import COALESCED
from merchant_api.services import transactions
from merchant_api.services.certificates import Submitted

MAX_BATCH = 128
# A gap this long ends the group (a request's trip through the pipeline is well under it).
QUIET_S = 0.001
# The longest the first submission of a group waits for others to join it.
LINGER_S = 0.004


@dataclass
class Job:
    """One submission waiting for its answer (or the error its transaction failed with)."""

    principal: Principal
    item: Submitted
    claim: ClaimRequest | None  # its Idempotency-Key, claimed in the transaction
    answer: transactions.Answer | None = None
    error: BaseException | None = None
    finished: Callable[[], object] | None = None  # wakes the waiting request


class Coalescer:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, job: Job) -> transactions.Answer:
        """Queue `job` and wait for its answer without holding a thread: the request
        waits on the event loop, and the coalescer's thread wakes it."""
        self._ensure_running()
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        job.finished = lambda: loop.call_soon_threadsafe(_wake, woken)
        self._queue.put(job)
        await woken
        if job.error is not None:
            raise job.error
        assert job.answer is not None
        return job.answer

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="jakartaone-coalescer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.monotonic() + LINGER_S
            while len(jobs) < MAX_BATCH:
                wait = min(QUIET_S, deadline - time.monotonic())
                try:
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                jobs.append(more)
            self._process(jobs)

    def _process(self, jobs: list[Job]) -> None:
        COALESCED.observe(len(jobs))
        try:
            answers = transactions.submit_many(
                self.ctx, [(job.principal, job.item, job.claim) for job in jobs]
            )
            for job, answer in zip(jobs, answers, strict=True):
                job.answer = answer
        except BaseException as exc:
            for job in jobs:
                job.error = exc
        finally:
            for job in jobs:
                if job.finished is not None:
                    job.finished()


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # a request whose client went away was cancelled meanwhile
        woken.set_result(None)
