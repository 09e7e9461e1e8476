"""JWT bearer authentication: `scope` and `regions` claims, enforced by a FastAPI dependency.

Production validates tokens against the identity provider's JWKS; the embedded default signs
them with a local key under `.bangfu/` (`bangfu token`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

import anyio
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import Problem
from shared.regions import normalize_prefix, region_in
from shared.settings import SuiteSettings

ALGORITHMS = ["ES256", "RS256", "EdDSA"]
_CACHE_SIZE = 10_000
_bearer = HTTPBearer(auto_error=False, description="OAuth2 client-credentials access token")


@dataclass(frozen=True)
class Principal:
    """The calling department client: who it is, what it may do, which regions it may touch."""

    client_id: str
    scopes: frozenset[str]
    regions: tuple[str, ...]

    def covers(self, region_code: str) -> bool:
        """Whether a household in `region_code` is inside this client's regions."""
        return region_in(region_code, self.regions)


class TokenVerifier:
    """Checks signature, expiry, issuer and audience, and reads the claims into a Principal."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        public_key: Any | None = None,
        jwks_url: str | None = None,
        jwks_refetch_seconds: float = 30,
    ):
        if (public_key is None) == (jwks_url is None):
            raise ValueError("give exactly one of public_key or jwks_url")
        self._issuer = issuer
        self._audience = audience
        self._public_key = public_key
        self._jwks = jwt.PyJWKClient(jwks_url) if jwks_url else None
        # An unknown `kid` refetches the JWKS at most once per interval: otherwise every
        # request with a made-up kid would make us fetch from the identity provider.
        self.jwks_refetch_seconds = jwks_refetch_seconds
        self._next_refetch = 0.0
        self._jwks_lock = threading.Lock()
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(cls, suite: SuiteSettings) -> TokenVerifier:
        if suite.auth_jwks_url:
            return cls(
                issuer=suite.auth_issuer,
                audience=suite.auth_audience,
                jwks_url=suite.auth_jwks_url,
                jwks_refetch_seconds=suite.auth_jwks_refetch_seconds,
            )
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        key = serialization.load_pem_public_key(suite.public_key_file.read_bytes())
        return cls(issuer=suite.auth_issuer, audience=suite.auth_audience, public_key=key)

    async def verify(self, token: str) -> Principal:
        """Raise jwt.InvalidTokenError (or a subclass) when the token is not acceptable.

        A token already verified is answered from a small cache until it expires: a client
        sends the same token with every request, and checking its signature costs ~1 ms.
        """
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._verified[token]
        principal, expires = await self._verify(token)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (principal, expires)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        if self._jwks is not None:
            # PyJWKClient fetches over blocking urllib; its cache makes this rare.
            key = await anyio.to_thread.run_sync(self._published_key, token)
        else:
            key = self._public_key
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=self._audience,
            issuer=self._issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
        principal = Principal(
            client_id=str(claims["sub"]),
            scopes=frozenset(_words(claims, "scope")),
            regions=_region_prefixes(claims),
        )
        return principal, float(claims["exp"])

    def _published_key(self, token: str) -> Any:
        """The identity provider's key named by the token's `kid` (runs in a worker thread)."""
        assert self._jwks is not None
        kid = str(jwt.get_unverified_header(token).get("kid"))
        with self._jwks_lock:
            # The cached set, fetched again when its lifespan ends.
            key = self._jwks.match_kid(self._jwks.get_signing_keys(), kid)
            if key is None and time.monotonic() >= self._next_refetch:
                self._next_refetch = time.monotonic() + self.jwks_refetch_seconds
                key = self._jwks.match_kid(self._jwks.get_signing_keys(refresh=True), kid)
        if key is None:
            raise jwt.PyJWKClientError(f"no key published by the identity provider has kid {kid!r}")
        return key.key


def _words(claims: dict[str, Any], name: str) -> list[str]:
    """A space-separated string claim (as `scope` is in RFC 8693) as its words; absent: none."""
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise jwt.InvalidTokenError(f"the {name} claim must be a space-separated string")
    return value.split()


def _region_prefixes(claims: dict[str, Any]) -> tuple[str, ...]:
    """The `regions` claim: a list of prefix strings, or one space-separated string of them.

    Anything else (a number, an object, a list of numbers) is refused rather than coerced:
    an object's keys or a number's digits must never pass for prefixes.
    """
    regions = claims.get("regions", [])
    if isinstance(regions, str):
        regions = _words(claims, "regions")
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise jwt.InvalidTokenError(
            "bad regions claim: a list of region prefixes or a space-separated string of them"
        )
    try:
        return tuple(normalize_prefix(r) for r in regions)
    except ValueError as exc:
        raise jwt.InvalidTokenError(f"bad regions claim: {exc}") from exc


def ensure_signing_key(private_file: Path, public_file: Path) -> None:
    """Create the embedded default's P-256 signing key pair once, safely under concurrency.

    Several services start at once and may all find no key: the private key appears by an
    atomic link, so only the first writer's key is ever seen, and never half written; the
    public key is derived from it and replaced atomically.
    """
    if not private_file.exists():
        private_file.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = private_file.with_name(f".{private_file.name}.{secrets.token_hex(6)}.tmp")
        temporary.write_bytes(pem)
        temporary.chmod(0o600)
        try:
            os.link(temporary, private_file)
        except FileExistsError:
            pass  # another process won the race: its key is the key
        finally:
            temporary.unlink()
    if not public_file.exists():
        private = serialization.load_pem_private_key(private_file.read_bytes(), None)
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        temporary = public_file.with_name(f".{public_file.name}.{secrets.token_hex(6)}.tmp")
        temporary.write_bytes(pem)
        os.replace(temporary, public_file)


def issue_token(
    private_key_pem: bytes,
    *,
    client_id: str,
    scopes: Iterable[str],
    regions: Iterable[str],
    issuer: str,
    audience: str,
    ttl: timedelta = timedelta(hours=12),
    now: datetime | None = None,
) -> str:
    """Sign a development token (the embedded default's stand-in for an identity provider)."""
    issued = now or datetime.now(UTC)
    claims = {
        "sub": client_id,
        "iss": issuer,
        "aud": audience,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "scope": " ".join(scopes),
        "regions": [normalize_prefix(r) for r in regions],
    }
    key = serialization.load_pem_private_key(private_key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the signing key must be an EC P-256 key")
    return jwt.encode(claims, key, "ES256")


@dataclass
class RateLimiter:
    """A token bucket per client in this process: `rate` requests a second, bursts of 2 × rate."""

    rate: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def retry_after(self, client_id: str) -> float:
        """0 when the request may pass, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        capacity = 2 * self.rate
        tokens, last = self._buckets.get(client_id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[client_id] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[client_id] = (tokens - 1, now)
        return 0.0


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and demands every scope named."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise _unauthorized("a bearer token is required")
        verifier: TokenVerifier = request.app.state.token_verifier
        try:
            principal = await verifier.verify(credentials.credentials)
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("the token has expired") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise _unauthorized(f"the token is not valid: {exc}") from exc
        missing = sorted(set(scopes) - principal.scopes)
        if missing:
            raise Problem(
                403,
                "forbidden",
                f"the token lacks the scope {' '.join(missing)}",
                missing_scopes=missing,
            )
        wait = request.app.state.rate_limiter.retry_after(principal.client_id)
        if wait:
            raise Problem(
                429,
                "too-many-requests",
                "request rate limit exceeded",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        structlog.contextvars.bind_contextvars(client_id=principal.client_id)
        return principal

    return dependency


PURPOSE_HEADER = "Bangfu-Purpose"


def purpose(description: str) -> Any:
    """A dependency: why the caller asks (the `Bangfu-Purpose` header, UTF-8 percent-encoded),
    decoded; None when absent. Each service says in `description` when it is required."""

    def dependency(
        value: str | None = Header(
            None,
            alias=PURPOSE_HEADER,
            max_length=500,
            description=f"{description} (the header is UTF-8, percent-encoded)",
        ),
    ) -> str | None:
        return unquote(value) if value else None

    return Depends(dependency)
