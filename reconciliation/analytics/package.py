"""The Frictionless Data Package (v2) that describes a release: `datapackage.json`.

One resource per table (its CSV file), each with a Table Schema: every field's title,
description, type and constraints, the unit of money fields (IDR), and the primary key.
The package itself records the disclosure rules, the differential-privacy budget when it
is on, and the day's ledger seal. Custom properties are namespaced `jakartaone:`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from reconciliation.analytics.config import ReleaseConfig
from reconciliation.analytics.dp import QueryBudget
from reconciliation.analytics.geography import MCC_GROUPS
from reconciliation.analytics.inputs import Seal
from reconciliation.analytics.publish import PUBLISHED, SUPPRESSED, PublishedTable
from reconciliation.analytics.tables import MeasureKind

PACKAGE_PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
SCHEMA_PROFILE = "https://datapackage.org/profiles/2.0/tableschema.json"


def disclosure_rules(config: ReleaseConfig) -> dict[str, Any]:
    return {
        "unit": "one card (linked within the day by a keyed pseudonym that is never published)",
        "min_cards_per_cell": config.min_cards,
        "sums": {
            "min_merchants": config.min_merchants,
            "dominance": {"top_n": config.dominance_top_n, "percent": config.dominance_percent},
            "applies_to": "spending sums (merchant and card dominance); loads, balances and "
            "transit fares (card dominance"
            + ("" if config.transit_operators_public else ", merchant rules too")
            + ")",
        },
        "count_rounding_base": config.count_rounding_base,
        "amount_rounding_idr": config.amount_rounding_idr,
        "complementary_suppression": "no published total and its published parts reveal a "
        "suppressed cell, or the sum of small suppressed cells, exactly (docs/privacy.md)",
        "suppressed_cells": f"status '{SUPPRESSED}', every statistic empty",
    }


def package_json(
    day: dt.date,
    tables: list[PublishedTable],
    paths: dict[str, tuple[str, str]],
    seal: Seal,
    config: ReleaseConfig,
    budget: list[QueryBudget],
) -> bytes:
    dp: dict[str, Any] | None = None
    if config.differential_privacy:
        dp = {
            "privacy_unit": "card-day",
            "epsilon": config.epsilon,
            "mechanism": "discrete Laplace (OpenDP calibration), pure epsilon-DP, basic "
            "composition over the queries below",
            "bounds": {
                "max_events_per_card_day": config.max_events_per_card_day,
                "max_amount_idr_per_event": config.max_amount_idr,
                "max_distance_m_per_ride": config.max_distance_m,
                "balance": "clipped to the top of its band",
            },
            "expected_error": "error95: the noise is within +-error95 with 95 % probability "
            "for each cell, before rounding",
            "queries": [
                {
                    "table": q.table,
                    "statistic": q.statistic,
                    "cells": q.cells,
                    "epsilon": q.epsilon,
                    "l1_sensitivity": q.sensitivity,
                    "scale": q.scale,
                    "error95": q.error95,
                }
                for q in budget
            ],
        }
    resources = []
    for t in tables:
        csv_path, parquet_path = paths[t.spec.name]
        resources.append(
            {
                "name": t.spec.name,
                "type": "table",
                "title": t.spec.title,
                "description": t.spec.description,
                "path": csv_path,
                "scheme": "file",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "jakartaone:parquet": parquet_path,
                "schema": _schema(t, config),
            }
        )
    package: dict[str, Any] = {
        "$schema": PACKAGE_PROFILE,
        "name": f"jakartaone-analytics-{day.isoformat()}",
        "title": f"JakartaOne anonymized spending and travel statistics, {day.isoformat()}",
        "description": "Aggregates of one business day (WIB, UTC+7) of JakartaOne card "
        "transactions, published so that no cardholder can be singled out. Rows exist for "
        "every public key whatever the day held; a suppressed row has empty statistics. "
        "Counts are rounded to base "
        f"{config.count_rounding_base}, rupiah sums to Rp {config.amount_rounding_idr:,}. "
        "Money is in Indonesian rupiah (IDR), whole rupiah. Merchant category groups: "
        + "; ".join(
            f"{name}: MCC " + ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in r)
            for name, r in MCC_GROUPS
        )
        + ". Station positions are approximate.",
        "version": "1.0.0",
        "keywords": ["Jakarta", "transit", "spending", "statistical disclosure control"],
        "jakartaone:date": day.isoformat(),
        "jakartaone:disclosure": disclosure_rules(config),
        "jakartaone:differential_privacy": dp,
        "jakartaone:seal": {
            "block_no": seal.block_no,
            "last_seq": seal.last_seq,
            "block_hash": seal.block_hash,
            "meaning": "head of the ledger journal's hash chain after this day; any later "
            "rewrite of the day's books no longer matches it",
        },
        "resources": resources,
    }
    return (json.dumps(package, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _schema(t: PublishedTable, config: ReleaseConfig) -> dict[str, Any]:
    spec = t.spec
    fields: list[dict[str, Any]] = [
        {
            "name": "date",
            "type": "date",
            "title": "Date",
            "description": "Business day, WIB (UTC+7).",
            "constraints": {"required": True},
        }
    ]
    for d in spec.dims:
        fields.append(
            {
                "name": d.name,
                "type": d.type,
                "title": d.title,
                "description": d.description,
                "constraints": {"required": True},
            }
        )
    for d in spec.constant_fields:
        fields.append(
            {"name": d.name, "type": d.type, "title": d.title, "description": d.description}
        )
    fields.append(
        {
            "name": "status",
            "type": "string",
            "title": "Status",
            "description": f"{PUBLISHED}, or {SUPPRESSED} (statistics withheld to protect "
            "cardholders or merchants; see the package's jakartaone:disclosure).",
            "constraints": {"required": True, "enum": [PUBLISHED, SUPPRESSED]},
        }
    )
    base = config.count_rounding_base
    fields.append(
        {
            "name": "cards",
            "type": "integer",
            "title": "Distinct cards",
            "description": f"Distinct cards behind the row, rounded to base {base}.",
            "constraints": {"minimum": 0},
        }
    )
    for m in spec.measures:
        f: dict[str, Any] = {
            "name": m.name,
            "type": "integer",
            "title": m.title,
            "constraints": {"minimum": 0},
        }
        if m.kind is MeasureKind.COUNT:
            f["description"] = f"{m.description} Rounded to base {base}."
        elif m.kind is MeasureKind.MONEY:
            f["description"] = (
                f"{m.description} Rounded to Rp {config.amount_rounding_idr:,}; unit IDR."
            )
            f["jakartaone:unit"] = "IDR"
        else:
            f["description"] = f"{m.description} Unit km."
            f["jakartaone:unit"] = "km"
        fields.append(f)
    for ratio in spec.derived:
        unit = "m" if ratio.name.endswith("_m") else "IDR"
        fields.append(
            {
                "name": ratio.name,
                "type": "integer",
                "title": ratio.title,
                "description": ratio.description,
                "constraints": {"minimum": 0},
                "jakartaone:unit": unit,
            }
        )
    return {
        "$schema": SCHEMA_PROFILE,
        "fields": fields,
        "primaryKey": ["date", *(d.name for d in spec.dims)],
        "missingValues": [""],
    }
