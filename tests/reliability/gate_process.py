"""A gate as its own process, for the crash tests: one tap of the card whose chip state
lives in `--card` (committed atomically, like a chip's EEPROM, so it outlives the gate),
then an upload of the journal to `--api-url`.

`--crash after-debit` kills the process (SIGKILL) the moment the card has committed the
debit, before the gate writes its journal; `--crash after-journal` kills it after the
journal write and before the upload. The last line on stdout is one JSON object.

    python -m tests.reliability.gate_process --data-dir D --card C --api-url U [--crash X]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from card_reader.backoffice import BackOfficeClient
from card_reader.card import VirtualCard
from card_reader.card_state import FileStore
from card_reader.fares import GateMode, find_station, flat_fare
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal
from card_reader.keys import SoftwareSam
from card_reader.protocol import CardSession
from card_reader.terminal import Gate
from card_reader.transport import ApduChannel, InProcessTransport
from card_reader.uploader import Uploader

TERMINAL_ID = "TJ1-MONAS-01"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_after_debit() -> None:
    debit = CardSession.debit

    def debit_then_die(self: CardSession, **fields: Any) -> Any:
        debit(self, **fields)
        die()

    CardSession.debit = debit_then_die  # type: ignore[method-assign]


def fares_since(started: float) -> set[int]:
    """The gate's fare at any moment from `started` to now: TransJakarta's flat fare is
    lower from 05:00 to 07:00 Jakarta time, so a test cannot fix one number."""
    line, _ = find_station("TJ-1", "Monas")
    return {flat_fare(line, int(started)), flat_fare(line, int(time.time()))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--card", type=Path, required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--auth-master", required=True, help="The SAM's master key, hex.")
    parser.add_argument("--crash", choices=["after-debit", "after-journal"])
    parser.add_argument("--no-tap", action="store_true", help="Only upload.")
    args = parser.parse_args(argv)
    line, station = find_station("TJ-1", "Monas")
    journal = Journal(args.data_dir, TERMINAL_ID)
    gate = Gate(
        TERMINAL_ID,
        line,
        station,
        GateMode.FLAT,
        SoftwareSam(bytes.fromhex(args.auth_master)),
        journal,
        HotlistStore(args.data_dir),
    )
    result: dict[str, Any] = {}
    if not args.no_tap:
        store = FileStore(args.card)
        transport = InProcessTransport(VirtualCard(store.load(), store))
        if args.crash == "after-debit":
            crash_after_debit()
        tap = gate.process(ApduChannel(transport))
        if args.crash == "after-journal":
            die()
        result.update(opened=tap.opened, code=tap.code, amount=tap.amount)
    report = Uploader(journal, BackOfficeClient(args.api_url, args.api_key)).upload_pending()
    stats = journal.stats()
    journal.close()
    result.update(
        uploaded=dict(report.outcomes),
        error=str(report.error) if report.error else None,
        certificates=stats.certificates,
        pending=stats.pending,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
