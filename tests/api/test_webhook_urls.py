"""The webhook guard at registration and update: with JAKARTAONE_WEBHOOK_ALLOW_PRIVATE_NETWORKS
off (production), a URL that is not https, carries credentials, or names (or resolves to)
an address off the public internet is refused with its own code and nothing is stored.
No external DNS: hosts are IP literals, `localhost` (resolved from /etc/hosts) and a name
under `.invalid`, which never resolves (RFC 6761)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from jakartaone.settings import load_settings
from merchant_api.app import create_app
from merchant_api.context import ApiContext
from merchant_api.webhook_guard import (
    HOST_UNRESOLVABLE,
    IPAddress,
    WebhookUrlError,
    check_registration,
    delivery_target,
    is_public,
)
from tests.api.conftest import Caller, World, make_context

NOT_PUBLIC = [
    "https://127.0.0.1/hooks",
    "https://127.0.0.1:5432/",  # the database's port
    "https://10.1.2.3/hooks",
    "https://172.16.0.9/hooks",
    "https://192.168.1.20/hooks",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://100.64.0.1/hooks",  # carrier-grade NAT
    "https://224.0.0.1/hooks",  # multicast
    "https://240.0.0.1/hooks",  # reserved
    "https://0.0.0.0/hooks",
    "https://255.255.255.255/hooks",
    "https://[::1]/hooks",
    "https://[::]/hooks",
    "https://[fc00::1]/hooks",
    "https://[fd00:ec2::254]/hooks",  # a cloud's IPv6 metadata address
    "https://[fe80::1]/hooks",
    "https://[ff02::1]/hooks",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://[::ffff:169.254.169.254]/hooks",
    "https://[64:ff9b::a00:1]/hooks",  # NAT64 to 10.0.0.1
    "https://[2002:a00:1::1]/hooks",  # 6to4 from 10.0.0.1
    "https://localhost/hooks",
    "https://localhost:5432/",
    "https://127.1/hooks",  # short forms resolve to 127.0.0.1
    "https://2130706433/hooks",
]
REFUSED = [
    *[(url, "webhook_url_not_public") for url in NOT_PUBLIC],
    ("http://8.8.8.8/hooks", "webhook_url_scheme_not_allowed"),
    ("ftp://files.example.com/hooks", "webhook_url_scheme_not_allowed"),
    ("file:///etc/passwd", "webhook_url_scheme_not_allowed"),
    ("gopher://127.0.0.1:5432/", "webhook_url_scheme_not_allowed"),
    ("https://user:pass@8.8.8.8/hooks", "webhook_url_credentials_not_allowed"),
    ("https://token@8.8.8.8/hooks", "webhook_url_credentials_not_allowed"),
    # Parsers disagree on a backslash; the guard reads the URL as the client will.
    ("https://8.8.8.8\\@127.0.0.1/hooks", "webhook_url_credentials_not_allowed"),
]


@pytest.fixture
def guarded(world: World, ctx: ApiContext) -> Iterator[Caller]:
    """The world's merchant, talking to a server process with production's guard."""
    production = make_context(ctx.engine)
    production.webhook_allow_private_networks = False
    with TestClient(app=create_app(production)) as http:
        yield Caller(http, world.merchant.key)


def refused(answer: Any, code: str) -> None:
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (problem["code"], problem["type"]) == (code, f"urn:jakartaone:problem:{code}")


@pytest.mark.parametrize(("url", "code"), REFUSED)
def test_registration_refuses_each_kind_of_url(guarded: Caller, url: str, code: str) -> None:
    refused(guarded.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]}), code)
    assert guarded.ok(guarded.get("/v1/webhook-endpoints"))["data"] == []


def test_a_url_the_client_cannot_read_is_request_invalid_naming_url(guarded: Caller) -> None:
    for url in ("https:///hooks", "https://[::1/hooks"):
        answer = guarded.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]})
        assert (answer.status_code, answer.json()["code"]) == (400, "request_invalid"), url
        assert [error["field"] for error in answer.json()["errors"]] == ["url"]
    assert guarded.ok(guarded.get("/v1/webhook-endpoints"))["data"] == []


def test_public_and_not_yet_resolvable_hosts_are_accepted(guarded: Caller) -> None:
    for url in ("https://8.8.8.8/hooks", "https://[2606:4700::1111]/h", "https://toko.invalid/h"):
        made = guarded.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]})
        assert guarded.ok(made, 201)["url"] == url


def test_an_update_is_checked_like_a_registration(guarded: Caller) -> None:
    made = guarded.ok(
        guarded.post("/v1/webhook-endpoints", {"url": "https://8.8.8.8/h", "events": ["*"]}), 201
    )
    path = f"/v1/webhook-endpoints/{made['id']}"
    refused(guarded.post(path, {"url": "https://169.254.169.254/"}), "webhook_url_not_public")
    refused(guarded.post(path, {"url": "https://localhost/h"}), "webhook_url_not_public")
    refused(guarded.post(path, {"url": "http://8.8.4.4/h"}), "webhook_url_scheme_not_allowed")
    refused(
        guarded.post(path, {"url": "https://a:b@8.8.4.4/"}), "webhook_url_credentials_not_allowed"
    )
    assert guarded.ok(guarded.get(path))["url"] == "https://8.8.8.8/h"
    changed = guarded.post(path, {"url": "https://1.1.1.1/h", "status": "disabled"})
    assert guarded.ok(changed)["url"] == "https://1.1.1.1/h"


def test_the_setting_admits_local_receivers_and_http(world: World, guarded: Caller) -> None:
    url = "http://127.0.0.1:9/hooks"
    refused(
        guarded.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]}),
        "webhook_url_scheme_not_allowed",
    )
    # `world` talks to the tests' context, which allows private networks.
    made = world.merchant.post("/v1/webhook-endpoints", {"url": url, "events": ["*"]})
    assert world.merchant.ok(made, 201)["url"] == url
    # Still never another scheme, nor credentials.
    for bad, code in (
        ("ftp://127.0.0.1/h", "webhook_url_scheme_not_allowed"),
        ("http://u:p@127.0.0.1:9/h", "webhook_url_credentials_not_allowed"),
    ):
        refused(world.merchant.post("/v1/webhook-endpoints", {"url": bad, "events": ["*"]}), code)


def test_the_setting_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAKARTAONE_WEBHOOK_ALLOW_PRIVATE_NETWORKS", raising=False)
    assert load_settings().webhook_allow_private_networks is False
    monkeypatch.setenv("JAKARTAONE_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    assert load_settings().webhook_allow_private_networks is True


def test_a_name_with_any_private_record_is_refused_and_delivery_pins_the_first() -> None:
    public, private = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.7")

    def records(*found: IPAddress) -> Any:
        return lambda host, port: list(found)

    with pytest.raises(WebhookUrlError) as mixed:
        check_registration("https://toko.example/h", False, records(public, private))
    assert (mixed.value.code, mixed.value.permanent) == ("webhook_url_not_public", False)
    target = delivery_target("https://toko.example:8443/h?x=1", False, records(public))
    assert str(target.url) == "https://8.8.8.8:8443/h?x=1"
    assert (target.host_header, target.server_name) == ("toko.example:8443", "toko.example")
    with pytest.raises(WebhookUrlError) as gone:
        delivery_target("https://toko.example/h", False, records())
    assert (gone.value.code, gone.value.permanent) == (HOST_UNRESOLVABLE, False)


NON_PUBLIC_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
]


@given(st.sampled_from(NON_PUBLIC_NETWORKS), st.integers(min_value=0))
def test_no_address_in_a_non_public_network_passes(network: Any, offset: int) -> None:
    address = network[offset % network.num_addresses]
    assert not is_public(address)
    if address.version == 4:
        assert not is_public(ipaddress.IPv6Address(f"::ffff:{address}"))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_mapped_address_is_judged_as_the_ipv4_address_it_is(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    assert is_public(ipaddress.IPv6Address(f"::ffff:{v4}")) == is_public(v4)
