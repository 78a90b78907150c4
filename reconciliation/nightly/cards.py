"""Card checks, from the certificates the cards signed (DuckDB, one card shard at a time).

Each card in scope is examined along its chain of certificates in counter order, from the
anchor (the certificate just below tonight's floor) up. What each break proves:
- COUNTER_GAP: counters between two certificates are missing (certificates not uploaded
  yet, or lost): value the card spent that the ledger does not know. A card whose chain
  starts above counter 1 with no anchor has a gap from 1.
- BALANCE_CHAIN_BROKEN: two consecutive certificates disagree: the later one's balance is
  not the earlier one's minus its debit (plus its credit). The card's purse was tampered
  with, or a clone spent from a copied state.
- COUNTER_REGRESSION: a higher counter carries an earlier card time than a lower one by
  more than the clock skew a terminal may have: two chips are spending as one card.
- DUPLICATE_COUNTER: the API was sent two different certificates for one (card, counter)
  (quarantined as `conflicting_duplicate`): a cloned card. The database's unique
  constraint keeps the accepted records themselves free of duplicates.
- SIGNATURE_INVALID: a certificate whose MAC does not verify under the back office's
  certificate key: quarantined by the API as `mac_invalid`, or an accepted record that no
  longer verifies (edited after it was recorded).
- SHADOW_BALANCE_MISMATCH: the ledger's shadow purse (posted balance) differs from the
  balance the card itself last reported, on a card whose chain is complete, with no pending
  load and not replaced.
- UNRESOLVED_LOAD: a load still pending after the card's evidence was weighed
  (`decide_loads`): the card has not shown whether it took the value.
- QUARANTINED_INPUT: any other certificate the API quarantined and nobody has resolved.
"""

from __future__ import annotations

import contextlib
import json
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from card_reader.certificate import (
    _FIXED_HEAD,
    CERTIFICATE_VERSION,
    Certificate,
    CertificateFormatError,
    Journey,
    TransactionKind,
)
from card_reader.keys import BackOfficeKeys
from merchant_api.crypto import ApiSecrets
from reconciliation.nightly.findings import CheckResult, Finding, card_subject
from reconciliation.nightly.taxonomy import BreakType, Source

SERIAL_PURPOSE = "card-serial"  # merchant_api.services.cards seals serials under this

CLOCK_SKEW_US = 600 * 1_000_000  # a terminal's clock may be off by up to 10 minutes
QUARANTINE_TYPES = {
    "conflicting_duplicate": BreakType.DUPLICATE_COUNTER,
    "mac_invalid": BreakType.SIGNATURE_INVALID,
}

# A card's first row below its floor is the anchor, the certificate tonight's chain continues
# from: an earlier night checked the chain up to it, so no gap is counted before it. A first
# row at or above the floor means the card has no earlier certificate: a gap from 1.
_NOT_THE_ANCHOR = "(prev_counter IS NOT NULL OR card_counter >= floor)"
_CHAIN = """
SELECT card_id, card_counter, kind, amount, balance_after, card_time_us, floor,
       lag(card_counter) OVER w AS prev_counter,
       lag(balance_after) OVER w AS prev_balance,
       max(card_time_us) OVER (PARTITION BY card_id ORDER BY card_counter
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS latest_before,
       row_number() OVER w AS position
FROM tx WHERE shard = $shard
WINDOW w AS (PARTITION BY card_id ORDER BY card_counter)
"""


def check_chains(
    duck: duckdb.DuckDBPyConnection, shards: int, tick: Callable[[], None]
) -> CheckResult:
    result = CheckResult(Source.CARDS)
    for shard in range(shards):
        _chain_shard(duck, shard, result)
        tick()
    return result


def _chain_shard(duck: duckdb.DuckDBPyConnection, shard: int, result: CheckResult) -> None:
    params = {"shard": shard}
    for (card_id,) in duck.execute(
        "SELECT DISTINCT card_id FROM tx WHERE shard = $shard", params
    ).fetchall():
        result.examined.add(card_subject(card_id))
    rows = duck.execute(
        f"""
        WITH c AS ({_CHAIN})
        SELECT 'gap', card_id, coalesce(prev_counter, 0) + 1, card_counter - 1, 0, 0
          FROM c WHERE card_counter > coalesce(prev_counter, 0) + 1 AND {_NOT_THE_ANCHOR}
        UNION ALL
        SELECT 'chain', card_id, card_counter, card_counter,
               prev_balance + CASE kind WHEN 'credit' THEN amount ELSE -amount END,
               balance_after
          FROM c WHERE card_counter = prev_counter + 1
           AND balance_after <> prev_balance + CASE kind WHEN 'credit' THEN amount ELSE -amount END
        UNION ALL
        SELECT 'regression', card_id, card_counter, card_counter, latest_before, card_time_us
          FROM c WHERE card_time_us < latest_before - {CLOCK_SKEW_US}
        """,
        params,
    ).fetchall()
    for what, card_id, low, high, expected, found in rows:
        subject = card_subject(card_id)
        if what == "gap":
            result.findings.append(
                Finding(
                    BreakType.COUNTER_GAP,
                    Source.CARDS,
                    subject,
                    f"{card_id}:{low}-{high}",
                    f"counters {low} to {high} missing",
                    card_id=card_id,
                    reference=f"{low}-{high}",
                )
            )
        elif what == "chain":
            result.findings.append(
                Finding(
                    BreakType.BALANCE_CHAIN_BROKEN,
                    Source.CARDS,
                    subject,
                    f"{card_id}:{low}",
                    f"counter {low} reports balance {found}, the chain gives {expected}",
                    card_id=card_id,
                    reference=str(low),
                    ledger_amount=expected,
                    external_amount=found,
                )
            )
        else:
            result.findings.append(
                Finding(
                    BreakType.COUNTER_REGRESSION,
                    Source.CARDS,
                    subject,
                    f"{card_id}:{low}",
                    f"counter {low} signed {(expected - found) // 1_000_000} s before a lower"
                    " counter",
                    card_id=card_id,
                    reference=str(low),
                )
            )


def check_shadow_balances(duck: duckdb.DuckDBPyConnection) -> CheckResult:
    """The purse's posted balance against the card's last reported balance (module doc)."""
    result = CheckResult(Source.CARDS)
    for (card_id,) in duck.execute("SELECT card_id FROM cards").fetchall():
        result.examined.add(purse_subject(card_id))
    rows = duck.execute(
        f"""
        WITH last AS (
            SELECT card_id, arg_max(balance_after, card_counter) AS reported,
                   max(card_counter) AS counter
            FROM tx GROUP BY card_id),
        gaps AS (
            SELECT DISTINCT card_id FROM (
                SELECT card_id, card_counter, floor,
                       lag(card_counter) OVER (PARTITION BY card_id ORDER BY card_counter)
                           AS prev_counter
                FROM tx) WHERE card_counter > coalesce(prev_counter, 0) + 1 AND {_NOT_THE_ANCHOR})
        SELECT c.card_id, c.credits_posted - c.debits_posted, l.reported, l.counter
        FROM cards c JOIN last l USING (card_id)
        WHERE c.status <> 'replaced'
          AND c.card_id NOT IN (SELECT card_id FROM gaps)
          AND c.card_id NOT IN (SELECT card_id FROM loads WHERE status = 'pending')
          AND c.credits_posted - c.debits_posted <> l.reported
        """
    ).fetchall()
    for card_id, shadow, reported, counter in rows:
        result.findings.append(
            Finding(
                BreakType.SHADOW_BALANCE_MISMATCH,
                Source.CARDS,
                purse_subject(card_id),
                card_id,
                f"ledger purse {shadow}, card reported {reported} at counter {counter}",
                card_id=card_id,
                ledger_amount=shadow,
                external_amount=reported,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class LoadDecision:
    load_id: str
    post: bool
    reason: str


def decide_loads(duck: duckdb.DuckDBPyConnection) -> list[LoadDecision]:
    """What the card's own certificates say about each pending load made at counter c:
    a credit for its amount at c+1 means the card took it (post); any other certificate at
    c+1 means it did not (void, the cryptogram can never be used again). No certificate at
    c+1 decides nothing: the load stays pending (UNRESOLVED_LOAD)."""
    rows = duck.execute(
        """
        SELECT l.id, t.kind = 'credit' AND t.amount = l.amount
        FROM loads l JOIN tx t
          ON t.card_id = l.card_id AND t.card_counter = l.card_counter + 1
        WHERE l.status = 'pending'
        """
    ).fetchall()
    return [
        LoadDecision(
            load_id,
            bool(took),
            "card credit at the next counter"
            if took
            else "another certificate at the next counter",
        )
        for load_id, took in rows
    ]


def check_pending_loads(duck: duckdb.DuckDBPyConnection) -> CheckResult:
    result = CheckResult(Source.CARDS)
    for load_id, card_id, amount, counter, day, status in duck.execute(
        "SELECT id, card_id, amount, card_counter, business_date, status FROM loads"
    ).fetchall():
        subject = f"load:{load_id}"
        result.examined.add(subject)
        if status != "pending":
            continue
        result.findings.append(
            Finding(
                BreakType.UNRESOLVED_LOAD,
                Source.CARDS,
                subject,
                load_id,
                f"load of {day} at counter {counter} still pending: no certificate at"
                f" counter {counter + 1} yet",
                card_id=card_id,
                reference=load_id,
                ledger_amount=amount,
            )
        )
    return result


def check_quarantine(duck: duckdb.DuckDBPyConnection) -> CheckResult:
    """Every open quarantined input is a break; a resolved one settles its break."""
    result = CheckResult(Source.CARDS)
    for qid, reason, card_id, counter, terminal, amount, merchant, status in duck.execute(
        "SELECT id, reason, card_id, card_counter, terminal_code, amount, merchant_id, status"
        " FROM quarantine"
    ).fetchall():
        subject = f"quarantine:{qid}"
        result.examined.add(subject)
        if status != "open":
            continue
        kind = QUARANTINE_TYPES.get(reason, BreakType.QUARANTINED_INPUT)
        result.findings.append(
            Finding(
                kind,
                Source.CARDS,
                subject,
                f"quarantine:{qid}",
                f"quarantined: {reason}" + (f" at counter {counter}" if counter else ""),
                card_id=card_id,
                merchant_id=merchant,
                terminal_code=terminal,
                reference=qid,
                external_amount=amount,
            )
        )
    return result


def purse_subject(card_id: str) -> str:
    return f"purse:{card_id}"


SIGNATURE_BATCH_ROWS = 50_000
_U32 = 2**32 - 1
# What a card MACs (card_reader's `Certificate.signed_bytes`) is _FIXED_HEAD (version, kind,
# serial, counter, amount, balance, seconds, terminal seq), the terminal id with its length
# byte, and the journey (0 for none). A certificate without a journey (nearly all of them)
# is packed by DuckDB here, all but its first ten bytes (version, kind, serial: the same for
# every certificate of one card and kind, absorbed once per card in `verify_batch`): the
# `tail`, NULL when a value no longer fits its field (such a record cannot carry the card's
# MAC). tests/reconciliation/test_chain_properties.py proves the packing equals the card's.
_PREFIX = struct.Struct(">BB8s")
assert _FIXED_HEAD.format.startswith(_PREFIX.format) and _FIXED_HEAD.size == _PREFIX.size + 20
_SIGNATURE_SQL = f"""
SELECT t.card_id, c.serial_sealed, t.card_counter, t.kind, t.amount, t.balance_after,
       t.terminal_code, t.terminal_seq, t.card_time_us, t.journey,
       CASE WHEN length(t.mac) = 32 THEN try(unhex(t.mac)) END AS mac,
       CASE WHEN t.journey IS NULL
             AND t.card_counter BETWEEN 0 AND {_U32} AND t.amount BETWEEN 0 AND {_U32}
             AND t.balance_after BETWEEN 0 AND {_U32} AND t.terminal_seq BETWEEN 0 AND {_U32}
             AND t.card_time_us BETWEEN 0 AND {_U32} * 1000000 + 999999
             AND strlen(t.terminal_code) = length(t.terminal_code)
             AND strlen(t.terminal_code) < 256
       THEN unhex(printf('%08x%08x%08x%08x%08x%02x', t.card_counter, t.amount, t.balance_after,
                         t.card_time_us // 1000000, t.terminal_seq, strlen(t.terminal_code)))
            || encode(t.terminal_code) || '\\x00'::BLOB END AS tail
FROM tx t JOIN cards c USING (card_id)
WHERE t.business_date = $day AND t.shard = $shard
ORDER BY t.card_id
"""
_KIND_CODES = {kind.value: kind.code for kind in TransactionKind}


def verify_batch(
    batch: pa.RecordBatch, keys: BackOfficeKeys, secrets: ApiSecrets
) -> list[tuple[str, int, int]]:
    """(card, counter, amount) of every certificate in `batch` whose MAC does not verify.

    Serials are unsealed here, in memory, for key diversification only. The batch is
    ordered by card: per card, one unsealing, one key derivation and one keyed CMAC that
    has absorbed the card's fixed prefix, copied for each of its certificates. A record that
    no longer even encodes as a certificate (a value out of range, an unknown kind) cannot
    carry the card's MAC either."""
    unseal = secrets.unsealer(SERIAL_PURPOSE)
    certificate_key = keys.certificate_keys()
    sealed = batch.column("serial_sealed")
    bad_rows = []
    card = None
    serial = b""
    keyed: CMAC | None = None
    prefixed: dict[str, CMAC] = {}  # kind -> the card's CMAC with its prefix absorbed
    for row, (card_id, kind, mac, tail) in enumerate(
        zip(
            *(batch.column(name).to_pylist() for name in ("card_id", "kind", "mac", "tail")),
            strict=True,
        )
    ):
        if card_id != card:
            card = card_id
            serial = unseal(bytes.fromhex(sealed[row].as_py()))
            keyed = CMAC(algorithms.AES(certificate_key(serial)))
            prefixed = _prefixed(keyed, serial)
        assert keyed is not None
        if tail is not None and kind in prefixed:
            computed = prefixed[kind].copy()
            computed.update(tail)
        else:  # a journey, or a value out of range: packed in full, or not at all
            signed = _with_journey(serial, batch.slice(row, 1).to_pylist()[0])
            if signed is None:
                bad_rows.append(row)
                continue
            computed = keyed.copy()
            computed.update(signed)
        try:
            computed.verify(mac or b"")
        except InvalidSignature:
            bad_rows.append(row)
    return [
        (record["card_id"], record["card_counter"], record["amount"])
        for record in (batch.slice(row, 1).to_pylist()[0] for row in bad_rows)
    ]


def _prefixed(keyed: CMAC, serial: bytes) -> dict[str, CMAC]:
    """Per kind, the card's CMAC after the first ten bytes it signs (version, kind, serial)."""
    prefixed = {}
    for kind, code in _KIND_CODES.items():
        prefixed[kind] = keyed.copy()
        prefixed[kind].update(_PREFIX.pack(CERTIFICATE_VERSION, code, serial))
    return prefixed


def _with_journey(serial: bytes, record: dict[str, Any]) -> bytes | None:
    """What the card MACed for a record DuckDB did not pack: one with a journey, built and
    validated as the card builds it; None if the record no longer encodes as a certificate."""
    if record["journey"] is None:
        return None
    try:
        return Certificate(
            card_serial=serial,
            counter=record["card_counter"],
            kind=TransactionKind(record["kind"]),
            amount=record["amount"],
            balance_after=record["balance_after"],
            terminal_id=record["terminal_code"],
            terminal_seq=record["terminal_seq"],
            timestamp=record["card_time_us"] // 1_000_000,
            journey=Journey.from_json(json.loads(record["journey"])),
            mac=bytes(16),
        ).signed_bytes()
    except (ValueError, struct.error, CertificateFormatError):
        return None


def check_signatures(
    duck: duckdb.DuckDBPyConnection,
    day: str,
    keys: BackOfficeKeys,
    secrets: ApiSecrets,
    tick: Callable[[], None],
    shards: int = 1,
) -> CheckResult:
    """Re-verify the MAC of every certificate recorded on `day`, card by card.

    The API verified each one before accepting it; this proves the stored record is still
    exactly what the card signed (an edit behind the API's back breaks the MAC). DuckDB
    orders and packs the batches shard by shard on a thread of its own while this one
    verifies them: at about a microsecond per certificate, worker processes cost more CPU
    in start-up and in shipping batches than they save (docs/reconciliation.md).
    """
    result = CheckResult(Source.CARDS)
    batches: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(maxsize=2)
    stopped = threading.Event()

    def read() -> None:
        try:
            for batch in _signature_batches(duck, day, shards):
                if stopped.is_set():
                    return
                batches.put(batch)
        except BaseException as exc:  # handed to the verifying thread, which raises it
            batches.put(exc)
        else:
            batches.put(None)

    reader = threading.Thread(target=read, name="signature-batches")
    reader.start()
    bad: list[tuple[str, int, int]] = []
    try:
        while (batch := batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            bad.extend(verify_batch(batch, keys, secrets))
            tick()
    finally:
        # After a failed verification the reader stops at its next batch instead of
        # reading the rest of the day; it may be waiting to hand one over, so take it.
        stopped.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.1)
        reader.join()
    for (card_id,) in duck.execute(
        "SELECT DISTINCT card_id FROM tx WHERE business_date = $day", {"day": day}
    ).fetchall():
        result.examined.add(signature_subject(card_id))
    for card_id, counter, amount in bad:
        result.findings.append(
            Finding(
                BreakType.SIGNATURE_INVALID,
                Source.CARDS,
                signature_subject(card_id),
                f"{card_id}:{counter}",
                f"the recorded certificate at counter {counter} no longer verifies",
                card_id=card_id,
                reference=str(counter),
                external_amount=amount,
            )
        )
    return result


def _signature_batches(
    duck: duckdb.DuckDBPyConnection, day: str, shards: int
) -> Iterator[pa.RecordBatch]:
    for shard in range(shards):
        yield from duck.sql(_SIGNATURE_SQL, params={"day": day, "shard": shard}).to_arrow_reader(
            SIGNATURE_BATCH_ROWS
        )


def signature_subject(card_id: str) -> str:
    return f"certificate:{card_id}"
