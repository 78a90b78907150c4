"""`jakartaone export` end to end: a small real day made through the merchant API (cards
issued and loaded, gate taps planned by the gates' own fare rules, purchases, a refund),
sealed by the ledger, then released by the command on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import frictionless
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy.engine import Engine

from card_reader.certificate import Certificate, Journey, serial_hash
from card_reader.fares import LINES, GateMode, TapOutcome, find_station, plan_tap
from jakartaone.cli import main
from jakartaone.export_command import ExitCode
from ledger import AccountKind, Ledger, MonotonicClock
from ledger.queries import balances_from_postings, posted_as_of
from ledger.schema import transfers
from merchant_api import schema
from merchant_api.app import create_app
from merchant_api.auth import Scope
from reconciliation.analytics.geography import REFERENCE_NETWORK
from reconciliation.analytics.journeys import network_line_names, transit_fields
from reconciliation.analytics.publish import round_to
from tests.api.cards import SimulatedCard
from tests.api.conftest import Caller, make_context, make_key
from tests.conftest import both_backends

DAY = dt.date(2026, 11, 20)
WIB = dt.timezone(dt.timedelta(hours=7))
KEY = bytes(range(100, 132))
CARDS = 24
SHOPS = {"Resto": "5812", "Grocer": "5411", "Pharma": "5912"}


def wib(hour: int, minute: int = 0, second: int = 0) -> int:
    """Unix seconds of a WIB time on DAY."""
    return int(
        dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, second, tzinfo=WIB).timestamp()
    )


@dataclasses.dataclass
class Rider:
    """A card with what the gates know of it: its journey record and last certificate."""

    card_id: str
    card: SimulatedCard
    holder: str | None
    journey: Journey | None = None
    last: Certificate | None = None


@dataclasses.dataclass
class Day:
    url: str
    engine: Engine
    riders: list[Rider]
    ledger: Ledger


class DayBuilder:
    """Onboards merchants, operators and terminals over HTTP and plays a day of card use."""

    def __init__(self, http: TestClient[Any], engine: Engine) -> None:
        self.issuer = Caller(http, make_key(engine, Scope.ISSUER_ADMIN))
        self.http = http
        self.keys: dict[str, Caller] = {}
        self.owner_of: dict[str, str] = {}
        self.seq = itertools.count(1)
        # Three shops of each kind, so that every spending cell has at least 3 merchants.
        places = [
            (f"{shop}-{n}", "merchant", mcc, "Jakarta Selatan", "Kebayoran Baru", False)
            for shop, mcc in SHOPS.items()
            for n in range(3)
        ]
        places += [
            ("Agent", "merchant", "5499", "Jakarta Pusat", "Menteng", True),
            ("TransJakarta", "operator", "4131", "Jakarta Timur", "Cakung", False),
            ("MRT Jakarta", "operator", "4111", "Jakarta Pusat", "Menteng", False),
        ]
        for name, kind, mcc, kota, kecamatan, agent in places:
            made = self.issuer.ok(
                self.issuer.post(
                    "/v1/merchants",
                    {
                        "kind": kind,
                        "name": name,
                        "mcc": mcc,
                        "kota": kota,
                        "kecamatan": kecamatan,
                        "mdr_bps": 50,
                        "load_agent": agent,
                        "payout_bank_account": "0123456789",
                    },
                ),
                201,
            )
            scope = "merchant" if kind == "merchant" else "gate-operator"
            key = self.issuer.ok(
                self.issuer.post("/v1/api-keys", {"scope": scope, "merchant_id": made["id"]}), 201
            )["key"]
            self.keys[name] = Caller(http, key)
            self.keys[made["id"]] = self.keys[name]
        terminals = [(f"POS-{name.upper()}", name, "pos", None, None) for name, *_ in places[:-2]]
        terminals += [
            ("TJ-BLOKM", "TransJakarta", "gate", "Koridor 1", "Blok M"),
            ("MRT-LEBAKBULUS", "MRT Jakarta", "gate", "North-South", "Lebak Bulus"),
            ("MRT-BLOKM", "MRT Jakarta", "gate", "North-South", "Blok M"),
        ]
        ids = self.issuer.ok(self.issuer.get("/v1/merchants", limit=100))["data"]
        by_name = {m["name"]: m["id"] for m in ids}
        self.merchant_ids = by_name
        for code, owner, kind, line, station in terminals:
            body: dict[str, Any] = {
                "terminal_code": code,
                "merchant_id": by_name[owner],
                "kind": kind,
            }
            if line:
                body |= {"line": line, "station": station}
            self.issuer.ok(self.issuer.post("/v1/terminals", body), 201)
            self.owner_of[code] = owner

    def issue(self, registered: bool) -> Rider:
        card = SimulatedCard()
        body: dict[str, Any] = {"serial": card.serial_hex, "registered": registered}
        holder = f"kyc-{card.serial_hex[:10]}" if registered else None
        if holder:
            body["holder_reference"] = holder
        made = self.issuer.ok(self.issuer.post("/v1/cards", body), 201)
        return Rider(made["id"], card, holder)

    def load(self, rider: Rider, amount: int, agent: bool, at: int) -> None:
        caller = self.keys["Agent"] if agent else self.issuer
        body = {
            "card_id": rider.card_id,
            "amount": amount,
            "channel": "agent_cash" if agent else "bank_transfer",
            "card_counter": rider.card.counter,
        }
        load = caller.ok(caller.post("/v1/loads", body), 201)
        cert = rider.card.credit(
            amount, bytes.fromhex(load["cryptogram"]), "POS-AGENT", next(self.seq), timestamp=at
        )
        rider.last = cert
        caller.ok(caller.post(f"/v1/loads/{load['id']}/confirm", {"certificate": cert.to_json()}))

    def buy(self, rider: Rider, terminal: str, amount: int, at: int) -> dict[str, Any]:
        cert = rider.card.debit(amount, terminal, next(self.seq), timestamp=at)
        rider.last = cert
        caller = self.keys[self.owner_of[terminal]]
        return caller.ok(caller.post("/v1/card-transactions", cert.to_json()), 201)

    def tap(self, rider: Rider, terminal: str, line: str, station: str, mode: GateMode, at: int):
        ln, st_ = find_station(line, station)
        plan = plan_tap(
            ln,
            st_,
            mode,
            balance=rider.card.balance,
            journey=rider.journey,
            last=rider.last,
            now=at,
        )
        assert plan.outcome is TapOutcome.CHARGE, plan
        cert = rider.card.debit(plan.amount, terminal, next(self.seq), at, plan.journey)
        rider.journey, rider.last = plan.journey, cert
        caller = self.keys[self.owner_of[terminal]]
        return caller.ok(caller.post("/v1/card-transactions", cert.to_json()), 201)


def day_clock() -> MonotonicClock:
    """The ledger's clock runs on DAY (from 05:00 WIB, a second per call)."""
    ticks = itertools.count(wib(5) * 1_000_000, 1_000_000)
    return MonotonicClock(lambda: next(ticks))


def build_day(url: str, engine: Engine) -> Day:
    ctx = make_context(engine)
    ctx.ledger = Ledger(engine, clock=day_clock())
    riders: list[Rider] = []
    with TestClient(app=create_app(ctx)) as http:
        b = DayBuilder(http, engine)
        for i in range(CARDS):
            rider = b.issue(registered=i % 2 == 0)
            riders.append(rider)
            b.load(rider, 150_000, agent=i % 4 == 0, at=wib(6, i))
            morning = wib(7, i)
            b.tap(rider, "MRT-LEBAKBULUS", "MRT-NS", "Lebak Bulus", GateMode.ENTRY, morning)
            b.tap(rider, "MRT-BLOKM", "MRT-NS", "Blok M", GateMode.EXIT, morning + 20 * 60)
            b.tap(rider, "TJ-BLOKM", "TJ-1", "Blok M", GateMode.FLAT, morning + 30 * 60)
            sale = b.buy(rider, f"POS-RESTO-{i % 3}", 25_000 + 1_000 * i, wib(12, i))
            b.buy(rider, f"POS-GROCER-{i % 3}", 40_000 + 500 * i, wib(18, i))
            b.buy(rider, f"POS-PHARMA-{i % 3}", 30_000, wib(19, i))
            if i == 0:
                b.keys["Resto-0"].ok(
                    b.keys["Resto-0"].post(
                        "/v1/refunds",
                        {"card_transaction_id": sale["id"], "amount": 5_000, "reason": "cold"},
                    ),
                    201,
                )
    return Day(url, engine, riders, ctx.ledger)


def export(day: Day, out: Path, *args: str, key: bytes | None = KEY) -> Result:
    env = {
        "JAKARTAONE_DATABASE_URL": day.url,
        "JAKARTAONE_RELEASE_KEY": key.hex() if key is not None else None,
    }
    return CliRunner().invoke(
        main, ["export", "--date", DAY.isoformat(), "--out", str(out), *args], env=env
    )


def table(out: Path, name: str) -> list[dict[str, str]]:
    path = out / "csv" / name / f"date={DAY.isoformat()}" / f"{name}.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def row(rows: list[dict[str, str]], **key: str) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == v for k, v in key.items())]
    assert len(found) == 1, key
    return found[0]


def truth(engine: Engine) -> dict[str, tuple[int, int]]:
    """(transactions, rupiah) of the posted card transactions, by kind, from the database."""
    ct = schema.card_transactions
    kind = sa.case(
        (ct.c.kind == "credit", "load"),
        (ct.c.terminal_code.like("MRT-%"), "mrt"),
        (ct.c.journey.is_not(None), "tj"),
        else_="purchase",
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(kind, sa.func.count(), sa.func.sum(ct.c.amount)).group_by(kind)
        ).all()
    found = {k: (int(n), int(total)) for k, n, total in rows}
    found["transit"] = (found["mrt"][0] + found["tj"][0], found["mrt"][1] + found["tj"][1])
    return found


def all_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


@both_backends
def test_export_releases_the_days_real_taps(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    day = build_day(database_url, engine)

    unsealed = export(day, tmp_path / "early")
    assert unsealed.exit_code == ExitCode.DAY_NOT_SEALED, unsealed.output
    assert "day_not_sealed" in unsealed.output and not (tmp_path / "early").exists()
    assert day.ledger.seal() is not None

    first = export(day, tmp_path / "first")
    assert first.exit_code == 0, first.output
    out = tmp_path / "first"

    # The package validates with the frictionless validator and carries the day's seal.
    report = frictionless.validate(str(out / "datapackage.json"))
    assert report.valid, report.flatten(["title", "note"])[:5]
    head = day.ledger.head()
    assert head is not None
    assert head.block_hash.hex().encode() in (out / "datapackage.json").read_bytes()

    # The totals are the posted card transactions, rounded as docs/privacy.md says.
    facts = truth(engine)
    totals = table(out, "daily_totals")
    for kind in ("purchase", "transit", "load"):
        published = row(totals, kind=kind)
        assert published["status"] == "published", kind
        n, rupiah = facts[kind]
        assert int(published["transactions"]) == round_to(n, 5), kind
        assert int(published["amount_idr"]) == round_to(rupiah, 1_000), kind
    assert facts["purchase"][0] == 3 * CARDS and facts["transit"][0] == 3 * CARDS
    # One refund of one card: below the threshold, hidden.
    assert row(totals, kind="refund")["status"] == "suppressed"

    # Travel: every rider went Lebak Bulus -> Blok M by MRT, then boarded TransJakarta at
    # Blok M inside the integrated-fare window, which the cap made cheaper. Each cell is
    # the truth rounded (the cells below all clear the thresholds on this day).
    expected = [
        ("od_rail", {"mode": "MRT", "origin": "Lebak Bulus", "destination": "Blok M"}, "trips"),
        ("ridership_line_day", {"line": "North-South", "direction": "board"}, "taps"),
        ("fare_cap_use", {"mode": "TJ"}, "capped_fares"),
        ("transfers", {"from_mode": "MRT", "to_mode": "TJ"}, "transfers"),
        ("fares_by_mode", {"mode": "MRT"}, "trips"),
    ]
    for name, key, column in expected:
        cell = row(table(out, name), **key)
        assert (cell["status"], int(cell[column])) == ("published", round_to(CARDS, 5)), name
    mrt = row(table(out, "fares_by_mode"), mode="MRT")
    assert int(mrt["fare_idr"]) == round_to(facts["mrt"][1], 1_000)
    lebak_bulus_to_blok_m = 7_000  # metres on the fare tables (card_reader.fares)
    assert int(mrt["distance_km"]) == (CARDS * lebak_bulus_to_blok_m + 500) // 1000
    pharmacy = row(table(out, "spending_by_mcc_group"), mcc_group="Health and pharmacy")
    assert int(pharmacy["amount_idr"]) == round_to(30_000 * CARDS, 1_000)
    mix = row(table(out, "card_mix"), registration="registered", population="active today")
    assert int(mix["cards"]) == round_to(CARDS // 2, 5)

    # Balances are the shadow purses at the end of the day: what the chips hold.
    with engine.connect() as conn:
        purses = [
            int(r.credits_posted - r.debits_posted)
            for r in conn.execute(sa.select(posted_as_of(AccountKind.CARD_PURSE, 10**12)))
        ]
    assert sorted(purses) == sorted(r.card.balance for r in day.riders)
    holding = row(table(out, "card_mix"), registration="unregistered", population="holding value")
    assert int(holding["cards"]) == round_to(sum(1 for b in purses[1::2] if b > 0), 5)

    # Nothing that names a card reaches the files: ids, serials, references, pseudonyms.
    blob = all_bytes(out)
    for rider in day.riders:
        card_id = rider.card_id
        pseudonym = hmac.new(KEY, card_id.encode(), hashlib.sha256).digest()[:16]
        needles = [
            card_id.encode(),
            uuid.UUID(card_id).hex.encode(),
            rider.card.serial_hex.encode(),
            serial_hash(rider.card.serial).encode(),
            pseudonym.hex().encode(),
            pseudonym[:8],
        ]
        needles += [rider.holder.encode()] if rider.holder else []
        assert not [n for n in needles if n in blob]

    # Byte-identical on a re-run into a fresh directory with the same key.
    again = export(day, tmp_path / "again")
    assert again.exit_code == 0, again.output
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file()
    )
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_export_refuses_without_a_usable_key_or_with_bad_input(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    day = Day(database_url, engine, [], Ledger(engine))
    cases: list[tuple[list[str], bytes | None, ExitCode, str]] = [
        ([], None, ExitCode.KEY, "key_missing"),
        ([], b"short", ExitCode.KEY, "key_too_short"),
        (["--epsilon", "1"], KEY, ExitCode.USAGE, "--epsilon applies only with --dp"),
        (["--dp", "--epsilon", "0"], KEY, ExitCode.USAGE, "epsilon"),
        (["--memory-limit", "lots"], KEY, ExitCode.USAGE, "config_invalid"),
    ]
    for args, key, code, says in cases:
        out = tmp_path / uuid.uuid4().hex
        result = export(day, out, *args, key=key)
        assert (result.exit_code, says in result.output) == (code, True), result.output
        assert not out.exists()
    bad_date = CliRunner().invoke(main, ["export", "--date", "20-11-2026", "--out", "x"])
    assert bad_date.exit_code == ExitCode.USAGE
    not_hex = CliRunner().invoke(
        main,
        ["export", "--date", DAY.isoformat(), "--out", str(tmp_path / "x")],
        env={"JAKARTAONE_DATABASE_URL": database_url, "JAKARTAONE_RELEASE_KEY": "zz" * 40},
    )
    assert not_hex.exit_code == ExitCode.KEY and "zz" not in not_hex.output
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.csv").write_text("x")
    assert export(day, taken).exit_code == ExitCode.OUTPUT_NOT_EMPTY
    # An empty ledger is a day with nothing in it: released, every cell empty. With
    # differential privacy (once here: it is the slow path) the release states its budget.
    empty = export(day, tmp_path / "empty", "--dp", "--epsilon", "2.5")
    assert empty.exit_code == 0, empty.output
    assert "epsilon 2.5" in empty.output
    totals = table(tmp_path / "empty", "daily_totals")
    assert {r["status"] for r in totals} == {"suppressed"}
    package = json.loads((tmp_path / "empty" / "datapackage.json").read_text(encoding="utf-8"))
    assert package["jakartaone:differential_privacy"]["epsilon"] == 2.5


@both_backends
def test_posted_as_of_agrees_with_the_journal(engine: Engine) -> None:
    """The streaming balance query and the ledger's own replay agree at every seq."""
    build_small_ledger(engine)
    with engine.connect() as conn:
        last = int(conn.execute(sa.select(sa.func.max(transfers.c.seq))).scalar_one())
        for seq in range(0, last + 1):
            replay = balances_from_postings(conn, None, as_of_seq=seq)
            for r in conn.execute(sa.select(posted_as_of(AccountKind.CARD_PURSE, seq))):
                b = replay.get(r.id)
                expected = (b.debits_posted, b.credits_posted) if b else (0, 0)
                assert (r.debits_posted, r.credits_posted) == expected, (seq, r.id)


def build_small_ledger(engine: Engine) -> list[Rider]:
    ctx = make_context(engine)
    riders = []
    with TestClient(app=create_app(ctx)) as http:
        b = DayBuilder(http, engine)
        for i in range(3):
            rider = b.issue(registered=False)
            b.load(rider, 20_000 + i, agent=False, at=wib(6, i))
            b.buy(rider, "POS-RESTO-0", 1_000 * (i + 1), wib(8, i))
            riders.append(rider)
    return riders


def test_every_card_line_maps_onto_the_reference_network() -> None:
    names = network_line_names(REFERENCE_NETWORK)
    assert sorted(names) == sorted(line.code for line in LINES.values())
    assert set(names.values()) == {line.name for line in REFERENCE_NETWORK.lines}


CARD_LINES = sorted(LINES)
LINE_NAMES = network_line_names(REFERENCE_NETWORK)


@st.composite
def tap_sequences(draw: st.DrawFn) -> list[tuple[str, int, GateMode, int]]:
    taps = []
    for _ in range(draw(st.integers(1, 8))):
        line = LINES[draw(st.sampled_from(CARD_LINES))]
        station = draw(st.integers(0, len(line.stations) - 1))
        if line.distance_based:
            mode = draw(st.sampled_from([GateMode.ENTRY, GateMode.EXIT]))
        else:
            mode = GateMode.FLAT
        taps.append((line.name, station, mode, draw(st.integers(0, 200 * 60))))
    return taps


@settings(max_examples=50, deadline=None)
@given(taps=tap_sequences(), start=st.integers(wib(4), wib(20)))
def test_fare_capped_agrees_with_the_gates_fare_rules(
    taps: list[tuple[str, int, GateMode, int]], start: int
) -> None:
    """The cap reduced a tap's fare exactly when the gate, planning the same tap with no
    integrated-fare window open, would have charged more."""
    journey: Journey | None = None
    now = start
    for line_name, index, mode, gap in taps:
        now += gap
        line = LINES[line_name]
        station = line.stations[index]
        plan = plan_tap(line, station, mode, balance=10**7, journey=journey, last=None, now=now)
        if plan.outcome is not TapOutcome.CHARGE:
            continue
        assert plan.journey is not None
        alone = dataclasses.replace(journey, chain_start=0, chain_paid=0) if journey else None
        tariff = plan_tap(line, station, mode, balance=10**7, journey=alone, last=None, now=now)
        fields = transit_fields(plan.journey, plan.amount, now, journey, LINE_NAMES, None, None)
        assert fields.fare_capped == (plan.fare < tariff.fare), (plan, tariff)
        assert fields.station == station.name
        journey = plan.journey


def test_a_stored_record_the_release_cannot_read_is_refused(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    build_small_ledger(engine)
    ledger = Ledger(engine, clock=day_clock())
    assert ledger.seal() is not None
    ct = schema.card_transactions
    with engine.begin() as conn:
        sale = conn.execute(sa.select(ct.c.id).where(ct.c.kind == "debit").limit(1)).scalar_one()
        conn.execute(sa.update(ct).where(ct.c.id == sale).values(journey='{"mode": "ferry"'))
    result = export(Day(database_url, engine, [], ledger), tmp_path / "out")
    assert result.exit_code == ExitCode.DATA_INVALID, result.output
    assert "record_invalid" in result.output and not (tmp_path / "out").exists()
