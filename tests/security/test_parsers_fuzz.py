"""Every parser of outside input, fuzzed: it returns a well-formed value or raises its own
named error, never anything else (no IndexError, OverflowError, RecursionError, ...).

Parsers: command and response APDUs (both directions: what a terminal sends a card, what
a card answers a terminal), the protocol's messages, certificates (bytes and JSON), a
gate's journal file, a card's state file, a gate's hotlist, and the configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card_reader.apdu import ApduFormatError, Command, Response
from card_reader.card_state import CardState, CardStateError, FileStore
from card_reader.certificate import (
    Certificate,
    CertificateFormatError,
    CertificateFormatReason,
    Journey,
    JourneyAction,
    TransactionKind,
    TransitMode,
)
from card_reader.errors import CardRefusedError, CardResponseInvalidError
from card_reader.hotlist import HotlistError, HotlistStore, HotlistUpdate
from card_reader.journal import Journal, JournalCorruptError
from card_reader.keys import SoftwareSam
from card_reader.messages import (
    CreditCommand,
    DebitCommand,
    MessageFormatError,
    PurseRecord,
    SelectInfo,
    TransactionResult,
    decode_log,
)
from card_reader.protocol import CardSession
from card_reader.transport import ApduChannel
from jakartaone.settings import Settings, SettingsError, load_settings
from tests.card.conftest import AUTH_MASTER, new_state
from tests.card.strategies import certificates
from tests.security.strategies import json_values, mutated_bytes, mutated_json, nested

FUZZ = settings(max_examples=100, deadline=None, database=None)
REASONS = {reason.value for reason in CertificateFormatReason}

SAMPLE = Certificate(
    card_serial=bytes.fromhex("4a4f000000001234"),
    counter=7,
    kind=TransactionKind.DEBIT,
    amount=3_500,
    balance_after=46_500,
    terminal_id="MRT-BLM-01",
    terminal_seq=12,
    timestamp=1_735_700_000,
    journey=Journey(TransitMode.MRT, JourneyAction.ENTRY, line=1, entry_station=6),
    mac=bytes(range(16)),
)


# APDUs ------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300) | mutated_bytes(bytes.fromhex("80300000 05 0102030405 00")))
def test_command_apdus_parse_or_fail_with_their_error(raw: bytes) -> None:
    """Promise: a command APDU parses into a Command that re-encodes to the same bytes,
    or raises ApduFormatError (the card answers 6700)."""
    try:
        command = Command.parse(raw)
    except ApduFormatError:
        return
    assert command.to_bytes() == raw or (command.ne == 256 and raw.endswith(b"\x00"))


@FUZZ
@given(st.binary(max_size=300))
def test_response_apdus_parse_or_fail_with_their_error(raw: bytes) -> None:
    """Promise: a response APDU parses (data and status word) or raises ApduFormatError."""
    try:
        response = Response.parse(raw)
    except ApduFormatError:
        assert len(raw) < 2
        return
    assert response.to_bytes() == raw


# Messages (both directions) ------------------------------------------------------------------

SELECT = SelectInfo(bytes(8), bytes(16), blocked=False, registered=True).to_bytes()
PURSE = PurseRecord(
    blocked=False,
    registered=False,
    balance=46_500,
    max_balance=2_000_000,
    counter=7,
    journey=SAMPLE.journey,
    last_certificate=SAMPLE,
).to_bytes()
DEBIT = DebitCommand(3_500, 12, 1_735_700_000, "MRT-BLM-01", SAMPLE.journey).to_bytes()
CREDIT = CreditCommand(50_000, 7, bytes(16), 13, 1_735_700_000, "TOPUP-1").to_bytes()
RESULT = TransactionResult(46_500, 7, bytes(16)).to_bytes()
LOG = bytes([len(SAMPLE.to_bytes())]) + SAMPLE.to_bytes()
MESSAGES: list[tuple[str, Any, bytes]] = [
    ("select", SelectInfo.from_bytes, SELECT),
    ("purse", PurseRecord.from_bytes, PURSE),
    ("debit", DebitCommand.from_bytes, DEBIT),
    ("credit", CreditCommand.from_bytes, CREDIT),
    ("result", TransactionResult.from_bytes, RESULT),
    ("log", decode_log, LOG),
]


@pytest.mark.parametrize(("name", "parse", "valid"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_protocol_messages_parse_or_fail_with_a_reason(name: str, parse: Any, valid: bytes) -> None:
    """Promise: each message decoder (card side: DEBIT, CREDIT; terminal side: SELECT,
    purse record, transaction result, log) returns its value or MessageFormatError with a
    non-empty reason; a valid message round-trips."""
    parse(valid)

    @FUZZ
    @given(st.binary(max_size=200) | mutated_bytes(valid))
    def fuzz(raw: bytes) -> None:
        try:
            parsed = parse(raw)
        except MessageFormatError as error:
            assert error.reason and " " not in error.reason
            return
        if hasattr(parsed, "to_bytes"):
            assert parsed.to_bytes() == raw

    fuzz()


class HostileCard:
    """A transport whose card answers whatever hypothesis says, to the terminal."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers

    def transmit(self, apdu: bytes) -> bytes:
        return self.answers.pop(0) if self.answers else b"\x90\x00"


@FUZZ
@given(
    st.lists(
        st.binary(max_size=120)
        | mutated_bytes(SELECT + b"\x90\x00")
        | mutated_bytes(PURSE + bytes(8) + b"\x90\x00")
        | st.sampled_from([b"\x61\x10", b"\x6c\x05", b"\x6a\x82", b"\x69\x85"]),
        max_size=25,
    )
)
def test_a_terminal_survives_any_answer_from_a_card(answers: list[bytes]) -> None:
    """Promise: whatever a card (or something pretending to be one) answers, the terminal
    raises CardRefusedError or CardResponseInvalidError, never anything else."""
    session = CardSession(ApduChannel(HostileCard(answers)), SoftwareSam(AUTH_MASTER))
    try:
        session.select()
        session.authenticate()
        session.debit(amount=3_500, terminal_id="G-1", terminal_seq=1, timestamp=1, journey=None)
    except (CardRefusedError, CardResponseInvalidError):
        return


# Certificates ------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=120) | certificates().map(Certificate.to_bytes).flatmap(mutated_bytes))
def test_certificate_bytes_parse_or_fail_with_a_named_reason(raw: bytes) -> None:
    """Promise: certificate bytes give a Certificate that re-encodes exactly, or
    CertificateFormatError with one of the documented reasons."""
    try:
        cert = Certificate.from_bytes(raw)
    except CertificateFormatError as error:
        assert error.reason.value in REASONS
        return
    assert cert.to_bytes() == raw


@FUZZ
@given(
    json_values
    | mutated_json(SAMPLE.to_json())
    | mutated_json(SAMPLE.to_json()).map(lambda c: {**SAMPLE.to_json(), "journey": c})
)
def test_certificate_json_parses_or_fails_with_a_named_reason(data: Any) -> None:
    """Promise: any JSON value as a certificate (huge integers, floats, Infinity, booleans,
    look-alike text, nesting) gives a Certificate or CertificateFormatError with a reason;
    the error's text never holds the input."""
    try:
        cert = Certificate.from_json(data)
    except CertificateFormatError as error:
        assert error.reason.value in REASONS
        if isinstance(data, dict) and isinstance(data.get("card_serial"), str):
            assert data["card_serial"] not in str(error) or len(data["card_serial"]) < 4
        return
    assert Certificate.from_json(json.loads(json.dumps(cert.to_json()))) == cert


def test_deeply_nested_certificate_json_is_a_format_error() -> None:
    """Promise: nesting is no way around the named errors."""
    with pytest.raises(CertificateFormatError):
        Certificate.from_json({**SAMPLE.to_json(), "journey": nested(5_000)})


# A gate's journal --------------------------------------------------------------------------


def journal_line(record: Any) -> bytes:
    return checksummed(json.dumps(record, separators=(",", ":")).encode())


def checksummed(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


VALID_RECORDS = [
    {"type": "reserve", "through": 1000},
    {"type": "certificate", "cert": SAMPLE.to_json(), "forwarded": False},
    {"type": "batch", "batch_id": "b-1", "first": 0, "last": 0},
    {"type": "acked", "batch_id": "b-1", "posted": 1},
]


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    records=st.lists(
        st.sampled_from(VALID_RECORDS).flatmap(mutated_json) | json_values, max_size=4
    ),
    garbage=st.binary(max_size=60),
    where=st.integers(0, 4),
)
def test_a_journal_opens_or_is_refused_as_corrupt(
    tmp_path_factory: pytest.TempPathFactory, records: list[Any], garbage: bytes, where: int
) -> None:
    """Promise: a journal file with well-checksummed but hostile records, or raw garbage,
    opens (a torn tail cut off) or raises JournalCorruptError; nothing else."""
    directory = tmp_path_factory.mktemp("journal")
    lines = [journal_line(record) for record in records]
    lines.insert(min(where, len(lines)), garbage)
    (directory / "journal.log").write_bytes(b"".join(lines))
    try:
        journal = Journal(directory, "MRT-BLM-01")
    except JournalCorruptError:
        return
    journal.close()


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"reserve","through":Infinity}',
        b'{"type":"reserve","through":NaN}',
        b'{"type":"reserve","through":"12"}',
        b'{"type":"batch","batch_id":"b","first":1e300,"last":2}',
        b'{"type":"reserve","through":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"type":"reserve","through":1}'.replace(b"1", "\u0661".encode()),
        b"\xff\xfe{}",
    ],
    ids=["infinity", "nan", "string", "huge-float", "deep", "arabic-digit", "not-utf8"],
)
def test_journal_records_with_hostile_values_are_corruption(tmp_path: Path, payload: bytes) -> None:
    """Promise: Infinity, NaN, strings for numbers, deep nesting and non-UTF-8 in a
    checksummed record are corruption (JournalCorruptError), not an OverflowError or a
    RecursionError, and never a silently different number."""
    good = journal_line({"type": "reserve", "through": 1000})
    (tmp_path / "journal.log").write_bytes(checksummed(payload) + good)
    with pytest.raises(JournalCorruptError):
        Journal(tmp_path, "MRT-BLM-01")


# A card's state file and a gate's hotlist -----------------------------------------------------


@FUZZ
@given(mutated_json(new_state().to_json()) | json_values)
def test_card_state_parses_or_fails_with_its_code(data: Any) -> None:
    """Promise: a card state file (the virtual card's chip) loads or raises CardStateError."""
    try:
        CardState.from_json(data)
    except CardStateError as error:
        assert error.code
        return


@FUZZ
@given(
    mutated_json({"version": 3, "blocked": ["ab" * 32], "unblocked": [], "full": True})
    | json_values
)
def test_hotlist_answers_parse_or_fail_with_their_code(data: Any) -> None:
    """Promise: a hotlist answer from the network parses or raises HotlistError."""
    try:
        HotlistUpdate.from_json(data)
    except HotlistError as error:
        assert error.code.startswith("hotlist_")


@settings(max_examples=60, deadline=None, database=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_state_and_hotlist_files_load_or_fail_with_their_codes(raw: bytes) -> None:
    """Promise: a damaged card state file or hotlist file is refused by its named error."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "card.json").write_bytes(raw)
        with pytest.raises(CardStateError):
            FileStore(directory / "card.json").load()
        (directory / "hotlist.json").write_bytes(raw)
        with contextlib.suppress(HotlistError):
            HotlistStore(directory)


# Configuration ------------------------------------------------------------------------------

SETTING_VALUES = st.sampled_from(
    ["", "nan", "inf", "-inf", "-1", "0", "1e309", "9" * 400, "true", "０", "DEBUG", "debug"]
) | st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=30)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(Settings.model_fields)), SETTING_VALUES, max_size=4))
def test_configuration_loads_or_names_each_bad_variable(values: dict[str, str]) -> None:
    """Promise: any environment gives settings within their constraints, or SettingsError
    naming every bad JAKARTAONE_ variable, without repeating any value (it may be a key)."""
    environment = {f"JAKARTAONE_{name.upper()}": value for name, value in values.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JAKARTAONE_")}
    with mock.patch.dict(os.environ, {**clean, **environment}, clear=True):
        try:
            loaded = load_settings()
        except SettingsError as error:
            assert error.code == "setting_invalid" and error.problems
            assert set(error.problems) <= set(environment)
            for name in error.problems:
                if len(environment[name]) >= 6:
                    assert environment[name] not in str(error)
            return
    assert 0 < loaded.api_rate_per_second <= 1_000_000
    assert 1 <= loaded.api_rate_burst <= 1_000_000
    assert 0 <= loaded.api_key_cache_seconds <= 60
    assert loaded.log_level in ("DEBUG", "INFO", "WARNING", "ERROR")
    assert loaded.database_url.startswith(("sqlite", "postgresql"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JAKARTAONE_API_RATE_PER_SECOND", "nan"),
        ("JAKARTAONE_API_RATE_PER_SECOND", "0"),
        ("JAKARTAONE_API_RATE_BURST", "-5"),
        ("JAKARTAONE_API_KEY_CACHE_SECONDS", "inf"),
        ("JAKARTAONE_LOG_LEVEL", "LOUD"),
        ("JAKARTAONE_DATABASE_URL", "mysql://root:hunter2@db/x"),
        ("JAKARTAONE_DATABASE_URL", "not a url"),
    ],
)
def test_the_cli_refuses_a_bad_setting_by_name(variable: str, value: str) -> None:
    """Promise: `jakartaone` stops with the variable's name and rule, and no traceback."""
    from click.testing import CliRunner

    from jakartaone.cli import main

    result = CliRunner().invoke(main, ["ledger", "--help"], env={variable: value})
    assert result.exit_code == 1
    assert variable in result.output and "setting_invalid" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
