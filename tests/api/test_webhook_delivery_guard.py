"""The webhook guard at delivery: an endpoint registered while private networks were
allowed (as if its name had been public then) is refused by a worker with production's
guard before any connection is made, and the refusal is recorded on the delivery. Allowed
deliveries go to the resolved address with the endpoint's own name in Host and TLS, and
never follow a redirect."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ledger import run_read, run_write
from merchant_api import schema
from merchant_api.context import ApiContext
from merchant_api.services.webhooks import deliver_due, delivery_client, emit
from tests.api.conftest import World, make_context
from tests.api.receiver import Receiver, certificate_for

d = schema.webhook_deliveries


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port on 127.0.0.1 that accepts connections but never answers: a connection the
    guard should have prevented shows up here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def register(world: World, url: str) -> dict[str, Any]:
    made = world.merchant.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]})
    endpoint: dict[str, Any] = world.merchant.ok(made, 201)
    return endpoint


def an_event(ctx: ApiContext, world: World) -> None:
    merchant = uuid.UUID(world.merchant_id)
    run_write(ctx.engine, lambda conn: emit(conn, merchant, "payout.paid", {"id": "po_1"}))


def deliver_once(ctx: ApiContext, client: httpx.Client | None = None) -> Any:
    with client or httpx.Client(timeout=2) as http:
        assert deliver_due(ctx, http) == 1
    return run_read(ctx.engine, lambda conn: conn.execute(sa.select(d)).one())


def production(ctx: ApiContext) -> ApiContext:
    guarded = make_context(ctx.engine)
    guarded.webhook_allow_private_networks = False
    return guarded


def assert_never_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_a_literal_private_address_is_refused_for_good(
    world: World, ctx: ApiContext, listener: socket.socket
) -> None:
    register(world, f"https://127.0.0.1:{listener.getsockname()[1]}/hooks")
    an_event(ctx, world)
    row = deliver_once(production(ctx))
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "webhook_url_not_public")
    assert row.last_status_code is None
    assert_never_connected(listener)


def test_a_name_that_now_resolves_privately_is_refused_and_retried(
    world: World, ctx: ApiContext, listener: socket.socket
) -> None:
    """DNS rebinding: the name was accepted at registration; at delivery it resolves to
    127.0.0.1. The attempt is refused and retried later, since records change."""
    register(world, f"https://localhost:{listener.getsockname()[1]}/hooks")
    an_event(ctx, world)
    before = run_read(ctx.engine, lambda conn: conn.execute(sa.select(d)).one())
    row = deliver_once(production(ctx))
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "webhook_url_not_public")
    assert row.next_attempt_us > before.next_attempt_us
    assert_never_connected(listener)


def test_http_is_refused_at_delivery_once_private_networks_are_not_allowed(
    world: World, ctx: ApiContext, receiver: Receiver
) -> None:
    register(world, receiver.start())
    an_event(ctx, world)
    row = deliver_once(production(ctx))
    assert (row.status, row.last_error) == ("failed", "webhook_url_scheme_not_allowed")
    assert receiver.attempts == 0


def test_a_delivery_keeps_the_name_in_host(
    world: World, ctx: ApiContext, receiver: Receiver
) -> None:
    receiver.start()
    endpoint = register(world, f"http://localhost:{receiver.port}/hooks")
    receiver.secrets = [endpoint["secret"]]
    an_event(ctx, world)
    row = deliver_once(ctx)
    assert (row.status, row.last_status_code) == ("delivered", 204)
    assert [r["host"] for r in receiver.received] == [f"localhost:{receiver.port}"]


def test_tls_is_checked_against_the_name_while_connecting_to_the_address(
    world: World, ctx: ApiContext, receiver: Receiver, tmp_path: Path
) -> None:
    """The certificate names `localhost` only; the connection goes to 127.0.0.1. It
    verifies only because the TLS server name stays the endpoint's name."""
    certificate, key = certificate_for("localhost", tmp_path)
    receiver.start(tls=(certificate, key))
    endpoint = register(world, f"https://localhost:{receiver.port}/hooks")
    receiver.secrets = [endpoint["secret"]]
    an_event(ctx, world)
    trusting = ssl.create_default_context(cafile=str(certificate))
    row = deliver_once(ctx, httpx.Client(timeout=5, verify=trusting))
    assert (row.status, row.last_status_code) == ("delivered", 204)
    assert len(receiver.received) == 1


def test_redirects_are_not_followed(
    world: World, ctx: ApiContext, receiver: Receiver, listener: socket.socket
) -> None:
    receiver.start()
    receiver.redirect_to = f"http://127.0.0.1:{listener.getsockname()[1]}/internal"
    endpoint = register(world, f"http://127.0.0.1:{receiver.port}/hooks")
    receiver.secrets = [endpoint["secret"]]
    an_event(ctx, world)
    # Even a client built to follow redirects does not, for a webhook.
    row = deliver_once(ctx, httpx.Client(timeout=2, follow_redirects=True))
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 307)
    assert receiver.attempts == 1
    assert_never_connected(listener)


def test_the_delivery_client_ignores_proxies_and_credentials_from_the_environment(
    world: World, ctx: ApiContext, receiver: Receiver, listener: socket.socket,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A proxy would connect where the guard did not look, and ~/.netrc credentials
    would reach the merchant: the worker's client takes neither from the environment."""
    receiver.start()
    endpoint = register(world, f"http://127.0.0.1:{receiver.port}/hooks")
    receiver.secrets = [endpoint["secret"]]
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(variable, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login ops password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    an_event(ctx, world)
    row = deliver_once(ctx, delivery_client(ctx))
    assert (row.status, row.last_status_code) == ("delivered", 204)
    assert [r.get("authorization") for r in receiver.received] == [None]
    assert_never_connected(listener)
