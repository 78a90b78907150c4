"""The finance report: one HTML page a finance officer opens in any browser, offline (inline
CSS and SVG, no script, no font or image fetched), and the same data as JSON for machines.

Both are written atomically (a temporary file renamed into place), so a reader never sees a
half-written report, and a re-run replaces them.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from reconciliation.nightly.taxonomy import UNSETTLED, AgeBucket, BreakType, age_bucket

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1b1f24}
h1{font-size:1.6rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}
.muted{color:#57606a}.ok{color:#1a7f37}.bad{color:#cf222e}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.75rem 1rem;min-width:10rem}
.card b{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border-bottom:1px solid #d8dee4;padding:.3rem .5rem;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
svg text{font-size:11px;fill:#1b1f24}
"""

SETTLEMENT_HEADERS = [
    "Owner",
    "Kind",
    "Transactions",
    "Gross",
    "Fees",
    "Refunds",
    "Carried in",
    "Net",
    "Payout",
]
BREAK_HEADERS = [
    "Type",
    "Status",
    "Age",
    "First seen",
    "Check",
    "Concerns",
    "Reference",
    "Ledger",
    "External",
    "Detail",
]


def rupiah(amount: int | None) -> str:
    return "" if amount is None else f"Rp {amount:,}".replace(",", ".")


def _bars(title: str, items: list[tuple[str, int]], money: bool = False) -> str:
    """A horizontal bar chart as inline SVG."""
    if not items:
        return f'<p class="muted">{escape(title)}: nothing to show.</p>'
    width, row, label = 640, 22, 250
    top = max(v for _, v in items) or 1
    height = row * len(items) + 10
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, value) in enumerate(items):
        y = i * row + 4
        bar = int((width - label - 110) * value / top)
        text = rupiah(value) if money else str(value)
        parts.append(
            f'<text x="0" y="{y + 13}">{escape(name[:40])}</text>'
            f'<rect x="{label}" y="{y}" width="{max(bar, 1)}" height="16" fill="#0969da"/>'
            f'<text x="{label + bar + 6}" y="{y + 13}">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="n">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(str(c))}</td>' if i in numeric else f"<td>{escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any]) -> str:
    day = data["business_date"]
    breaks = data["breaks"]
    unsettled = [b for b in breaks if b["status"] in {s.value for s in UNSETTLED}]
    settlement = data.get("settlement", [])
    verdict = (
        '<p class="ok">Everything agrees.</p>'
        if not unsettled
        else f'<p class="bad">{len(unsettled)} break(s) need attention.</p>'
    )
    by_type = Counter(b["type"] for b in unsettled)
    by_age = Counter(age_bucket(b["age_days"]).value for b in unsettled)
    by_status = Counter(b["status"] for b in breaks)
    payouts = sorted(
        ((s["name"], s["payout"]) for s in settlement if s["payout"] > 0), key=lambda x: -x[1]
    )[:20]
    totals = {
        "gross": sum(s["gross"] for s in settlement),
        "fees": sum(s["fees"] for s in settlement),
        "refunds": sum(s["refunds"] for s in settlement),
        "payout": sum(s["payout"] for s in settlement),
    }
    cards = "".join(
        f'<div class="card"><span class="muted">{escape(k)}</span><b>{escape(v)}</b></div>'
        for k, v in (
            ("Card transactions", f"{sum(s['transaction_count'] for s in settlement):,}"),
            ("Gross sales and fares", rupiah(totals["gross"])),
            ("Fees (MDR)", rupiah(totals["fees"])),
            ("Refunds", rupiah(totals["refunds"])),
            ("Payouts instructed", rupiah(totals["payout"])),
            ("Open breaks", str(len(unsettled))),
        )
    )
    seal = data.get("seal") or {}
    ages = [(b.value, by_age.get(b.value, 0)) for b in AgeBucket]
    break_rows = [
        [
            b["type"],
            b["status"],
            age_bucket(b["age_days"]).value,
            b["first_seen"],
            b["source"],
            b["terminal"] or b["merchant_id"] or b["card_id"] or "",
            b["reference"] or "",
            rupiah(b["ledger_amount"]),
            rupiah(b["external_amount"]),
            b["detail"],
        ]
        for b in breaks
    ]
    settle_rows = [
        [
            s["name"],
            s["kind"],
            s["transaction_count"],
            rupiah(s["gross"]),
            rupiah(s["fees"]),
            rupiah(s["refunds"]),
            rupiah(s["carried_in"]),
            rupiah(s["net"]),
            rupiah(s["payout"]),
        ]
        for s in settlement
        if s["transaction_count"] or s["net"] or s["refunds"]
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>JakartaOne nightly reconciliation {escape(day)}</title><style>{_CSS}</style></head>
<body><h1>Nightly reconciliation, {escape(day)}</h1>
<p class="muted">Run {escape(data["run_id"])}; ledger sealed through seq
{escape(str(seal.get("last_seq")))}, head {escape(str(seal.get("head_hash")))}</p>
{verdict}<div class="cards">{cards}</div>
<h2>Open breaks by type</h2>{_bars("Open breaks by type", sorted(by_type.items()))}
<h2>Open breaks by age</h2>{_bars("Open breaks by age", ages)}
<h2>Breaks by status</h2>{_bars("Breaks by status", sorted(by_status.items()))}
<h2>Largest payouts</h2>{_bars("Largest payouts", payouts, money=True)}
<h2>Settlement per merchant and operator</h2>
{_table(SETTLEMENT_HEADERS, settle_rows, {2, 3, 4, 5, 6, 7, 8})}
<h2>Breaks</h2>
{_table(BREAK_HEADERS, break_rows, {7, 8})}
<p class="muted">Break types: {escape(", ".join(t.value for t in BreakType))}.</p>
</body></html>
"""


def write_reports(out_dir: Path, day: str, data: dict[str, Any]) -> tuple[Path, Path]:
    json_path = out_dir / f"report-{day}.json"
    html_path = out_dir / f"report-{day}.html"
    for path, text in (
        (json_path, json.dumps(data, indent=2, sort_keys=True, default=str)),
        (html_path, render_html(data)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return json_path, html_path
