"""The hotlist a gate keeps: cards to refuse and block, by `serial_hash`, never by serial.

Guarantees:
- The store changes only by applying a whole, validated update, written atomically
  (temporary file, fsync, rename): a gate restarted at any moment has the last complete
  hotlist it fetched, and keeps using it while offline.
- A delta never applies on top of the wrong version: an update whose base does not match
  is refused (`HotlistError("hotlist_version_gap")`) and the gate asks for a full list.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from card_reader.certificate import serial_hash

_HASH = re.compile(r"[0-9a-f]{64}")
HOTLIST_FILE = "hotlist.json"


class HotlistError(ValueError):
    """A hotlist answer or file that does not fit the contract; `code` names which rule."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


@dataclass(frozen=True, slots=True)
class HotlistUpdate:
    """GET /v1/hotlist's answer (docs/card-protocol.md, "Hotlist")."""

    version: int
    blocked: frozenset[str]
    unblocked: frozenset[str]
    full: bool

    @classmethod
    def from_json(cls, data: Any) -> HotlistUpdate:
        if not isinstance(data, dict):
            raise HotlistError("hotlist_not_object")
        version, full = data.get("version"), data.get("full")
        if type(version) is not int or version < 0:
            raise HotlistError("hotlist_version_invalid")
        if type(full) is not bool:
            raise HotlistError("hotlist_full_invalid")
        lists = []
        for name in ("blocked", "unblocked"):
            entries = data.get(name)
            if not isinstance(entries, list) or not all(
                isinstance(e, str) and _HASH.fullmatch(e) for e in entries
            ):
                raise HotlistError(f"hotlist_{name}_invalid")
            lists.append(frozenset(entries))
        if full and lists[1]:
            raise HotlistError("hotlist_full_with_unblocked")
        return cls(version, lists[0], lists[1], full)


class HotlistStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / HOTLIST_FILE
        self._lock = threading.Lock()
        self.version = 0
        self._blocked: frozenset[str] = frozenset()
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                update = HotlistUpdate.from_json({**data, "unblocked": [], "full": True})
            except (ValueError, TypeError, RecursionError) as error:
                raise HotlistError(f"hotlist_file_invalid: {error}") from None
            self.version, self._blocked = update.version, update.blocked

    def __len__(self) -> int:
        return len(self._blocked)

    def is_blocked(self, card_serial: bytes) -> bool:
        return serial_hash(card_serial) in self._blocked

    def apply(self, update: HotlistUpdate, since_version: int) -> None:
        """Apply an answer to `GET /v1/hotlist?since_version=since_version`."""
        with self._lock:
            if update.full:
                blocked = update.blocked
            elif since_version != self.version:
                raise HotlistError("hotlist_version_gap")
            else:
                blocked = (self._blocked | update.blocked) - update.unblocked
            self._write(update.version, blocked)
            self.version, self._blocked = update.version, blocked

    def _write(self, version: int, blocked: frozenset[str]) -> None:
        payload = json.dumps({"version": version, "blocked": sorted(blocked)}).encode("utf-8")
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
