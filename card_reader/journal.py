"""A terminal's durable journal: every certificate it must deliver, and its upload state.

One append-only file. Each line is `<crc32 as 8 hex digits> <JSON record>`; record types:

- `certificate`: a card-signed certificate (`cert`, the upload JSON form) and whether it
  was `forwarded` (made by another terminal; read from a card's purse record).
- `reserve`: terminal sequence numbers up to `through` may be used. Written (and fsynced)
  before a block of numbers is used, so a restart never reuses a number a card may already
  hold in a certificate: it continues after the last reservation.
- `batch`: certificates `first`..`last` (positions in the journal, 0-based) form upload
  batch `batch_id`. Written before the first attempt, so retries reuse the id.
- `acked` / `refused`: the back office answered the batch (outcome counts) or refused it
  (`code`). Either way the upload cursor moves past it; a refused batch stays here.

Guarantees:
- `record_certificate(..., durable=True)` returns only after the record is fsynced: a gate
  opens only after that. A power cut loses no opened-for certificate.
- A torn last line (power cut mid-write) is cut off at the next open; a bad line anywhere
  else is corruption and refuses to open (`JournalCorruptError`), never silently dropped.
- Each (card serial, counter) is recorded once; a batch's content never changes once its
  record is written, so a retried batch id always carries the same certificates.
- A write that fails (disk full, file size limit, read-only file system, I/O error) raises
  `JournalUnavailableError` with its code and leaves no partial line behind: the file is
  cut back to its last whole record (or, if even that fails, the journal refuses every
  write until it is opened again, which cuts the torn tail). `check_writable()` says
  before a debit whether the next record can be written: a terminal never takes value it
  cannot record.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import threading
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from card_reader.certificate import Certificate, CertificateFormatError

RESERVE_BLOCK = 1_000
MAX_BATCH_CERTIFICATES = 500
JOURNAL_FILE = "journal.log"
# Free space a debit needs before it starts: its reservation, certificate and batch records
# take about 1 KiB; the rest is margin for the records that follow it (acks, the next taps).
WRITE_HEADROOM_BYTES = 64 * 1024


class JournalCorruptError(RuntimeError):
    """A line other than the last fails its checksum or does not parse."""


class JournalUnavailableError(RuntimeError):
    """The journal cannot take another record. `code` is stable; match on it:

    - `journal_read_only`: the file system holding the journal is read-only.
    - `journal_disk_full`: no space left (or the process's file size limit is reached).
    - `journal_write_failed`: any other failed write (an I/O error), or a write failed
      earlier and its torn line could not be cut off (reopen the journal).
    """

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _unavailable(error: OSError, path: Path) -> JournalUnavailableError:
    if error.errno == errno.EROFS:
        code = "journal_read_only"
    elif error.errno in _FULL:
        code = "journal_disk_full"
    else:
        code = "journal_write_failed"
    return JournalUnavailableError(code, f"{path}: {os.strerror(error.errno or 0)}")


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    terminal_id: str
    certificates: tuple[Certificate, ...]

    @property
    def own_seqs(self) -> list[int]:
        return [c.terminal_seq for c in self.certificates if c.terminal_id == self.terminal_id]

    def to_json(self) -> dict[str, Any]:
        """The body of POST /v1/gate-batches (docs/card-protocol.md, "Gate upload")."""
        own = self.own_seqs
        return {
            "batch_id": self.batch_id,
            "terminal_id": self.terminal_id,
            "first_terminal_seq": min(own, default=0),
            "last_terminal_seq": max(own, default=0),
            "certificates": [c.to_json() for c in self.certificates],
        }


@dataclass(frozen=True, slots=True)
class JournalStats:
    certificates: int
    uploaded: int
    refused_batches: int

    @property
    def pending(self) -> int:
        return self.certificates - self.uploaded


def _line(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on a line, or None if the line is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the stack
        return None
    return record if isinstance(record, dict) else None


def _count(record: dict[str, Any], name: str) -> int:
    """A position or sequence number in a record: a JSON integer, 0 or more (never a
    float, a string or a bool, which the writer never writes)."""
    value = record[name]
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} is not a count")
    return value


class Journal:
    def __init__(self, directory: Path, terminal_id: str) -> None:
        self.terminal_id = terminal_id
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / JOURNAL_FILE
        self._lock = threading.Lock()
        self._certificates: list[Certificate] = []
        self._keys: set[tuple[bytes, int]] = set()
        self._own_seqs: set[int] = set()
        self._reserved_through = 0
        self._next_seq = 1
        self._uploaded = 0
        self._refused = 0
        self._open_batch: tuple[str, int, int] | None = None
        self._torn = False  # a failed write left a partial line that could not be cut off
        self._replay()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._sync_directory()
        except OSError as error:
            raise _unavailable(error, self.path) from None
        self._size = os.fstat(self._fd).st_size
        # Never reuse a number handed out before a restart: start after the reservation.
        self._next_seq = self._reserved_through + 1

    # Opening ------------------------------------------------------------------------------

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        good_length = 0
        for index, line in enumerate(lines):
            last = index == len(lines) - 1
            if last and not line:
                break  # the file ends with a newline, as it should
            record = _parse(line)
            if record is None or (last and line):
                if last or all(not rest for rest in lines[index + 1 :]):
                    break  # a torn tail: cut it off below
                raise JournalCorruptError(f"{self.path}: damaged record {index + 1}")
            try:
                self._apply(record)
            except (KeyError, TypeError, ValueError, CertificateFormatError) as error:
                raise JournalCorruptError(f"{self.path}: record {index + 1}: {error}") from None
            good_length += len(line) + 1
        if good_length < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_length)
                handle.flush()
                os.fsync(handle.fileno())

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "certificate":
            cert = Certificate.from_json(record["cert"])
            self._add(cert)
        elif kind == "reserve":
            self._reserved_through = max(self._reserved_through, _count(record, "through"))
        elif kind == "batch":
            if not isinstance(record["batch_id"], str):
                raise ValueError("batch_id is not a string")
            self._open_batch = (record["batch_id"], _count(record, "first"), _count(record, "last"))
        elif kind in ("acked", "refused"):
            batch = self._open_batch
            if batch is None or batch[0] != record["batch_id"]:
                raise ValueError("an answer to a batch that is not open")
            self._uploaded = batch[2] + 1
            self._open_batch = None
            if kind == "refused":
                self._refused += 1
        else:
            raise ValueError(f"unknown record type {kind!r}")

    def _add(self, cert: Certificate) -> None:
        self._certificates.append(cert)
        self._keys.add((cert.card_serial, cert.counter))
        if cert.terminal_id == self.terminal_id:
            self._own_seqs.add(cert.terminal_seq)

    # Writing ------------------------------------------------------------------------------

    def _append(self, record: dict[str, Any], *, durable: bool) -> None:
        if self._torn:
            raise JournalUnavailableError(
                "journal_write_failed", f"{self.path}: an earlier write failed; reopen it"
            )
        line = _line(record)
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # only when the disk or the size limit ran out
                raise OSError(errno.ENOSPC, f"short write to {self.path}")
            if durable:
                os.fsync(self._fd)
        except OSError as error:
            self._cut_back()
            raise _unavailable(error, self.path) from None
        self._size += len(line)

    def _cut_back(self) -> None:
        """Remove whatever a failed write left after the last whole record: a later record
        appended after a partial line would make the journal corrupt, not just torn."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            self._torn = True

    def check_writable(self) -> None:
        """Raise `JournalUnavailableError` unless the next records can be written: the file
        system is writable, has `WRITE_HEADROOM_BYTES` free, and the process's file size
        limit leaves as much room. Called before a card is debited."""
        if self._torn:
            raise JournalUnavailableError(
                "journal_write_failed", f"{self.path}: an earlier write failed; reopen it"
            )
        try:
            fs = os.fstatvfs(self._fd)
        except OSError as error:
            raise _unavailable(error, self.path) from None
        if fs.f_flag & os.ST_RDONLY:
            raise JournalUnavailableError("journal_read_only", f"{self.path}: read-only")
        if fs.f_bavail * fs.f_frsize < WRITE_HEADROOM_BYTES:
            raise JournalUnavailableError("journal_disk_full", f"{self.path}: no space left")
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and self._size + WRITE_HEADROOM_BYTES > limit:
            raise JournalUnavailableError(
                "journal_disk_full", f"{self.path}: the file size limit is reached"
            )

    def _sync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def next_terminal_seq(self) -> int:
        """A terminal sequence number never used before by this terminal."""
        with self._lock:
            seq = self._next_seq
            if seq > self._reserved_through:
                through = seq + RESERVE_BLOCK - 1
                self._append({"type": "reserve", "through": through}, durable=True)
                self._reserved_through = through
            self._next_seq = seq + 1
            return seq

    def has_certificate(self, card_serial: bytes, counter: int) -> bool:
        with self._lock:
            return (card_serial, counter) in self._keys

    def has_own_seq(self, terminal_seq: int) -> bool:
        with self._lock:
            return terminal_seq in self._own_seqs

    def record_certificate(self, cert: Certificate, *, durable: bool = True) -> bool:
        """Append `cert` unless this (card, counter) is already here. True if appended.

        durable=False leaves the fsync to the next durable write (used for certificates
        forwarded from a card, which the card itself still carries)."""
        with self._lock:
            if (cert.card_serial, cert.counter) in self._keys:
                return False
            forwarded = cert.terminal_id != self.terminal_id
            record = {"type": "certificate", "cert": cert.to_json(), "forwarded": forwarded}
            self._append(record, durable=durable)
            self._add(cert)
            return True

    def sync(self) -> None:
        with self._lock:
            try:
                os.fsync(self._fd)
            except OSError as error:
                raise _unavailable(error, self.path) from None

    # Uploading ----------------------------------------------------------------------------

    def pending_batch(self, max_certificates: int = MAX_BATCH_CERTIFICATES) -> Batch | None:
        """The batch to send now: the open one (a retry), else a new one, else None."""
        with self._lock:
            if self._open_batch is None:
                first = self._uploaded
                if first >= len(self._certificates):
                    return None
                last = min(len(self._certificates), first + max_certificates) - 1
                batch_id = str(uuid.uuid4())
                self._append(
                    {"type": "batch", "batch_id": batch_id, "first": first, "last": last},
                    durable=True,
                )
                self._open_batch = (batch_id, first, last)
            batch_id, first, last = self._open_batch
            return Batch(batch_id, self.terminal_id, tuple(self._certificates[first : last + 1]))

    def _close_batch(self, record: dict[str, Any]) -> None:
        batch = self._open_batch
        if batch is None or batch[0] != record["batch_id"]:
            raise ValueError("no such open batch")
        self._append(record, durable=True)
        self._uploaded = batch[2] + 1
        self._open_batch = None

    def mark_acked(self, batch_id: str, outcomes: dict[str, int]) -> None:
        with self._lock:
            self._close_batch({"type": "acked", "batch_id": batch_id, **outcomes})

    def mark_refused(self, batch_id: str, code: str) -> None:
        with self._lock:
            self._close_batch({"type": "refused", "batch_id": batch_id, "code": code})
            self._refused += 1

    def stats(self) -> JournalStats:
        with self._lock:
            return JournalStats(len(self._certificates), self._uploaded, self._refused)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
