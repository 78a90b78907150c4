"""`jakartaone demo`'s day (its real API server, gates, terminals, the night and the
analytics export), run small, then every output searched for the run's secrets and its
cards' serials in clear."""

from __future__ import annotations

import io
import re
import sqlite3
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
from rich.console import Console

from merchant_api.crypto import ApiSecrets
from merchant_api.services.cards import SERIAL_PURPOSE
from simulation.processes import RunSecrets
from simulation.run import Options, run

API_KEY = re.compile(rb"jo_[0-9a-f]{16}_[A-Za-z0-9_-]{20,64}")
WEBHOOK_SECRET = re.compile(rb"whsec_[A-Za-z0-9_-]{16,}")


def readable(path: Path) -> bytes:
    """A file as the bytes to search: a Parquet file's values as text (its pages are
    compressed), any other file as it is."""
    if path.suffix == ".parquet":
        return str(pq.read_table(path).to_pylist()).encode()
    return path.read_bytes()


def test_a_demo_day_writes_no_secret_and_no_serial(tmp_path: Path) -> None:
    """Promise: after a demo day, no output (the console, the server's and the demo's
    logs, the database, the night's reports, the merchants' reports, the bank statements,
    the analytics export) holds the API root key, a card master key, the gates' SAM key,
    the analytics release key, an API key, a webhook secret, or any card's serial (hex in
    any case, or its raw bytes)."""
    known = RunSecrets()
    console = io.StringIO()
    out = tmp_path / "out"
    with mock.patch("simulation.run.RunSecrets", return_value=known):
        outcome = run(
            Options(cards=30, seed=3, out=out, threads=4, pcsc=False),
            Console(file=console, width=120),
        )
    assert outcome.tally is not None
    database = sqlite3.connect(out / "jakartaone.sqlite3")
    sealed = [row[0] for row in database.execute("SELECT serial_sealed FROM cards")]
    database.close()
    api = ApiSecrets.from_hex(known.api_secret)
    serials = [api.unseal(SERIAL_PURPOSE, bytes(value)) for value in sealed]
    assert len(serials) >= 30

    texts = {"console": console.getvalue().encode()}
    texts.update(
        {str(path.relative_to(out)): readable(path) for path in out.rglob("*") if path.is_file()}
    )
    assert {"api.log", "demo.log", "jakartaone.sqlite3"} <= texts.keys()
    assert any(name.endswith(".parquet") for name in texts)
    needles: dict[str, list[bytes]] = {
        "root key": [known.api_secret.encode()],
        "certificate master key": [known.certificate_master.encode()],
        "load master key": [known.load_master.encode()],
        "release key": [known.release_key.encode()],
        "SAM key": [known.authentication_master.hex().encode(), known.authentication_master],
    }
    for serial in serials:
        needles[f"serial {serial.hex()[-4:]}"] = [serial.hex().encode(), serial]
    leaks = []
    for where, text in texts.items():
        lowered = text.lower()
        for name, forms in needles.items():
            if any(form.lower() in lowered for form in forms):
                leaks.append((name, where))
        if API_KEY.search(text):
            leaks.append(("an API key", where))
        if WEBHOOK_SECRET.search(text):
            leaks.append(("a webhook secret", where))
    assert not leaks, leaks
