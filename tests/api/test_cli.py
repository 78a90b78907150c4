"""`jakartaone api-keys create`: the first issuer-admin key, printed once, stored hashed."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from jakartaone.cli import main
from jakartaone.migrate import upgrade
from ledger import make_engine
from merchant_api import schema
from merchant_api.crypto import hash_secret, split_api_key


def test_api_keys_create_prints_a_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    runner = CliRunner()
    made = runner.invoke(
        main,
        [
            "--database-url",
            url,
            "api-keys",
            "create",
            "--scope",
            "issuer-admin",
            "--name",
            "bootstrap",
        ],
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    prefix, secret = split_api_key(token) or ("", "")
    with engine.connect() as conn:
        row = conn.execute(sa.select(schema.api_keys)).one()
    assert (row.prefix, bytes(row.secret_hash), row.scope) == (
        prefix,
        hash_secret(secret),
        "issuer-admin",
    )
    assert secret.encode() not in Path(tmp_path / "db.sqlite3").read_bytes()
    refused = runner.invoke(
        main,
        [
            "--database-url",
            url,
            "api-keys",
            "create",
            "--scope",
            "merchant",
            "--owner",
            str(uuid.uuid4()),
        ],
    )
    assert refused.exit_code != 0 and "no key made" in refused.output
    engine.dispose()
