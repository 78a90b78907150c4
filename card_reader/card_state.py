"""The virtual card's non-volatile memory, and how it is committed atomically.

Guarantees:
- `CardState` is immutable; a command builds the next state whole and commits it with one
  `StateStore.save`. Balance, counter, journey and log therefore change together or not
  at all.
- `FileStore.save` writes a temporary file, fsyncs it, renames it over the state file and
  fsyncs the directory: a crash or power cut at any point leaves either the old state or
  the new one on disk, never a mix.

The state file holds the card's keys (it stands for the chip's protected memory): it is
created mode 0600 and must be treated as a secret. `repr` never shows keys.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from card_reader.certificate import U32_MAX, Certificate, Journey
from card_reader.keys import SERIAL_LENGTH, CardKeys

STATE_VERSION = 1
LOG_CAPACITY = 16
UNREGISTERED_MAX_BALANCE = 2_000_000  # PBI 20/6/2018: unregistered e-money
REGISTERED_MAX_BALANCE = 20_000_000  # PADG 24/7/2022: registered e-money


class CardStateError(ValueError):
    """A state file that does not parse or breaks a constraint; `code` names which."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


@dataclass(frozen=True, slots=True)
class CardState:
    """Constraints: 0 <= balance <= max_balance <= 2^32-1; 0 <= counter <= 2^32-1;
    log newest first, at most LOG_CAPACITY certificates."""

    serial: bytes
    keys: CardKeys = field(repr=False)
    balance: int
    max_balance: int
    counter: int = 0
    blocked: bool = False
    journey: Journey | None = None
    log: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.serial) != SERIAL_LENGTH:
            raise CardStateError("serial_length_invalid")
        if not 0 <= self.max_balance <= U32_MAX:
            raise CardStateError("max_balance_out_of_range")
        if not 0 <= self.balance <= self.max_balance:
            raise CardStateError("balance_out_of_range")
        if not 0 <= self.counter <= U32_MAX:
            raise CardStateError("counter_out_of_range")
        if len(self.log) > LOG_CAPACITY:
            raise CardStateError("log_too_long")

    def __repr__(self) -> str:
        return (
            f"CardState(card=JO-****-****-{self.serial[-2:].hex()}, balance={self.balance}, "
            f"counter={self.counter}, blocked={self.blocked})"
        )

    @property
    def last_certificate(self) -> bytes | None:
        return self.log[0] if self.log else None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "serial": self.serial.hex(),
            "keys": {
                "authentication": self.keys.authentication.hex(),
                "certificate": self.keys.certificate.hex(),
                "load": self.keys.load.hex(),
            },
            "balance": self.balance,
            "max_balance": self.max_balance,
            "counter": self.counter,
            "blocked": self.blocked,
            "journey": None if self.journey is None else self.journey.to_json(),
            "log": [entry.hex() for entry in self.log],
        }

    @classmethod
    def from_json(cls, data: Any) -> CardState:
        try:
            if data["version"] != STATE_VERSION:
                raise CardStateError("version_unsupported")
            keys = data["keys"]
            log = tuple(bytes.fromhex(entry) for entry in data["log"])
            for entry in log:
                Certificate.from_bytes(entry)
            return cls(
                serial=bytes.fromhex(data["serial"]),
                keys=CardKeys(
                    bytes.fromhex(keys["authentication"]),
                    bytes.fromhex(keys["certificate"]),
                    bytes.fromhex(keys["load"]),
                ),
                balance=int(data["balance"]),
                max_balance=int(data["max_balance"]),
                counter=int(data["counter"]),
                blocked=bool(data["blocked"]),
                journey=None if data["journey"] is None else Journey.from_json(data["journey"]),
                log=log,
            )
        except CardStateError:
            raise
        except (KeyError, TypeError, ValueError):
            raise CardStateError("state_malformed") from None


def new_serial() -> bytes:
    """A random 8-byte card serial (a real issuer allocates them from its own ranges)."""
    return secrets.token_bytes(SERIAL_LENGTH)


class StateStore(Protocol):
    def save(self, state: CardState) -> None: ...


class MemoryStore:
    """Keeps the last committed state in memory (unit tests, benchmarks of the logic)."""

    def __init__(self) -> None:
        self.saved: CardState | None = None
        self.saves = 0

    def save(self, state: CardState) -> None:
        self.saved = state
        self.saves += 1


class FileStore:
    """Commits each state to one JSON file atomically (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> CardState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise CardStateError("state_file_missing") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep
            raise CardStateError("state_malformed") from None
        return CardState.from_json(data)

    def save(self, state: CardState) -> None:
        payload = json.dumps(state.to_json(), sort_keys=True).encode("utf-8")
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
