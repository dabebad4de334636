"""Where a webhook may be sent (no server-side request forgery): an https URL whose host
resolves only to public addresses, or to networks the operator allows
(FTSVC_WEBHOOK_ALLOWED_NETWORKS). Checked when an endpoint is registered and again at
each attempt, against the addresses the name resolves to then; the attempt connects to
the address that was checked (a name that resolves differently a moment later, DNS
rebinding, changes nothing)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpx

from core.errors import InvalidRequest
from core.settings import get_settings

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookUrlRefused(InvalidRequest):
    """The URL is not one the service sends webhooks to."""

    def __init__(self, message: str, code: str = "invalid_webhook_url") -> None:
        super().__init__(message, param="url", code=code)


@dataclass(frozen=True)
class CheckedTarget:
    """A URL whose host resolved to allowed addresses only: `address` is the one to
    connect to."""

    url: httpx.URL
    address: IPAddress

    def request_url(self) -> httpx.URL:
        """The URL with the checked address for host: nothing resolves the name again."""
        return self.url.copy_with(host=str(self.address))

    def host_header(self) -> str:
        host = self.url.host if ":" not in self.url.host else f"[{self.url.host}]"
        return host if self.url.port is None else f"{host}:{self.url.port}"


def is_allowed(address: IPAddress, allowed: Sequence[Network]) -> bool:
    """Public unicast addresses are; any other (loopback, RFC 1918, link-local with the
    cloud metadata service at 169.254.169.254, unique-local, shared, reserved, multicast,
    unspecified) only within an allowed network. An IPv4 address mapped into IPv6 is
    judged as itself."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


def parse(url: str) -> httpx.URL:
    """The URL, if it is an absolute http(s) URL the settings accept; refuses it otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebhookUrlRefused(f"url {url!r} is not a valid URL: {exc}") from exc
    schemes = ("https", "http") if get_settings().webhook_allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise WebhookUrlRefused(f"url must be an https URL (got scheme {parsed.scheme or 'none'!r})")
    if not parsed.host:
        raise WebhookUrlRefused(f"url {url!r} has no host")
    if parsed.userinfo:
        raise WebhookUrlRefused("url must not carry credentials (user:password@): sign-in is the signature's job")
    return parsed


def _resolve(url: httpx.URL) -> list[IPAddress]:
    try:
        return [ip_address(url.host)]
    except ValueError:
        pass
    port = url.port or DEFAULT_PORTS[url.scheme]
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        message = f"url host {url.host!r} does not resolve ({exc})"
        raise WebhookUrlRefused(message, code="webhook_url_unresolvable") from exc
    # Scope ids ("fe80::1%eth0") are not part of the address.
    return list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def check(url: str) -> CheckedTarget:
    """The URL and the address to send to, if every address its host resolves to is
    allowed; refuses it otherwise (a name with one private address among public ones
    too: which one a client would use is not ours to guess)."""
    parsed = parse(url)
    addresses = _resolve(parsed)
    allowed = get_settings().webhook_allowed_networks
    refused = [str(a) for a in addresses if not is_allowed(a, allowed)]
    if refused:
        raise WebhookUrlRefused(
            f"url host {parsed.host!r} resolves to {', '.join(refused)}: a loopback, private, link-local or "
            "otherwise non-public address, where webhooks are not sent (FTSVC_WEBHOOK_ALLOWED_NETWORKS "
            "allows networks)",
            code="webhook_url_not_allowed",
        )
    return CheckedTarget(parsed, addresses[0])
