"""Gate taps through the real PC/SC stack: pyscard -> pcscd -> vpcd -> the virtual card.

Each tap is timed from the card connected (SCardConnect returned) to the gate's decision,
including every APDU and the journal fsync before the gate opens. The card commits its
own state to a file atomically too (temporary file, fsync, rename), as a chip writes its
EEPROM. Taps cycle through an MRT entry gate, an MRT exit gate and a TransJakarta
validator, with a simulated clock four hours apart so that every tap is a full-fare debit.

    python -m bench gate --json [--taps 1000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from card_reader.apdu import CLA_ISO, Command, Ins
from card_reader.card import VirtualCard
from card_reader.card_state import REGISTERED_MAX_BALANCE, CardState, FileStore, new_serial
from card_reader.fares import GateMode, find_station
from card_reader.hotlist import HotlistStore
from card_reader.journal import Journal
from card_reader.keys import JAKARTAONE_AID, BackOfficeKeys, SoftwareSam, personalize
from card_reader.pcsc import PcscContext, PcscTransport
from card_reader.pcscd import ensure_pcscd
from card_reader.terminal import Gate
from card_reader.transport import ApduChannel
from card_reader.vpcd import VpcdCard

READER = "Virtual PCD 00 00"


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 1_735_776_000  # 2025-01-02 07:00 WIB

    def __call__(self) -> float:
        return self.now


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gate")
    parser.add_argument("--taps", type=int, default=1_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    pcscd = ensure_pcscd()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
            result = run(Path(tmp), args.taps)
    finally:
        if pcscd is not None:
            pcscd.stop()
    print(
        f"{result['taps']} taps: tap-to-decision p50 {result['tap_to_decision_ms_p50']:.2f} ms, "
        f"p99 {result['tap_to_decision_ms_p99']:.2f} ms; "
        f"{result['apdus_per_tap']:.2f} APDUs per tap; "
        f"APDU round trip p50 {result['apdu_roundtrip_ms_p50']:.3f} ms",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result))
    return 0


def run(directory: Path, taps: int) -> dict[str, float | int]:
    authentication_master = secrets.token_bytes(16)
    back_office = BackOfficeKeys(secrets.token_bytes(16), secrets.token_bytes(16))
    serial = new_serial()
    store = FileStore(directory / "card.json")
    state = CardState(
        serial=serial,
        keys=personalize(serial, authentication_master, back_office),
        balance=REGISTERED_MAX_BALANCE,
        max_balance=REGISTERED_MAX_BALANCE,
    )
    store.save(state)
    virtual = VpcdCard(VirtualCard(state, store))
    sam = SoftwareSam(authentication_master)
    clock = SimulatedClock()
    gates = []
    for terminal_id, line, station, mode in (
        ("MRT-LBB-E01", "MRT-NS", "Lebak Bulus", GateMode.ENTRY),
        ("MRT-BHI-X01", "MRT-NS", "Bundaran HI", GateMode.EXIT),
        ("TJ1-KOTA-01", "TJ-1", "Kota", GateMode.FLAT),
    ):
        line_, station_ = find_station(line, station)
        data = directory / terminal_id
        gates.append(
            Gate(
                terminal_id,
                line_,
                station_,
                mode,
                sam,
                Journal(data, terminal_id),
                HotlistStore(data),
                clock,
            )
        )

    virtual.tap()
    durations: list[float] = []
    apdus: list[int] = []
    roundtrips: list[float] = []
    try:
        with PcscContext() as context:
            reader = context.find_reader(READER)
            PcscTransport.when_present(context, reader, timeout=10).close()
            for index in range(taps):
                gate = gates[index % len(gates)]
                clock.now += 4 * 3600
                with PcscTransport(context, reader) as transport:
                    channel = ApduChannel(transport)
                    started = time.perf_counter()
                    result = gate.process(channel)
                    durations.append((time.perf_counter() - started) * 1000)
                if not result.opened or result.code != "ok":
                    raise RuntimeError(f"tap {index} was not a debit: {result.describe()}")
                apdus.append(result.apdus)
            select = Command(CLA_ISO, Ins.SELECT, 0x04, 0x00, JAKARTAONE_AID, 256).to_bytes()
            with PcscTransport(context, reader) as transport:
                for _ in range(1_000):
                    started = time.perf_counter()
                    transport.transmit(select)
                    roundtrips.append((time.perf_counter() - started) * 1000)
    finally:
        virtual.remove()
        for gate in gates:
            gate.journal.close()
    return {
        "taps": len(durations),
        "tap_to_decision_ms_p50": round(statistics.median(durations), 3),
        "tap_to_decision_ms_p99": round(percentile(durations, 0.99), 3),
        "apdus_per_tap": round(sum(apdus) / len(apdus), 3),
        "apdu_roundtrip_ms_p50": round(statistics.median(roundtrips), 4),
    }
