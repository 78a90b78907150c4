"""The nightly job's outside inputs, fuzzed: merchants' settlement report CSVs and bank
statements (camt.053 XML and CSV). Whatever a file holds, the reader returns its rows or
raises InputError with its code; never another exception, never a silently different
amount. External entities and entity expansion are refused before any expansion."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciliation.nightly.statements import (
    InputError,
    InputErrorCode,
    read_camt053,
    read_csv_statement,
    read_merchant_reports,
)
from tests.security.strategies import HOSTILE_TEXT, mutated_bytes

FUZZ = settings(max_examples=100, deadline=None, database=None)
NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
CODES = set(InputErrorCode)

REPORT = (
    "merchant_id,business_date,terminal_code,terminal_seq,amount\r\n"
    "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1,17,150000\r\n"
    "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1,,300000.00\r\n"
)
STATEMENT_CSV = "booking_date,end_to_end_id,amount,direction\r\n2026-11-28,PAY-1,150000,DBIT\r\n"


def camt(amount: str = "150000", currency: str = "IDR", direction: str = "DBIT") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="{NS}"><BkToCstmrStmt><Stmt>'
        f'<Ntry><Amt Ccy="{currency}">{amount}</Amt><CdtDbtInd>{direction}</CdtDbtInd>'
        "<BookgDt><Dt>2026-11-28</Dt></BookgDt><NtryDtls><TxDtls><Refs>"
        "<EndToEndId>PAY-1</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>"
        "</Stmt></BkToCstmrStmt></Document>"
    )


def read(kind: str, raw: bytes) -> list[object]:
    """Parse `raw` as a file of `kind`; InputError must carry a known code."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        if kind == "report":
            (directory / "m.csv").write_bytes(raw)
            reader = lambda: read_merchant_reports(directory)  # noqa: E731
        else:
            path = directory / ("s.xml" if kind == "camt" else "s.csv")
            path.write_bytes(raw)
            reader = (
                (lambda: read_camt053(path))
                if kind == "camt"
                else (lambda: read_csv_statement(path))
            )
        try:
            return list(reader())
        except InputError as error:
            assert error.code in CODES
            return []


def cell() -> st.SearchStrategy[str]:
    return st.sampled_from(
        [*HOSTILE_TEXT, "", "1e999999999", "NaN", "-1", "1_000", "١٢٣", "²", "0x10", "1.5"]
    ) | st.text(max_size=12)


@FUZZ
@given(
    mutated_bytes(REPORT.encode())
    | st.lists(st.lists(cell(), max_size=7), max_size=4)
    .map(lambda rows: REPORT.splitlines()[0] + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows))
    .map(str.encode)
)
def test_merchant_reports_parse_or_fail_with_a_code(raw: bytes) -> None:
    """Promise: a merchant report CSV of any content (short and long rows, hostile cells,
    non-UTF-8, huge exponents, other-script digits) gives rows with whole rupiah and
    ASCII sequence numbers, or InputError with its code."""
    for row in read("report", raw):
        assert isinstance(row.amount, int) and 0 <= row.amount < 10**15  # type: ignore[attr-defined]
        seq = row.terminal_seq  # type: ignore[attr-defined]
        assert seq is None or (isinstance(seq, int) and seq >= 0)


@FUZZ
@given(
    mutated_bytes(STATEMENT_CSV.encode())
    | st.lists(st.lists(cell(), max_size=5), max_size=4)
    .map(
        lambda rows: (
            STATEMENT_CSV.splitlines()[0] + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows)
        )
    )
    .map(str.encode)
)
def test_csv_statements_parse_or_fail_with_a_code(raw: bytes) -> None:
    """Promise: a CSV bank statement of any content parses or raises InputError."""
    for entry in read("csv", raw):
        assert isinstance(entry.amount, int) and 0 <= entry.amount < 10**15  # type: ignore[attr-defined]


@FUZZ
@given(
    mutated_bytes(camt().encode())
    | st.builds(camt, amount=cell(), currency=cell(), direction=cell()).map(
        lambda text: text.encode("utf-8", "surrogatepass")
    )
)
def test_camt053_statements_parse_or_fail_with_a_code(raw: bytes) -> None:
    """Promise: a camt.053 statement of any content parses or raises InputError."""
    for entry in read("camt", raw):
        assert isinstance(entry.amount, int) and 0 <= entry.amount < 10**15  # type: ignore[attr-defined]


def test_an_unknown_xml_encoding_is_malformed_input(tmp_path: Path) -> None:
    """Found by the fuzz test above: an encoding Python does not know is refused with a
    code, not a LookupError."""
    path = tmp_path / "statement.xml"
    path.write_bytes(camt().encode().replace(b'encoding="UTF-8"', b'encoding="U-F-8"', 1))
    assert b"U-F-8" in path.read_bytes()
    with pytest.raises(InputError) as refused:
        read_camt053(path)
    assert refused.value.code is InputErrorCode.XML_MALFORMED


@pytest.mark.parametrize(
    "amount",
    ["1e999999999", "1E+18", "١٥٠٠٠٠", "1_000", "+5", "-5", "5.", ".5", "10.50", "1e3", "NaN"],
)
def test_amounts_are_plain_whole_rupiah(tmp_path: Path, amount: str) -> None:
    """Promise: an amount is ASCII digits with at most a zero fraction ("150000",
    "150000.00"), under 10^15 rupiah; exponents (a billion-digit 1e999999999 would stall the
    job), other-script digits, underscores and signs are amount_invalid."""
    path = tmp_path / "s.xml"
    path.write_text(camt(amount=amount))
    with pytest.raises(InputError) as info:
        read_camt053(path)
    assert info.value.code is InputErrorCode.AMOUNT_INVALID


HOSTILE_XML = {
    "xxe-file": '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
    "xxe-http": '<!DOCTYPE d [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]><d>&x;</d>',
    "external-dtd": '<!DOCTYPE d SYSTEM "http://127.0.0.1:9/d.dtd"><d/>',
    "parameter-entity": '<!DOCTYPE d [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><d/>',
    "billion-laughs": "<!DOCTYPE l ["
    + '<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]><d>&j;</d>",
    "quadratic-blowup": f'<!DOCTYPE d [<!ENTITY a "{"x" * 50_000}">]><d>{"&a;" * 1000}</d>',
}


@pytest.mark.parametrize("document", HOSTILE_XML.values(), ids=HOSTILE_XML.keys())
def test_entities_and_external_references_are_refused(tmp_path: Path, document: str) -> None:
    """Promise: a statement with a DTD, an entity (external, parameter, nested: billion
    laughs, quadratic blow-up) or an external reference is refused as xml_forbidden before
    anything is expanded or fetched."""
    path = tmp_path / "s.xml"
    path.write_text('<?xml version="1.0"?>' + document)
    with pytest.raises(InputError) as info:
        read_camt053(path)
    assert info.value.code is InputErrorCode.XML_FORBIDDEN


@pytest.mark.parametrize(
    "row",
    [
        "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1",  # short
        "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1,1,5,extra",  # long
        "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1,²,5",  # superscript digit
        "0f8fad5b-d9cb-469f-a165-70867728950e,2026-11-28,POS-1,1," + "9" * 200_000,  # huge
    ],
    ids=["short-row", "long-row", "superscript-seq", "huge-field"],
)
def test_malformed_report_rows_are_refused_by_code(tmp_path: Path, row: str) -> None:
    """Promise: a row with too few or too many fields, a non-ASCII digit or a field past
    the CSV reader's limit is InputError, not a TypeError, ValueError or csv.Error."""
    (tmp_path / "m.csv").write_text(REPORT.splitlines()[0] + "\r\n" + row + "\r\n")
    with pytest.raises(InputError):
        read_merchant_reports(tmp_path)
