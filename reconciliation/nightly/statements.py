"""Reading what the outside world sends: merchants' settlement reports and bank statements.

Every input is untrusted. Each rule broken raises `InputError` with its own code and the
file it concerns; the job then fails to run (exit code FAILED) before it settles anything.

Bank statements:
- ISO 20022 camt.053 XML, read with defusedxml: a document type declaration, an entity
  declaration or an external reference is refused (`xml_forbidden`), so external entities
  (XXE) and entity expansion ("billion laughs") never reach the parser's expansion. Each
  `Ntry` gives one entry: `Amt` (with `Ccy`, which must be IDR), `CdtDbtInd`, the booking
  date and the payout id from `NtryDtls/TxDtls/Refs/EndToEndId`.
- A simple CSV: `booking_date,end_to_end_id,amount,direction` (direction DBIT or CRDT).
Amounts are whole rupiah in ASCII digits, under 10^15: "150000" or "150000.00"; anything
else (exponents, signs, other scripts' digits, underscores) is `amount_invalid` (never
parsed through a float).

Merchant settlement reports (CSV), one or more files per merchant:
`merchant_id,business_date,terminal_code,terminal_seq,amount`. A row with a terminal_seq
is one transaction (matched one-to-one); a row with an empty terminal_seq is the
terminal's total for the day (matched one-to-many against all its transactions).
"""

from __future__ import annotations

import csv
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

CAMT_NAMESPACE = re.compile(r"^\{urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d+\}")
MAX_INPUT_BYTES = 256 * 1024 * 1024
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_RUPIAH = re.compile(r"([0-9]{1,15})(?:\.0{1,2})?")


class InputErrorCode(StrEnum):
    XML_FORBIDDEN = "xml_forbidden"  # DTD, entity declaration or external reference
    XML_MALFORMED = "xml_malformed"
    NOT_CAMT053 = "not_camt053"
    ENTRY_INCOMPLETE = "entry_incomplete"
    CURRENCY_NOT_IDR = "currency_not_idr"
    AMOUNT_INVALID = "amount_invalid"
    DIRECTION_INVALID = "direction_invalid"
    DATE_INVALID = "date_invalid"
    HEADER_INVALID = "header_invalid"
    ROW_INVALID = "row_invalid"  # a CSV row with too few or too many fields
    ID_INVALID = "id_invalid"
    INPUT_TOO_LARGE = "input_too_large"
    FILE_UNREADABLE = "file_unreadable"


class InputError(ValueError):
    def __init__(self, code: InputErrorCode, path: Path, detail: str = "") -> None:
        self.code = code
        self.path = path
        super().__init__(f"{code.value}: {path.name}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True, slots=True)
class StatementEntry:
    booking_date: str
    reference: str  # the end-to-end id: our payout id
    amount: int
    direction: str  # DBIT (money left the settlement account) or CRDT
    source: str  # file name


@dataclass(frozen=True, slots=True)
class ReportRow:
    merchant_id: str  # 32 hex digits
    business_date: str
    terminal_code: str
    terminal_seq: int | None  # None: the terminal's total for the day
    amount: int
    source: str


def _check_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(InputErrorCode.FILE_UNREADABLE, path, str(exc.strerror)) from None
    if size > MAX_INPUT_BYTES:
        raise InputError(InputErrorCode.INPUT_TOO_LARGE, path)


def rupiah(text: str, path: Path) -> int:
    # A pattern, not Decimal: Decimal reads "1e999999999" (a billion-digit int() that
    # stalls the job), "1_000" and other scripts' digits.
    match = _RUPIAH.fullmatch(text.strip())
    if match is None:
        raise InputError(InputErrorCode.AMOUNT_INVALID, path, text[:32])
    return int(match.group(1))


def _date(text: str, path: Path) -> str:
    text = text.strip()[:10]
    if not _DATE.fullmatch(text):
        raise InputError(InputErrorCode.DATE_INVALID, path, text)
    return text


def read_camt053(path: Path) -> list[StatementEntry]:
    _check_size(path)
    try:
        tree = parse_xml(str(path), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InputError(InputErrorCode.XML_FORBIDDEN, path, type(exc).__name__) from None
    except ParseError as exc:
        raise InputError(InputErrorCode.XML_MALFORMED, path, str(exc)[:80]) from None
    except LookupError as exc:  # the XML declaration names an encoding Python lacks
        raise InputError(InputErrorCode.XML_MALFORMED, path, str(exc)[:80]) from None
    root = tree.getroot()
    match = CAMT_NAMESPACE.match(root.tag)
    if match is None:
        raise InputError(InputErrorCode.NOT_CAMT053, path, root.tag[:80])
    ns = match.group(0)
    entries = []
    for entry in root.iter(f"{ns}Ntry"):
        amount = entry.find(f"{ns}Amt")
        direction = entry.findtext(f"{ns}CdtDbtInd")
        booked = entry.findtext(f"{ns}BookgDt/{ns}Dt") or entry.findtext(f"{ns}BookgDt/{ns}DtTm")
        reference = entry.findtext(f".//{ns}TxDtls/{ns}Refs/{ns}EndToEndId")
        if amount is None or amount.text is None or not direction or not booked or not reference:
            raise InputError(InputErrorCode.ENTRY_INCOMPLETE, path)
        if amount.get("Ccy") != "IDR":
            raise InputError(InputErrorCode.CURRENCY_NOT_IDR, path, str(amount.get("Ccy"))[:8])
        if direction not in ("DBIT", "CRDT"):
            raise InputError(InputErrorCode.DIRECTION_INVALID, path, direction[:8])
        entries.append(
            StatementEntry(
                _date(booked, path),
                reference.strip(),
                rupiah(amount.text, path),
                direction,
                path.name,
            )
        )
    return entries


def read_csv_statement(path: Path) -> list[StatementEntry]:
    rows = _csv_rows(path, ("booking_date", "end_to_end_id", "amount", "direction"))
    entries = []
    for row in rows:
        if row["direction"] not in ("DBIT", "CRDT"):
            raise InputError(InputErrorCode.DIRECTION_INVALID, path, row["direction"][:8])
        entries.append(
            StatementEntry(
                _date(row["booking_date"], path),
                row["end_to_end_id"].strip(),
                rupiah(row["amount"], path),
                row["direction"],
                path.name,
            )
        )
    return entries


def read_statement(path: Path) -> list[StatementEntry]:
    """A camt.053 (.xml) or CSV statement, by its suffix."""
    if path.suffix.lower() == ".xml":
        return read_camt053(path)
    return read_csv_statement(path)


def read_merchant_reports(directory: Path) -> list[ReportRow]:
    rows = []
    for path in sorted(directory.glob("*.csv")):
        for row in _csv_rows(
            path, ("merchant_id", "business_date", "terminal_code", "terminal_seq", "amount")
        ):
            try:
                merchant_text = row["merchant_id"].strip()
                if not merchant_text.isascii():  # int() would read fullwidth hex digits
                    raise ValueError(merchant_text)
                merchant = uuid.UUID(merchant_text).hex
            except ValueError:
                raise InputError(InputErrorCode.ID_INVALID, path, "merchant_id") from None
            seq = row["terminal_seq"].strip()
            if seq and not (seq.isascii() and seq.isdigit()):  # "²".isdigit() is True
                raise InputError(InputErrorCode.ID_INVALID, path, "terminal_seq")
            rows.append(
                ReportRow(
                    merchant,
                    _date(row["business_date"], path),
                    row["terminal_code"].strip(),
                    int(seq) if seq else None,
                    rupiah(row["amount"], path),
                    path.name,
                )
            )
    return rows


def _csv_rows(path: Path, header: tuple[str, ...]) -> list[dict[str, str]]:
    _check_size(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != header:
                raise InputError(InputErrorCode.HEADER_INVALID, path, ",".join(header))
            rows = []
            for row in reader:
                # DictReader fills a short row with None and keeps a long row's extra
                # fields under the key None: both are malformed, not values.
                if None in row or None in row.values():
                    raise InputError(InputErrorCode.ROW_INVALID, path, f"line {reader.line_num}")
                rows.append(dict(row))
            return rows
    except csv.Error as exc:  # a field past the reader's limit, a stray quote
        raise InputError(InputErrorCode.ROW_INVALID, path, str(exc)[:80]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(InputErrorCode.FILE_UNREADABLE, path, type(exc).__name__) from None
