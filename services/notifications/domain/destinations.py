"""Where a webhook may be delivered: public addresses only, unless the operator allows a network.

A subscription's URL is the caller's choice, and the delivery log shows the status, error and
duration of each attempt: without this policy the service would be a port scanner of its own
network (databases, NATS, the cloud metadata endpoint). So a destination must be an `http` or
`https` URL without credentials, on port 80, 443 or 1024 and above, whose host is a globally
reachable unicast address — checked on the URL when a subscription is registered (an address
written in the URL, in any spelling) and on every address its name resolves to when a delivery
connects (a name can change what it resolves to: DNS rebinding). Operators name the internal
networks that department systems live in (`BANGFU_NOTIFICATIONS_WEBHOOK_ALLOWED_NETWORKS`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
# Below 1024 only the web's own ports: the others are SSH, SMTP, LDAP … of whoever is there.
WEB_PORTS = (80, 443)
FIRST_FREE_PORT = 1024

# A host made of digits, dots and hex is an IPv4 address in one of inet_aton's spellings
# (2130706433, 0177.0.0.1, 0x7f.1): no DNS name ends in a numeric label.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class DestinationRefused(ValueError):
    """A webhook destination the policy refuses; the message says why, never what answered."""


@dataclass(frozen=True)
class DestinationPolicy:
    """Public destinations, plus the networks the operator allows (department systems inside)."""

    allowed_networks: tuple[Network, ...] = ()

    def check_url(self, url: str) -> None:
        """Refuse a URL by its form: scheme, credentials, port, and an address written in it."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise DestinationRefused("only http and https URLs are delivered to")
        if parts.username is not None or parts.password is not None:
            raise DestinationRefused("a URL with credentials is refused: sign with the secret")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise DestinationRefused("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise DestinationRefused("the URL's port is not a number") from exc
        self.check_port(port)
        address = literal_address(host)
        if address is not None:
            self.check_address(address)

    def check_port(self, port: int) -> None:
        if port not in WEB_PORTS and port < FIRST_FREE_PORT:
            raise DestinationRefused(f"port {port} is refused: use 80, 443 or 1024 and above")

    def check_address(self, address: Address) -> None:
        """Refuse an address outside the public internet and the allowed networks."""
        if self.allowed(address):
            return
        raise DestinationRefused(
            f"{address} is not a public address (private, loopback, link-local, multicast or "
            "reserved) and no allowed network holds it"
        )

    def check_resolved(self, host: str, addresses: Iterable[Address]) -> None:
        """Refuse a name unless every address it resolves to is allowed (some must exist).

        The reason names neither the addresses nor whether the name resolved at all: the
        delivery log must not tell a caller what the service's own resolver knows.
        """
        found = list(addresses)
        if not found or not all(self.allowed(address) for address in found):
            raise DestinationRefused(
                f"refused: {host} does not resolve to a public address or an allowed network"
            )

    def allowed(self, address: Address) -> bool:
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        if any(c in network for c in candidates for network in self.allowed_networks):
            return True
        return all(_public(c) for c in candidates)


def literal_address(host: str) -> Address | None:
    """The address a host names literally (`[::1]`, `10.0.0.5`, `0x7f.1`), or None for a name."""
    bare = host.strip("[]").split("%", 1)[0].lower()  # an IPv6 zone (`fe80::1%eth0`) aside
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = bare.split(".")
    if _NUMERIC_HOST.fullmatch(bare) and _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError as exc:
            raise DestinationRefused(f"{host} is neither a name nor a valid address") from exc
    return None


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4), which is where it goes.

    NAT64's `64:ff9b::/96` needs no unwrapping: it lies in `::/8`, reserved, so refused.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address.sixtofour


def _public(address: Address) -> bool:
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )
