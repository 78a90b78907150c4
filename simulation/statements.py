"""What the outside world sends the nightly job, generated to match the day, with a few
errors planted in it (each one a break the night must find, and nothing else):

Merchants' settlement reports (CSV, `merchant_id,business_date,terminal_code,terminal_seq,
amount`), made from each reporting merchant's own terminal journal: most list every sale
(one-to-one), some only their terminal's total for the day (one-to-many). Planted:
- one sale reported with Rp 1,000 more than the card paid (AMOUNT_MISMATCH);
- one sale listed twice (DUPLICATE_EXTERNAL);
- one sale the terminal never made (MISSING_IN_LEDGER);
- one recorded sale left out of its report (MISSING_IN_EXTERNAL).

The bank's statement (ISO 20022 camt.053), made from the payouts the night instructed, as
the bank booked them the next day. Planted:
- one payout paid Rp 500 short (AMOUNT_MISMATCH);
- one payout paid twice (DUPLICATE_EXTERNAL);
- one debit the back office never instructed (MISSING_IN_LEDGER).
(A payout missing from the statement is not a break yet on the day's own night: the bank
has until the next business day, and the nightly job reports it then.)
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from card_reader.certificate import Certificate
from simulation.city import Shop

REPORTING_SHARE = 0.4
TOTALS_SHARE = 0.25  # of reporting merchants: one total per terminal instead of each sale
REPORT_HEADER = ("merchant_id", "business_date", "terminal_code", "terminal_seq", "amount")
STATEMENT_HEADER = ("booking_date", "end_to_end_id", "amount", "direction")


def merchant_reports(
    shops: list[Shop],
    sales_by_shop: dict[str, list[Certificate]],
    day: date,
    out: Path,
    rng: random.Random,
) -> Counter[str]:
    """One CSV per reporting merchant in `out`, from the sales its terminal made; the
    planted errors counted by break type."""
    out.mkdir(parents=True, exist_ok=True)
    planted: Counter[str] = Counter()
    reporting = []
    for shop in shops:
        sales = sales_by_shop.get(shop.id, [])
        if shop.device is not None and sales and rng.random() < REPORTING_SHARE:
            reporting.append((shop, shop.device.code, sales))
    plant_in = [entry for entry in reporting if len(entry[2]) >= 3][:4]
    plants = dict(
        zip(
            (id(e[0]) for e in plant_in),
            ("AMOUNT_MISMATCH", "DUPLICATE_EXTERNAL", "MISSING_IN_LEDGER", "MISSING_IN_EXTERNAL"),
            strict=False,
        )
    )
    for shop, code, sales in reporting:
        rows: list[tuple[Any, ...]] = []
        plant = plants.get(id(shop))
        totals = plant is None and rng.random() < TOTALS_SHARE
        if totals:
            rows.append((shop.id, day.isoformat(), code, "", sum(c.amount for c in sales)))
        else:
            for cert in sorted(sales, key=lambda c: c.terminal_seq):
                rows.append((shop.id, day.isoformat(), code, cert.terminal_seq, cert.amount))
        if plant == "AMOUNT_MISMATCH":
            first = rows[0]
            rows[0] = (*first[:4], first[4] + 1_000)
        elif plant == "DUPLICATE_EXTERNAL":
            rows.append(rows[1])
        elif plant == "MISSING_IN_LEDGER":
            rows.append((shop.id, day.isoformat(), code, max(c.terminal_seq for c in sales) + 7,
                         25_000))  # fmt: skip
        elif plant == "MISSING_IN_EXTERNAL":
            rows.pop(len(rows) // 2)
        if plant is not None:
            planted[plant] += 1
        with (out / f"settlement-{shop.id}-{day.isoformat()}.csv").open(
            "w", newline="", encoding="utf-8"
        ) as f:
            writer = csv.writer(f)
            writer.writerow(REPORT_HEADER)
            writer.writerows(rows)
    return planted


def bank_statement(
    payouts: list[dict[str, Any]], day: date, path: Path, rng: random.Random
) -> Counter[str]:
    """A camt.053 statement of the settlement account: the bank's debits for `payouts`,
    booked the next day, with three planted errors (module docstring)."""
    planted: Counter[str] = Counter()
    booked = (day + timedelta(days=1)).isoformat()
    entries = []
    ordered = sorted(payouts, key=lambda p: str(p["id"]))
    for index, payout in enumerate(ordered):
        amount = int(payout["amount"])
        if index == 0 and len(ordered) >= 2:
            amount -= 500
            planted["AMOUNT_MISMATCH"] += 1
        entries.append((str(payout["id"]), amount))
        if index == 1:
            entries.append((str(payout["id"]), amount))
            planted["DUPLICATE_EXTERNAL"] += 1
    stray = f"{rng.getrandbits(128):032x}"
    entries.append((f"{stray[:8]}-{stray[8:12]}-{stray[12:16]}-{stray[16:20]}-{stray[20:]}",
                    75_000))  # fmt: skip
    planted["MISSING_IN_LEDGER"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_camt053(entries, booked), encoding="utf-8")
    return planted


def _camt053(entries: list[tuple[str, int]], booked: str) -> str:
    total = sum(amount for _, amount in entries)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">',
        "<BkToCstmrStmt>",
        f"<GrpHdr><MsgId>JO-SETTLEMENT-{booked}</MsgId><CreDtTm>{booked}T23:00:00+07:00"
        "</CreDtTm></GrpHdr>",
        f"<Stmt><Id>STMT-{booked}</Id><CreDtTm>{booked}T23:00:00+07:00</CreDtTm>",
        "<Acct><Id><Othr><Id>JAKARTAONE-SETTLEMENT</Id></Othr></Id><Ccy>IDR</Ccy></Acct>",
        f"<TxsSummry><TtlDbtNtries><NbOfNtries>{len(entries)}</NbOfNtries>"
        f"<Sum>{total}.00</Sum></TtlDbtNtries></TxsSummry>",
    ]
    for reference, amount in entries:
        lines.append(
            f'<Ntry><Amt Ccy="IDR">{amount}.00</Amt><CdtDbtInd>DBIT</CdtDbtInd>'
            f"<Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>{booked}</Dt></BookgDt>"
            f"<ValDt><Dt>{booked}</Dt></ValDt><NtryDtls><TxDtls><Refs>"
            f"<EndToEndId>{escape(reference)}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>"
        )
    lines += ["</Stmt>", "</BkToCstmrStmt>", "</Document>", ""]
    return "\n".join(lines)
