"""Where webhooks may be sent: the guard against server-side request forgery.

A merchant names the URL, and the back office POSTs to it from inside its own network.
Without this guard a merchant could aim deliveries at the back office itself (127.0.0.1,
the PostgreSQL port), the private network (10.x, 192.168.x), or the cloud's metadata
service (169.254.169.254) and learn from the recorded status codes what answers there.

Guarantees (unless `allow_private_networks`, which only tests and local set-ups turn on):
- A webhook URL is `https`, names a host, and carries no user name or password.
- No webhook request is ever sent to an address that is not public (`is_public`): not at
  registration (a literal address, or a name that resolves to one, is refused) and not at
  delivery, where the name is resolved again (DNS can change after registration: DNS
  rebinding), every address it resolves to is checked, and the connection is made to the
  checked address itself, not to a second resolution of the name. The Host header and the
  TLS server name (SNI, and so the certificate check) stay the original name.

Each broken rule has its own code (docs/api.md, "Webhooks"):
- `webhook_url_scheme_not_allowed`: not https (http too while private networks are allowed).
- `webhook_url_credentials_not_allowed`: user:password@ in the URL.
- `webhook_url_not_public`: the host is, or resolves to, an address that is not public.
- `webhook_host_unresolvable` (delivery only): the name does not resolve now. A name that
  does not resolve at registration is accepted; delivery decides, and retries.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from merchant_api.errors import ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]

HOST_UNRESOLVABLE = "webhook_host_unresolvable"
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class WebhookUrlError(Exception):
    """A webhook URL the guard refuses. `permanent` is true when the URL's text alone
    decides it (scheme, credentials, a literal address): retrying can never succeed.
    A refusal that came from resolving a name may clear when the name's records change."""

    def __init__(self, code: str, detail: str, *, permanent: bool) -> None:
        self.code = code
        self.detail = detail
        self.permanent = permanent
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: `url` names the checked address itself; `host_header` and
    `server_name` keep the merchant's name for HTTP routing and the TLS certificate."""

    url: httpx.URL
    host_header: str
    server_name: str


def is_public(address: IPAddress) -> bool:
    """Whether `address` is on the public internet.

    The one place the rule lives: registration and delivery both call it. Every test is
    kept, though several overlap, because the standard library's special-purpose lists
    differ between Python versions; an address must pass all of them. An IPv4-mapped IPv6
    address (::ffff:a.b.c.d) is judged as the IPv4 address it is; a NAT64, 6to4 or Teredo
    address must pass both as itself and as the IPv4 address it leads to.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # The operating system connects to the IPv4 address itself.
            return is_public(address.ipv4_mapped)
        tunnelled = _tunnelled_ipv4(address)
        if tunnelled is not None and not is_public(tunnelled):
            return False
        if address.is_site_local:
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64, 6to4 or Teredo address leads to, if it is one."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def parse(url: str, allow_private_networks: bool) -> httpx.URL:
    """The URL as the HTTP client will read it, or `WebhookUrlError` for the rules its
    text alone decides. The client's own parser is used so that the guard and the request
    can never disagree about which host a URL names."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise WebhookUrlError(
            ErrorCode.REQUEST_INVALID, "url is not a valid URL", permanent=True
        ) from None
    schemes = ("https", "http") if allow_private_networks else ("https",)
    if parsed.scheme not in schemes:
        raise WebhookUrlError(
            ErrorCode.WEBHOOK_URL_SCHEME_NOT_ALLOWED,
            f"webhook URLs must use {' or '.join(schemes)}",
            permanent=True,
        )
    if parsed.userinfo:
        raise WebhookUrlError(
            ErrorCode.WEBHOOK_URL_CREDENTIALS_NOT_ALLOWED,
            "webhook URLs must not carry a user name or password; verify the signature instead",
            permanent=True,
        )
    if not parsed.host:
        raise WebhookUrlError(ErrorCode.REQUEST_INVALID, "url names no host", permanent=True)
    return parsed


def literal_address(url: httpx.URL) -> IPAddress | None:
    try:
        return ipaddress.ip_address(url.host)
    except ValueError:
        return None


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the operating system resolves `host` to, in its order of preference;
    [] if it resolves to none."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def addresses_of(url: httpx.URL, resolver: Resolver) -> list[IPAddress]:
    literal = literal_address(url)
    if literal is not None:
        return [literal]
    port = url.port or (443 if url.scheme == "https" else 80)
    return resolver(url.raw_host.decode("ascii"), port)


def refuse_non_public(url: httpx.URL, addresses: list[IPAddress]) -> None:
    """Every address must be public: a name with one private record among public ones is
    refused too, since a client may pick any of them."""
    if all(is_public(address) for address in addresses):
        return
    literal = literal_address(url) is not None
    raise WebhookUrlError(
        ErrorCode.WEBHOOK_URL_NOT_PUBLIC,
        "the webhook host is "
        + ("" if literal else "a name that resolves to ")
        + "an address that is not on the public internet",
        permanent=literal,
    )


def check_registration(
    url: str, allow_private_networks: bool, resolver: Resolver = system_resolver
) -> None:
    """Refuse, at registration or update, a URL that could never be delivered to."""
    parsed = parse(url, allow_private_networks)
    if not allow_private_networks:
        refuse_non_public(parsed, addresses_of(parsed, resolver))


def delivery_target(
    url: str, allow_private_networks: bool, resolver: Resolver = system_resolver
) -> Target:
    """Resolve once, check every address, and pin the request to the first checked one."""
    parsed = parse(url, allow_private_networks)
    addresses = addresses_of(parsed, resolver)
    if not addresses:
        raise WebhookUrlError(
            HOST_UNRESOLVABLE, "the webhook host does not resolve", permanent=False
        )
    if not allow_private_networks:
        refuse_non_public(parsed, addresses)
    host_header = parsed.netloc.decode("ascii")
    return Target(
        url=parsed.copy_with(host=str(addresses[0])),
        host_header=host_header,
        server_name=parsed.raw_host.decode("ascii"),
    )
