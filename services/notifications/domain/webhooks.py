"""Webhook rules: which subscription wants an event, how a delivery is signed, when to retry.

A delivery is signed with HMAC-SHA256 over `<timestamp>.<body>` using the subscription's
secret; the receiver recomputes it and rejects a stale timestamp (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.regions import region_in

DELIVERY_HEADER = "Bangfu-Webhook-Id"
TIMESTAMP_HEADER = "Bangfu-Webhook-Timestamp"
SIGNATURE_HEADER = "Bangfu-Webhook-Signature"
EVENT_TYPE_HEADER = "Bangfu-Event-Type"
SIGNATURE_VERSION = "v1"


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_signature(
    secret: str, *, timestamp: int, body: bytes, header: str, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp=timestamp, body=body)
    # A header may list several signatures (during a secret rotation), space-separated.
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: a random wait in [½, 1] × min(cap, base × 2^(attempt−1))."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True)
class Filter:
    """A subscription's filter: event-type patterns (`*` wildcards) and region prefixes."""

    event_types: tuple[str, ...]
    regions: tuple[str, ...]

    def wants(self, *, event_type: str, region: str) -> bool:
        """The type matches a pattern and the region lies under a prefix; no prefixes: nowhere."""
        if not any(fnmatchcase(event_type, pattern) for pattern in self.event_types):
            return False
        return region_in(region, self.regions)
