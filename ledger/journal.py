"""Invariant 6, tamper evidence: every transfer is hashed, and the journal is sealed in blocks.

Guarantees:
- Each transfer row carries `content_hash`, SHA-256 over a canonical encoding of
  everything it records (id, kind, phase, currency, links, timeout, metadata, timestamp and
  every posting). An edit to any of those, made behind the application's back, no longer
  matches its hash.
- Sealing groups the transfers committed since the last block, in `seq` order, into a new
  block: `transfers_root` hashes each (seq, content_hash) in order, and `block_hash` chains
  the block to the one before. Editing a sealed transfer and its hash, deleting or inserting
  one inside a sealed range, or rewriting an old block all break the chain, and the verifier
  says where. Publishing the head `block_hash` (the nightly export does) pins the day.
- A block seals only transfers that are committed and whose neighbours in `seq` are
  committed too, so a late commit never lands inside a sealed range (see `seal`).

The database also refuses UPDATE and DELETE on transfers, postings and journal_blocks
(migrations), so tampering needs the triggers dropped first; the verifier checks that they
are in place.
"""

from __future__ import annotations

import hashlib
import json
import operator
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import schema
from ledger.db import is_sqlite

GENESIS_HASH = bytes(32)
NO_ID = bytes(16)  # stands for an absent pending_id or linked_id
_WAIT_FOR_WRITERS_S = 30.0


def canonical_metadata(metadata: dict[str, Any]) -> str:
    """The one text form of a metadata object: sorted keys, no spaces, UTF-8."""
    if not metadata:
        return "{}"
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(
    *,
    id: uuid.UUID,
    kind: str,
    phase: str,
    currency: str,
    pending_id: uuid.UUID | None,
    linked_id: uuid.UUID | None,
    timeout_s: int,
    metadata_json: str,
    timestamp_us: int,
    postings: Sequence[tuple[int, uuid.UUID, int]],
) -> bytes:
    """SHA-256 of a transfer's canonical encoding; `postings` are (leg, account_id, amount)."""
    meta = metadata_json.encode()
    parts = [
        _TRANSFER_PREFIX,
        id.bytes,
        _short_text(kind),
        _short_text(phase),
        _short_text(currency),
        pending_id.bytes if pending_id else NO_ID,
        linked_id.bytes if linked_id else NO_ID,
        _TIMES_AND_META_LENGTH.pack(timeout_s, timestamp_us, len(meta)),
        meta,
        _U16.pack(len(postings)),
    ]
    leg_bytes = _LEG.pack
    for leg, account_id, amount in sorted(postings, key=_leg_number):
        parts.append(leg_bytes(leg, account_id.bytes, amount))
    return hashlib.sha256(b"".join(parts)).digest()


def _short_text(text: str) -> bytes:
    """A kind, phase or currency as its byte length (16 bits) and UTF-8 bytes. The few
    distinct values are encoded once each (up to a bound: a kind is the caller's text)."""
    encoded = _SHORT_TEXTS.get(text)
    if encoded is None:
        raw = text.encode()
        encoded = _U16.pack(len(raw)) + raw
        if len(_SHORT_TEXTS) < 1_024:
            _SHORT_TEXTS[text] = encoded
    return encoded


# Precompiled: content_hash runs once per transfer written.
_TRANSFER_PREFIX = b"jakartaone.transfer.v1\x00"
_U16 = struct.Struct(">H")
_LEG = struct.Struct(">H16sq")  # leg number, account id, signed amount
_TIMES_AND_META_LENGTH = struct.Struct(">qqI")
_SHORT_TEXTS: dict[str, bytes] = {}
_leg_number = operator.itemgetter(0)
BLOCK_LABEL = b"jakartaone.block.v1\x00"


def transfers_root(entries: Iterable[tuple[int, bytes]]) -> tuple[bytes, int]:
    """Hash of (seq, content_hash) pairs in seq order; returns (root, count)."""
    h = hashlib.sha256(BLOCK_LABEL)
    count = 0
    for seq, digest in entries:
        h.update(struct.pack(">q", seq) + digest)
        count += 1
    return h.digest(), count


# PostgreSQL concatenates the (seq, content_hash) pairs of a chunk of seqs itself, so that
# sealing a day of millions of transfers makes no Python object per transfer. int8send is
# the 8-byte big-endian form that transfers_root packs with struct (">q"): the same bytes.
_ROOT_CHUNK_SQL = sa.text(
    "SELECT count(*), string_agg(int8send(seq) || content_hash, ''::bytea ORDER BY seq)"
    " FROM transfers WHERE seq > :lo AND seq <= :hi"
)
_ROOT_CHUNK_SEQS = 250_000


def _transfers_root_postgres(conn: Connection, after: int, horizon: int) -> tuple[bytes, int]:
    """transfers_root of the transfers with after < seq <= horizon, folded chunk by chunk."""
    h = hashlib.sha256(BLOCK_LABEL)
    count = 0
    for lo in range(after, horizon, _ROOT_CHUNK_SEQS):
        hi = min(lo + _ROOT_CHUNK_SEQS, horizon)
        n, packed = conn.execute(_ROOT_CHUNK_SQL, {"lo": lo, "hi": hi}).one()
        if n:
            h.update(packed)
            count += n
    return h.digest(), count


def block_hash(
    *,
    block_no: int,
    first_seq: int,
    last_seq: int,
    transfer_count: int,
    root: bytes,
    prev_hash: bytes,
    sealed_at_us: int,
) -> bytes:
    return hashlib.sha256(
        b"jakartaone.chain.v1\x00"
        + struct.pack(">qqqqq", block_no, first_seq, last_seq, transfer_count, sealed_at_us)
        + root
        + prev_hash
    ).digest()


@dataclass(frozen=True, slots=True)
class Block:
    block_no: int
    first_seq: int
    last_seq: int
    transfer_count: int
    transfers_root: bytes
    prev_hash: bytes
    block_hash: bytes
    sealed_at_us: int


def all_blocks(conn: Connection) -> list[Block]:
    """Every sealed block, in order."""
    b = schema.journal_blocks
    return [Block(**row._mapping) for row in conn.execute(sa.select(b).order_by(b.c.block_no))]


def last_block(conn: Connection) -> Block | None:
    b = schema.journal_blocks
    row = conn.execute(sa.select(b).order_by(b.c.block_no.desc()).limit(1)).first()
    return Block(**row._mapping) if row else None


def sealing_horizon(conn: Connection) -> int:
    """The highest seq below which every transfer is committed or will never exist.

    PostgreSQL draws `seq` from a sequence when the transfer row is inserted, and commits
    out of order: seq 7 may still be in flight while seq 8 is visible. Sealing up to 8 then
    would leave 7 outside its block forever. So we note this database's transactions in
    progress now and the highest committed seq, and wait for those transactions to end.
    (Other databases of the cluster cannot write here, so their transactions are ignored:
    a long job elsewhere must not postpone sealing.) Every writer
    inserts its postings (and so holds a transaction id) before it draws a seq, so a
    transaction missing from the in-progress list can only draw seqs above the horizon.
    """
    t = schema.transfers
    if is_sqlite(conn):
        # One writer at a time: whatever is visible to a writer is all there is.
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.seq), 0))).scalar_one())
    row = conn.execute(
        sa.text(
            "SELECT (SELECT coalesce(max(seq), 0) FROM transfers) AS horizon,"
            " ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text) AS xids"
        )
    ).one()
    horizon, xids = int(row.horizon), list(row.xids)
    if xids:
        # The snapshot lists the whole cluster's transactions, but only this database's can
        # insert transfers here. Read the activity view after the snapshot (and afresh, since
        # it is cached per transaction), so that any of ours in the snapshot shows in it.
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        ours = conn.execute(
            sa.text(
                "SELECT x FROM unnest(CAST(:xids AS text[])) AS x"
                " WHERE (x::bigint % 4294967296)::text::xid IN (SELECT backend_xid"
                " FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_xid IS NOT NULL)"
            ),
            {"xids": xids},
        ).scalars()
        xids = list(ours)
    deadline = time.monotonic() + _WAIT_FOR_WRITERS_S
    while xids:
        statuses = conn.execute(
            sa.text("SELECT x, pg_xact_status(x::xid8) FROM unnest(CAST(:xids AS text[])) AS x"),
            {"xids": xids},
        ).all()
        xids = [x for x, status in statuses if status == "in progress"]
        if xids and time.monotonic() > deadline:
            raise TimeoutError(f"transactions {xids} still in progress; sealing postponed")
        if xids:
            time.sleep(0.01)
    return horizon


def seal(conn: Connection, now_us: int, horizon: int) -> Block | None:
    """Seal every transfer with last block's last_seq < seq <= horizon into a new block.

    The caller runs this in a write transaction after `sealing_horizon` has returned
    `horizon` (on SQLite, in the same transaction). Returns the new block, or None if
    there was nothing new to seal.
    """
    if not is_sqlite(conn):
        # One sealer at a time; writers of transfers are not held up.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263841)"))
    previous = last_block(conn)
    after = previous.last_seq if previous else 0
    if horizon <= after:
        return None
    if is_sqlite(conn):
        t = schema.transfers
        rows = conn.execute(
            sa.select(t.c.seq, t.c.content_hash)
            .where(t.c.seq > after, t.c.seq <= horizon)
            .order_by(t.c.seq)
            .execution_options(yield_per=10_000)
        )
        root, count = transfers_root((r.seq, bytes(r.content_hash)) for r in rows)
    else:
        root, count = _transfers_root_postgres(conn, after, horizon)
    if count == 0:
        return None
    prev_hash = previous.block_hash if previous else GENESIS_HASH
    block_no = (previous.block_no if previous else 0) + 1
    first_seq = after + 1
    digest = block_hash(
        block_no=block_no,
        first_seq=first_seq,
        last_seq=horizon,
        transfer_count=count,
        root=root,
        prev_hash=prev_hash,
        sealed_at_us=now_us,
    )
    block = Block(block_no, first_seq, horizon, count, root, prev_hash, digest, now_us)
    conn.execute(sa.insert(schema.journal_blocks).values(**asdict(block)))
    return block
