"""The nightly job: reconcile one business day, settle it, report.

`run_nightly` is the whole job; `jakartaone nightly` only parses arguments and calls it.
The steps, in order (each one idempotent, so a second run of the same day changes nothing):
1. refuse a day that has not closed in Jakarta; record the run;
2. read the merchants' reports and the bank statements (bad input fails the run here,
   before anything is written);
3. extract the day into DuckDB (reconciliation.nightly.extract);
4. settle loads the cards' evidence decides (merchant_api's resolve_load);
5. settle every merchant and operator, write the payout instruction file (on PostgreSQL
   beside steps 3 and 4: settlement touches only payables and the settlement bank);
6. seal the ledger's journal and verify every ledger invariant;
7. the checks: records vs ledger, cards, gates, merchants' reports, bank statements,
   settlements vs ledger;
8. merge the findings into the breaks kept across nights;
9. with --export, the day's anonymized analytics release (reconciliation.export), its
   outcome recorded in the report (a refused release is reported, not fatal: the books
   were reconciled either way);
10. write the report (HTML and JSON) and finish the run with its exit code.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine

from card_reader.keys import BackOfficeKeys
from ledger import Ledger, run_read, run_write
from ledger import schema as ls
from ledger.journal import Block
from merchant_api import schema as api
from merchant_api.crypto import ApiSecrets
from merchant_api.services.loads import resolve_load
from merchant_api.wib import business_date, day_bounds_us, now_us
from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.errors import ReleaseError
from reconciliation.export import export_day
from reconciliation.nightly import cards, gates, merchants, records, settlement
from reconciliation.nightly.breaks import Changes, persist, unsettled_count
from reconciliation.nightly.extract import Scope, create_duck, extract
from reconciliation.nightly.findings import CheckResult, Finding
from reconciliation.nightly.proof import prove
from reconciliation.nightly.report import write_reports
from reconciliation.nightly.schema import recon_breaks, recon_runs
from reconciliation.nightly.statements import read_merchant_reports, read_statement
from reconciliation.nightly.taxonomy import UNSETTLED, BreakStatus, BreakType, ExitCode, Source


class NightlyError(RuntimeError):
    """The job cannot run: `code` says why (day_not_closed, keys_missing, ...)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


# DuckDB's cap: with the Python side it keeps a 10,000,000-transaction night under 2 GB
# (docs/reconciliation.md, benchmark).
DEFAULT_MEMORY_LIMIT = "768MB"


@dataclass(frozen=True, slots=True)
class NightlyConfig:
    """Constraints: shards divides 16 (1, 2, 4, 8 or 16); memory_limit like "1GB"."""

    day: dt.date
    out_dir: Path
    merchant_reports: Path | None = None
    bank_statements: tuple[Path, ...] = ()
    shards: int = 4
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int = 2
    progress: bool = True
    export_dir: Path | None = None
    full_verify: bool = False
    release_key: bytes | None = field(default=None, repr=False)


@dataclass(slots=True)
class NightlyResult:
    run_id: uuid.UUID
    exit_code: ExitCode
    phases: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Phases:
    """Times each step and shows progress on stderr."""

    def __init__(self, progress: Progress | None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        task = self.progress.add_task(name, total=total) if self.progress else None
        started = time.perf_counter()

        def tick(*_: object) -> None:
            if self.progress is not None and task is not None:
                self.progress.advance(task)

        try:
            yield tick
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)
            if self.progress is not None and task is not None:
                self.progress.update(task, completed=total or 1, total=total or 1)


def run_nightly(
    engine: Engine,
    ledger: Ledger,
    keys: BackOfficeKeys,
    secrets: ApiSecrets,
    config: NightlyConfig,
) -> NightlyResult:
    if 16 % config.shards:
        raise NightlyError("shards_invalid", "shards must divide 16")
    day = config.day.isoformat()
    if day >= business_date(now_us()):
        raise NightlyError("day_not_closed", f"{day} has not closed in Jakarta yet")
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4()
    run_write(
        engine,
        lambda conn: conn.execute(
            sa.insert(recon_runs).values(id=run_id, business_date=day, started_us=now_us())
        ),
    )
    try:
        result = _run(engine, ledger, keys, secrets, config, run_id)
    except BaseException as exc:
        _finish(engine, run_id, "failed", ExitCode.FAILED, {"error": str(exc)[:500]})
        raise
    return result


def _progress(config: NightlyConfig) -> Progress | None:
    if not config.progress:
        return None
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _run(
    engine: Engine,
    ledger: Ledger,
    keys: BackOfficeKeys,
    secrets: ApiSecrets,
    config: NightlyConfig,
    run_id: uuid.UUID,
) -> NightlyResult:
    day = config.day.isoformat()
    bounds = day_bounds_us(config.day)
    progress = _progress(config)
    phases = Phases(progress)
    if progress is not None:
        progress.start()
    try:
        with phases.step("read inputs"):
            reports = (
                read_merchant_reports(config.merchant_reports) if config.merchant_reports else []
            )
            entries = [e for path in config.bank_statements for e in read_statement(path)]
        with tempfile.TemporaryDirectory(prefix="jakartaone-nightly-") as spill:
            spill_dir = Path(spill)
            (spill_dir / "spill").mkdir()
            duck = create_duck(spill_dir, config.memory_limit, config.threads)
            try:
                results, summary = _reconcile(
                    engine,
                    ledger,
                    keys,
                    secrets,
                    config,
                    duck,
                    spill_dir,
                    reports,
                    entries,
                    phases,
                    bounds,
                )
            finally:
                duck.close()
        with phases.step("persist breaks"):
            changes = run_write(engine, lambda conn: persist(conn, run_id, day, results))
            open_breaks = run_read(engine, lambda conn: unsettled_count(conn, day))
        exit_code = ExitCode.BREAKS if open_breaks else ExitCode.AGREED
        summary.update(
            run_id=str(run_id),
            business_date=day,
            exit_code=int(exit_code),
            unsettled_breaks=open_breaks,
            changes=_changes(changes),
        )
        if config.export_dir is not None:
            with phases.step("analytics export"):
                summary["analytics"] = _export(engine, config)
        with phases.step("report"):
            report = _report_data(engine, day, summary, phases.seconds)
            write_reports(config.out_dir, day, report)
    finally:
        if progress is not None:
            progress.stop()
    status = "breaks" if exit_code is ExitCode.BREAKS else "agreed"
    summary["phases"] = dict(phases.seconds)
    _finish(engine, run_id, status, exit_code, summary)
    return NightlyResult(run_id, exit_code, dict(phases.seconds), summary)


def _export(engine: Engine, config: NightlyConfig) -> dict[str, Any]:
    assert config.export_dir is not None
    if config.release_key is None:
        return {"status": "refused", "code": "key_missing"}
    release_config = ReleaseConfig(duckdb_memory_limit=config.memory_limit)
    try:
        release = export_day(
            engine, config.day, config.export_dir, config.release_key, release_config
        )
    except ReleaseError as exc:
        return {"status": "refused", "code": str(exc.code), "detail": exc.message}
    return {"status": "released", "out": str(release.out_dir), "sha256": release.sha256}


def _reconcile(
    engine: Engine,
    ledger: Ledger,
    keys: BackOfficeKeys,
    secrets: ApiSecrets,
    config: NightlyConfig,
    duck: Any,
    spill_dir: Path,
    reports: list[Any],
    entries: list[Any],
    phases: Phases,
    bounds: tuple[int, int],
) -> tuple[list[CheckResult], dict[str, Any]]:
    day = config.day.isoformat()
    summary: dict[str, Any] = {}
    scope = run_read(engine, _break_scope)
    # Settling touches only the owners' payables and the settlement bank, so on PostgreSQL
    # it runs beside the extraction and the load resolutions (which touch purses and the
    # float); SQLite has one writer, so there it runs after them. The ledger's proof reads
    # the whole journal in one snapshot and shares nothing with the DuckDB checks, so it
    # runs beside them, once the night's last transfer is posted.
    concurrent = engine.dialect.name == "postgresql"
    with ThreadPoolExecutor(max_workers=1) as background:
        settled = background.submit(_settle, engine, ledger, config, phases) if concurrent else None
        with phases.step("extract", total=7) as tick:
            summary["extracted"] = extract(
                engine, duck, config.day, bounds, scope, spill_dir, config.shards, tick
            )
        with phases.step("pending loads") as tick:
            decisions = cards.decide_loads(duck)
            for decision in decisions:
                resolve_load(engine, ledger, uuid.UUID(decision.load_id), decision.post)
                tick()
            _apply_load_decisions(duck, decisions)
            summary["loads_settled_by_evidence"] = len(decisions)
        summary.update(settled.result() if settled else _settle(engine, ledger, config, phases))
        # After the last transfer of the night is posted: seal, then prove the ledger.
        ledger_future = background.submit(
            _timed, phases, "seal and verify ledger", engine, ledger, bounds, config.full_verify
        )
        with phases.step("records vs ledger"):
            records_result = records.check_records(
                duck, day, bounds, lambda ids: _recorded_elsewhere(engine, ids)
            )
        with phases.step("cards") as tick:
            card_result = cards.check_chains(duck, config.shards, tick)
            signatures = cards.check_signatures(duck, day, keys, secrets, tick, config.shards)
            for extra in (
                signatures,
                cards.check_shadow_balances(duck),
                cards.check_pending_loads(duck),
                cards.check_quarantine(duck),
            ):
                card_result.merge(extra)
        with phases.step("gates"):
            gate_result = gates.check_batches(duck)
            gate_result.merge(gates.check_journeys(duck))
        with phases.step("merchant reports"):
            report_result = merchants.check_reports(duck, day, reports)
            summary["merchant_report_rows"] = {
                "matched_day": sum(r.business_date == day for r in reports),
                "other_days_ignored": sum(r.business_date != day for r in reports),
            }
        with phases.step("bank statements", total=len(entries) or None) as tick:
            bank_result = (
                settlement.match_statements(engine, day, entries, tick)
                if entries
                else CheckResult(Source.BANK_STATEMENT)
            )
        settlement_result = settlement.check_settlements(engine, day)
        with phases.step("wait for the ledger proof"):
            ledger_result, summary["seal"] = ledger_future.result()
        results = [
            ledger_result,
            records_result,
            card_result,
            gate_result,
            report_result,
            bank_result,
            settlement_result,
        ]
        return results, summary


def _settle(
    engine: Engine, ledger: Ledger, config: NightlyConfig, phases: Phases
) -> dict[str, Any]:
    """Settle every owner for the day and write the payout instruction file."""
    day = config.day.isoformat()
    with phases.step("settle") as tick:
        lines = settlement.settle_all(engine, ledger, config.day, tick)
        payout_total = settlement.write_payout_file(
            engine, day, config.out_dir / f"payouts-{day}.csv"
        )
    return {"settlement": [_line(line) for line in lines], "payout_total": payout_total}


def _timed(
    phases: Phases,
    name: str,
    engine: Engine,
    ledger: Ledger,
    bounds: tuple[int, int],
    full_verify: bool,
) -> tuple[CheckResult, dict[str, Any]]:
    with phases.step(name):
        return _ledger_checks(engine, ledger, bounds, full_verify)


def _line(line: Any) -> dict[str, Any]:
    return {name: getattr(line, name) for name in line.__slots__}


def _break_scope(conn: Any) -> Scope:
    """Cards and terminals with unsettled or resolved breaks: re-examined from their first
    record, so late data can auto-resolve the one and a later run can close the other."""
    watched = [s.value for s in (*UNSETTLED, BreakStatus.RESOLVED)]
    rows = conn.execute(
        sa.select(
            recon_breaks.c.card_id,
            recon_breaks.c.terminal_code,
            recon_breaks.c.source,
            recon_breaks.c.break_type,
            recon_breaks.c.reference,
        )
        .where(recon_breaks.c.status.in_(watched))
        .where(recon_breaks.c.source.in_([Source.CARDS.value, Source.GATES.value]))
    ).all()
    return Scope(
        frozenset(r.card_id.hex for r in rows if r.card_id is not None),
        frozenset(
            r.terminal_code
            for r in rows
            if r.terminal_code is not None and r.source == Source.GATES.value
        ),
        frozenset(
            r.reference
            for r in rows
            if r.break_type == BreakType.UNRESOLVED_LOAD.value and r.reference is not None
        ),
    )


def _apply_load_decisions(duck: Any, decisions: Sequence[cards.LoadDecision]) -> None:
    """Tonight's extract, as the load resolutions just committed left the ledger."""
    for d in decisions:
        if d.post:
            duck.execute(
                "UPDATE cards SET credits_posted = credits_posted + l.amount,"
                " credits_pending = credits_pending - l.amount FROM loads l"
                " WHERE l.id = $id AND cards.card_id = l.card_id",
                {"id": d.load_id},
            )
        else:
            duck.execute(
                "UPDATE cards SET credits_pending = credits_pending - l.amount"
                " FROM loads l WHERE l.id = $id AND cards.card_id = l.card_id",
                {"id": d.load_id},
            )
        duck.execute(
            "UPDATE loads SET status = $status WHERE id = $id",
            {"id": d.load_id, "status": "posted" if d.post else "voided"},
        )


def _ledger_checks(
    engine: Engine, ledger: Ledger, bounds: tuple[int, int], full_verify: bool
) -> tuple[CheckResult, dict[str, Any]]:
    """Seal what is committed, then prove every ledger invariant and that the day is sealed.

    A writer's transaction left open on PostgreSQL postpones sealing (ledger.journal); the
    day is then reported DAY_NOT_SEALED, and the next night's seal covers it.

    Re-hashing every transfer ever made is the costly part of the proof and grows without
    end, so a night re-hashes only what was sealed after the last night whose proof passed
    (ledger.verify's incremental form; every block root and the chain are still checked).
    `full_verify` (`--full-verify`, e.g. weekly, and `jakartaone ledger verify`) re-hashes
    everything."""
    result = CheckResult(Source.LEDGER)
    result.examined.add("ledger")
    try:
        ledger.seal()
    except TimeoutError as exc:
        result.examined.discard("ledger")  # a postponed seal proves nothing either way
        postponed = str(exc)
    else:
        postponed = ""
    head: Block | None = ledger.head()
    mark = 0 if full_verify else run_read(engine, _verified_through)
    report = prove(engine, mark)
    for violation in report.violations:
        result.findings.append(
            Finding(
                BreakType.LEDGER_INVARIANT_BROKEN,
                Source.LEDGER,
                "ledger",
                str(violation)[:256],
                str(violation)[:512],
            )
        )
    last_of_day = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(sa.func.max(ls.transfers.c.seq)).where(
                ls.transfers.c.timestamp_us < bounds[1]
            )
        ).scalar(),
    )
    sealed_through = head.last_seq if head else 0
    if last_of_day is not None and last_of_day > sealed_through:
        result.findings.append(
            Finding(
                BreakType.DAY_NOT_SEALED,
                Source.LEDGER,
                "ledger",
                f"seal:{bounds[0]}",
                f"transfers up to seq {last_of_day}, sealed through {sealed_through}"
                + (f" ({postponed})" if postponed else ""),
            )
        )
    seal = {
        "block_no": head.block_no if head else None,
        "last_seq": sealed_through,
        "head_hash": head.block_hash.hex() if head else None,
        "transfers": report.transfers,
        "unsealed": report.unsealed,
        "rehashed_after_seq": mark,
        "verified": report.ok,
    }
    return result, seal


def _verified_through(conn: sa.Connection) -> int:
    """The seal's last seq of the latest night whose ledger proof passed, or 0."""
    rows = conn.execute(
        sa.select(recon_runs.c.summary)
        .where(recon_runs.c.status.in_(("agreed", "breaks")))
        .order_by(recon_runs.c.seq.desc())
        .limit(30)
    ).scalars()
    for text in rows:
        try:
            seal = json.loads(text).get("seal") or {}
        except ValueError:
            continue
        if seal.get("verified") and isinstance(seal.get("last_seq"), int):
            return int(seal["last_seq"])
    return 0


def _recorded_elsewhere(engine: Engine, transfer_ids: list[str]) -> set[str]:
    ct = api.card_transactions
    ids = [uuid.UUID(t) for t in transfer_ids]
    rows = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(ct.c.transfer_id).where(ct.c.transfer_id.in_(ids))
        ).all(),
    )
    return {r.transfer_id.hex for r in rows}


def _changes(changes: Changes) -> dict[str, int]:
    return {
        "new": changes.new,
        "reopened": changes.reopened,
        "auto_resolved": changes.auto_resolved,
        "closed": changes.closed,
    }


def _report_data(
    engine: Engine, day: str, summary: dict[str, Any], phases: dict[str, float]
) -> dict[str, Any]:
    b = recon_breaks
    rows = run_read(
        engine,
        lambda conn: conn.execute(
            sa.select(b)
            .where(sa.or_(b.c.status.in_([s.value for s in UNSETTLED]), b.c.last_seen_date == day))
            .order_by(b.c.first_seen_date, b.c.break_type, b.c.seq)
        ).all(),
    )
    today = dt.date.fromisoformat(day)
    breaks = [
        {
            "id": str(r.id),
            "type": r.break_type,
            "source": r.source,
            "status": r.status,
            "first_seen": r.first_seen_date,
            "last_seen": r.last_seen_date,
            "age_days": (today - dt.date.fromisoformat(r.first_seen_date)).days,
            "card_id": str(r.card_id) if r.card_id else None,
            "merchant_id": str(r.merchant_id) if r.merchant_id else None,
            "terminal": r.terminal_code,
            "reference": r.reference,
            "ledger_amount": r.ledger_amount,
            "external_amount": r.external_amount,
            "detail": r.detail,
            "resolution_transfer_id": str(r.resolution_transfer_id)
            if r.resolution_transfer_id
            else None,
        }
        for r in rows
    ]
    return {**summary, "phases": dict(phases), "breaks": breaks}


def _finish(
    engine: Engine, run_id: uuid.UUID, status: str, code: ExitCode, summary: dict[str, Any]
) -> None:
    run_write(
        engine,
        lambda conn: conn.execute(
            sa.update(recon_runs)
            .where(recon_runs.c.id == run_id)
            .values(
                status=status,
                exit_code=int(code),
                finished_us=now_us(),
                summary=json.dumps(summary, default=str)[:1_000_000],
                sealed_block_no=(summary.get("seal") or {}).get("block_no"),
                sealed_head_hash=(summary.get("seal") or {}).get("head_hash"),
            )
        ),
    )
