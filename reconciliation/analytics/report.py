"""The policymakers' report: one self-contained HTML page with inline SVG charts.

It needs no network: no scripts, no fonts, no images from anywhere (a Content-Security-Policy
forbids them), every chart is SVG written here. It shows only published values; suppressed
cells are drawn as such (grey, hatched), never estimated. Every text from the tables is
HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.dp import QueryBudget
from reconciliation.analytics.geography import MODE_NAMES, MODES, OTHER, UNKNOWN
from reconciliation.analytics.inputs import Seal
from reconciliation.analytics.publish import PUBLISHED, PublishedTable

MODE_COLOURS = {"TJ": "#1f77b4", "MRT": "#d62728", "KRL": "#2ca02c", "LRT": "#9467bd"}
_CSS = " ".join(
    [
        "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;",
        "background:#fff;max-width:1100px}",
        "h1{color:#0b3d66;margin-bottom:4px}",
        "h2{color:#0b3d66;border-bottom:2px solid #0b3d66;padding-bottom:4px;margin-top:36px}",
        ".kpis{display:flex;flex-wrap:wrap;gap:12px}",
        ".kpi{background:#eef4fa;border-radius:8px;padding:12px 16px;min-width:170px}",
        ".kpi b{display:block;font-size:22px;color:#0b3d66}.note{color:#555;font-size:13px}",
        "table{border-collapse:collapse;font-size:13px}",
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}",
        "th{background:#eef4fa}td.n{text-align:right}",
        "svg text{font-family:DejaVu Sans,Arial,sans-serif}",
    ]
)
_HATCH = (
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e6e6e6"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#bbb" stroke-width="2"/></pattern></defs>'
)


def _fmt(v: int | None) -> str:
    return "suppressed" if v is None else f"{v:,}"


def _rows(table: PublishedTable) -> list[dict[str, str | int | None]]:
    return table.records()


def report_html(
    day: dt.date,
    tables: Sequence[PublishedTable],
    seal: Seal,
    config: ReleaseConfig,
    budget: Sequence[QueryBudget],
) -> bytes:
    by = {t.spec.name: t for t in tables}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>JakartaOne statistics {day.isoformat()}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>JakartaOne: spending and travel, {escape(day.strftime('%A %d %B %Y'))}</h1>",
        '<p class="note">Anonymized aggregates of one business day (WIB). Cells with fewer '
        f"than {config.min_cards} distinct cards, or failing the merchant rules, are "
        f"suppressed; counts are rounded to base {config.count_rounding_base} and rupiah "
        f"sums to Rp {config.amount_rounding_idr:,}. Hatched grey marks suppressed values.</p>",
        _kpis(by["daily_totals"], by["fares_by_mode"]),
        "<h2>Spending by district</h2>",
        _district_chart(by["spending_by_kecamatan"]),
        _kota_table(by["spending_by_kota"]),
        "<h2>Hour by hour</h2>",
        _hourly_chart(by["ridership_line_hour"], by["spending_by_hour"]),
        "<h2>Origin and destination</h2>",
        _od_heatmap(by["od_rail"], "MRT", "MRT Jakarta, measured by tap-in and tap-out"),
        _od_heatmap(by["od_brt"], "TJ", "TransJakarta Koridor 1, destinations inferred"),
        "<h2>Mode shares</h2>",
        _mode_shares(by["fares_by_mode"], by["transfers"], by["fare_cap_use"]),
        "<h2>Cards, loads and balances</h2>",
        _cards_tables(by["card_mix"], by["loads_by_channel"], by["balances_by_band"]),
        "<h2>Privacy and integrity</h2>",
        _privacy(config, budget, seal),
        "</body></html>",
    ]
    return ("\n".join(parts) + "\n").encode("utf-8")


def _kpis(totals: PublishedTable, fares: PublishedTable) -> str:
    t = {r["kind"]: r for r in _rows(totals)}
    trips = [r["trips"] for r in _rows(fares)]
    rides = None if any(v is None for v in trips) else sum(int(v or 0) for v in trips)

    def money(kind: str) -> str:
        v = t[kind]["amount_idr"]
        return "suppressed" if v is None else f"Rp {int(v):,}"

    items = [
        ("Transit rides (boardings)", _fmt(rides)),
        ("Purchases", _fmt(_int(t["purchase"]["transactions"]))),
        ("Spent at merchants", money("purchase")),
        ("Transit fares", money("transit")),
        ("Loaded onto cards", money("load")),
        ("Cards that bought something", _fmt(_int(t["purchase"]["cards"]))),
    ]
    return (
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{escape(v)}</b>{escape(k)}</div>' for k, v in items)
        + "</div>"
    )


def _int(v: object) -> int | None:
    return None if v is None else int(str(v))


def _district_chart(kec: PublishedTable) -> str:
    rows = [r for r in _rows(kec) if r["kecamatan"] not in (UNKNOWN,)]
    published = sorted(
        (r for r in rows if r["status"] == PUBLISHED),
        key=lambda r: (-int(r["amount_idr"] or 0), str(r["kecamatan"])),
    )
    shown = published[:20]
    hidden = len(rows) - len(published)
    width, bar_h, left = 900, 20, 300
    top = max([int(r["amount_idr"] or 0) for r in shown] or [1]) or 1
    height = 30 + bar_h * max(len(shown), 1) + 30
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="Spending by kecamatan">{_HATCH}'
    ]
    for i, r in enumerate(shown):
        y = 20 + i * bar_h
        w = int((width - left - 120) * int(r["amount_idr"] or 0) / top)
        label = f"{r['kecamatan']} ({r['kota']})"
        svg.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{escape(label)}</text>"
            f'<rect x="{left}" y="{y + 2}" width="{max(w, 1)}" height="{bar_h - 4}" '
            f'fill="#0b3d66"/><text x="{left + w + 6}" y="{y + 14}" font-size="12">'
            f"Rp {int(r['amount_idr'] or 0):,}</text>"
        )
    if not shown:
        svg.append('<text x="10" y="40" font-size="14">Every kecamatan is suppressed.</text>')
    svg.append(
        f'<text x="10" y="{height - 8}" font-size="12" fill="#555">{hidden} of {len(rows)} '
        "district cells suppressed; the 20 largest published are shown.</text></svg>"
    )
    return "".join(svg)


def _kota_table(kota: PublishedTable) -> str:
    body = "".join(
        f"<tr><td>{escape(str(r['kota']))}</td><td class=n>{_fmt(_int(r['transactions']))}"
        f"</td><td class=n>{_fmt(_int(r['amount_idr']))}</td>"
        f"<td class=n>{_fmt(_int(r['avg_ticket_idr']))}</td></tr>"
        for r in _rows(kota)
    )
    return (
        "<table><tr><th>Kota</th><th>Transactions</th><th>Amount (IDR)</th>"
        f"<th>Average ticket (IDR)</th></tr>{body}</table>"
    )


def _hourly_chart(line_hour: PublishedTable, spend_hour: PublishedTable) -> str:
    width, height, left, bottom, top_pad = 900, 320, 60, 40, 20
    series: dict[str, list[int | None]] = {}
    for m in MODES:
        values: list[int | None] = []
        for h in range(24):
            cells = [
                r
                for r in _rows(line_hour)
                if r["mode"] == m and r["hour"] == h and r["direction"] == "board"
            ]
            if any(c["status"] != PUBLISHED for c in cells if c["line"] != OTHER):
                values.append(None)
            else:
                values.append(sum(int(c["taps"] or 0) for c in cells))
        series[m] = values
    top = max([v for vs in series.values() for v in vs if v is not None] or [1]) or 1
    plot_w, plot_h = width - left - 20, height - bottom - top_pad

    def xy(h: int, v: int) -> tuple[float, float]:
        return left + plot_w * h / 23, top_pad + plot_h * (1 - v / top)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="Boardings by hour and mode">',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" '
        f'y2="{top_pad + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#333"/>',
    ]
    for h in range(0, 24, 3):
        x, _ = xy(h, 0)
        svg.append(
            f'<text x="{x:.1f}" y="{height - 20}" font-size="11" text-anchor="middle">'
            f"{h:02d}:00</text>"
        )
    svg.append(f'<text x="4" y="{top_pad + 10}" font-size="11">{top:,}</text>')
    for i, (m, values) in enumerate(series.items()):
        segments: list[list[str]] = [[]]
        for h, v in enumerate(values):
            if v is None:
                segments.append([])
                continue
            x, y = xy(h, v)
            segments[-1].append(f"{x:.1f},{y:.1f}")
        for seg in segments:
            if len(seg) > 1:
                svg.append(
                    f'<polyline fill="none" stroke="{MODE_COLOURS[m]}" stroke-width="3" '
                    f'points="{" ".join(seg)}"/>'
                )
            elif seg:
                cx, cy = seg[0].split(",")
                svg.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{MODE_COLOURS[m]}"/>')
        svg.append(
            f'<rect x="{left + 20 + i * 200}" y="{height - 14}" width="14" height="10" '
            f'fill="{MODE_COLOURS[m]}"/><text x="{left + 40 + i * 200}" y="{height - 5}" '
            f'font-size="11">{escape(MODE_NAMES[m])}</text>'
        )
    svg.append("</svg>")
    spend = " ".join(f"<td class=n>{_fmt(_int(r['amount_idr']))}</td>" for r in _rows(spend_hour))
    hours = "".join(f"<th>{h:02d}</th>" for h in range(24))
    return (
        "<p class=note>Boardings per hour by mode (gaps: suppressed hours).</p>"
        + "".join(svg)
        + "<p class=note>Spending at merchants per hour (IDR).</p>"
        + f'<div style="overflow-x:auto"><table><tr>{hours}</tr><tr>{spend}</tr></table></div>'
    )


def _od_heatmap(od: PublishedTable, mode: str, caption: str) -> str:
    rows = [r for r in _rows(od) if r["mode"] == mode]
    names = [str(n) for n in dict.fromkeys(r["origin"] for r in rows)]
    names = [n for n in names if n not in (OTHER,)]
    cell, left, top_pad = 28, 170, 150
    size = len(names)
    width, height = left + cell * size + 20, top_pad + cell * size + 20
    value = {(r["origin"], r["destination"]): r for r in rows}
    top = max([int(r["trips"] or 0) for r in rows if r["status"] == PUBLISHED] or [1]) or 1
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(caption)}">{_HATCH}'
    ]
    for i, n in enumerate(names):
        svg.append(
            f'<text x="{left - 6}" y="{top_pad + i * cell + 18}" font-size="11" '
            f'text-anchor="end">{escape(n)}</text>'
            f'<text transform="translate({left + i * cell + 18},{top_pad - 6}) rotate(-60)" '
            f'font-size="11">{escape(n)}</text>'
        )
        for j, d in enumerate(names):
            r = value.get((n, d))
            x, y = left + j * cell, top_pad + i * cell
            if r is None or r["status"] != PUBLISHED:
                fill = "url(#hatch)"
                title = "suppressed"
            else:
                v = int(r["trips"] or 0)
                shade = int(235 - 200 * v / top)
                fill = f"rgb({shade},{shade + 10 if shade < 245 else 245},255)"
                title = f"{v:,} trips"
            svg.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                f"<title>{escape(n)} to {escape(d)}: {title}</title></rect>"
            )
    svg.append("</svg>")
    return f"<p class=note>{escape(caption)}: rows are origins, columns destinations.</p>" + (
        "".join(svg)
    )


def _mode_shares(fares: PublishedTable, transfers: PublishedTable, cap: PublishedTable) -> str:
    rows = _rows(fares)
    known = [(str(r["mode"]), int(r["trips"] or 0)) for r in rows if r["trips"] is not None]
    total = sum(v for _, v in known) or 1
    width, x = 900, 0.0
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="70" role="img" '
        'aria-label="Mode shares of boardings">'
    ]
    for m, v in known:
        w = width * v / total
        svg.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="40" fill="{MODE_COLOURS[m]}"/>'
        )
        if w > 60:
            svg.append(
                f'<text x="{x + 6:.1f}" y="25" fill="#fff" font-size="13">{escape(m)} '
                f"{100 * v / total:.0f}%</text>"
            )
        x += w
    svg.append("</svg>")
    body = "".join(
        f"<tr><td>{escape(MODE_NAMES[str(r['mode'])])}</td><td class=n>{_fmt(_int(r['trips']))}"
        f"</td><td class=n>{_fmt(_int(r['fare_idr']))}</td>"
        f"<td class=n>{_fmt(_int(r['avg_fare_idr']))}</td>"
        f"<td class=n>{_fmt(_int(r['avg_distance_m']))}</td>"
        f"<td>{escape(str(r['distance_basis']))}</td></tr>"
        for r in rows
    )
    tr = "".join(
        f"<tr><td>{escape(str(r['from_mode']))}</td><td>{escape(str(r['to_mode']))}</td>"
        f"<td class=n>{_fmt(_int(r['transfers']))}</td></tr>"
        for r in _rows(transfers)
        if r["status"] == PUBLISHED
    )
    capped = "".join(
        f"<tr><td>{escape(str(r['mode']))}</td><td class=n>{_fmt(_int(r['capped_fares']))}"
        "</td></tr>"
        for r in _rows(cap)
    )
    return (
        "<p class=note>Share of boardings by mode (published modes only).</p>"
        + "".join(svg)
        + "<table><tr><th>Mode</th><th>Boardings</th><th>Fares (IDR)</th><th>Average fare "
        "(IDR)</th><th>Average distance (m)</th><th>Distance basis</th></tr>"
        + body
        + "</table><p class=note>Transfers between modes (published pairs).</p>"
        + f"<table><tr><th>From</th><th>To</th><th>Transfers</th></tr>{tr}</table>"
        + "<p class=note>Fares reduced by the JakLingko integrated-fare cap.</p>"
        + f"<table><tr><th>Mode</th><th>Capped fares</th></tr>{capped}</table>"
    )


def _cards_tables(mix: PublishedTable, loads: PublishedTable, bands: PublishedTable) -> str:
    m = "".join(
        f"<tr><td>{escape(str(r['registration']))}</td><td>{escape(str(r['population']))}"
        f"</td><td class=n>{_fmt(_int(r['cards']))}</td></tr>"
        for r in _rows(mix)
    )
    ld = "".join(
        f"<tr><td>{escape(str(r['channel']))}</td><td class=n>{_fmt(_int(r['loads']))}</td>"
        f"<td class=n>{_fmt(_int(r['amount_idr']))}</td></tr>"
        for r in _rows(loads)
    )
    bd = "".join(
        f"<tr><td>{escape(str(r['registration']))}</td><td>{escape(str(r['band']))}</td>"
        f"<td class=n>{_fmt(_int(r['cards']))}</td><td class=n>{_fmt(_int(r['balance_idr']))}"
        "</td></tr>"
        for r in _rows(bands)
    )
    return (
        "<table><tr><th>Registration</th><th>Population</th><th>Cards</th></tr>"
        f"{m}</table><p class=note>Loads by channel.</p><table><tr><th>Channel</th>"
        f"<th>Loads</th><th>Amount (IDR)</th></tr>{ld}</table><p class=note>Balances held "
        "at the end of the day.</p><table><tr><th>Registration</th><th>Band (IDR)</th>"
        f"<th>Cards</th><th>Balance held (IDR)</th></tr>{bd}</table>"
    )


def _privacy(config: ReleaseConfig, budget: Sequence[QueryBudget], seal: Seal) -> str:
    dp = (
        f"<p>Differential privacy is on: epsilon {config.epsilon} per card-day for the whole "
        f"release, at most {config.max_events_per_card_day} transactions per card-day, "
        f"amounts clipped at Rp {config.max_amount_idr:,}. Largest expected error (95 %): "
        f"{max((q.error95 for q in budget), default=0):,}.</p>"
        if config.differential_privacy
        else "<p>Differential privacy is off for this release.</p>"
    )
    return (
        f"<p>A cell is published only with at least {config.min_cards} distinct cards; sums "
        f"also need {config.min_merchants} merchants and pass the "
        f"({config.dominance_top_n}, {config.dominance_percent}%) dominance rule; totals "
        "never reveal a suppressed cell. Card numbers never leave the system.</p>"
        + dp
        + "<p>Ledger seal for the day (hash-chain head): block "
        f"{seal.block_no}, last sequence {seal.last_seq}, hash "
        f"<code>{escape(seal.block_hash)}</code>.</p>"
    )
