"""What a check hands back: the disagreements it found and the subjects it examined.

A check that examined a subject and found nothing wrong with it is evidence that an
earlier break about that subject is gone: `breaks.persist` auto-resolves it. A subject a
check did not examine tonight keeps its breaks as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from reconciliation.nightly.taxonomy import BreakType, Source

BREAKS_NAMESPACE = uuid.UUID("3f6b8a2e-91d4-4c07-b5e2-7a1c9d04e6f3")


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement. `key` identifies it within its type across nights (the same
    disagreement found again is the same break); ids are 32 hex digits."""

    type: BreakType
    source: Source
    subject: str
    key: str
    detail: str = ""
    card_id: str | None = None
    merchant_id: str | None = None
    terminal_code: str | None = None
    reference: str | None = None
    ledger_amount: int | None = None
    external_amount: int | None = None

    @property
    def break_id(self) -> uuid.UUID:
        return uuid.uuid5(BREAKS_NAMESPACE, f"{self.type.value}|{self.key}")


@dataclass(slots=True)
class CheckResult:
    """Findings of one check (one source), and the subjects it examined."""

    source: Source
    findings: list[Finding] = field(default_factory=list)
    examined: set[str] = field(default_factory=set)

    def merge(self, other: CheckResult) -> None:
        self.findings.extend(other.findings)
        self.examined |= other.examined


def card_subject(card_id: str) -> str:
    return f"card:{card_id}"


def terminal_subject(code: str) -> str:
    return f"terminal:{code}"
