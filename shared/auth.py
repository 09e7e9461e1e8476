"""JWT bearer authentication: `scope` and `regions` claims, enforced by a FastAPI dependency.

Production validates tokens against the identity provider's published keys, found through its
OpenID discovery when `BANGFU_AUTH_ISSUER` is its URL; the embedded default without a provider
signs them with a local key under `.bangfu/` (`bangfu token`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import Problem
from shared.regions import normalize_prefix, region_in
from shared.settings import SuiteSettings
from shared.tokens import SingleFlight, discover

# Asymmetric only: an HS* token "signed" with a published public key must never verify.
ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
_CACHE_SIZE = 10_000
_bearer = HTTPBearer(auto_error=False, description="OAuth2 client-credentials access token")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Principal:
    """The calling department client: who it is, what it may do, which regions it may touch."""

    client_id: str
    scopes: frozenset[str]
    regions: tuple[str, ...]

    def covers(self, region_code: str) -> bool:
        """Whether a household in `region_code` is inside this client's regions."""
        return region_in(region_code, self.regions)


class KeysUnavailable(Exception):
    """The identity provider's keys cannot be fetched and none cached fits: try again later."""


@dataclass(frozen=True)
class _PublishedKey:
    key: Any
    algorithm: str


class PublishedKeys:
    """The identity provider's signing keys (its JWKS), cached for `cache_seconds`.

    The JWKS is found through discovery (`{issuer}/.well-known/openid-configuration`, its
    `jwks_uri`) unless `jwks_url` names it. Once the cache period ends the set is fetched again
    before any key is used, so a key the provider removed is refused from then on; when the
    provider does not answer, the cached keys keep working and the fetch is tried again after
    `refetch_seconds`. A `kid` not in the set refetches it at most once per `refetch_seconds`:
    otherwise every request with a made-up kid would make us call the provider.
    """

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None = None,
        cache_seconds: float = 300,
        refetch_seconds: float = 30,
        timeout: float = 5.0,
    ):
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self._timeout = timeout
        self._keys: dict[str, _PublishedKey] = {}
        self._fetched = False
        self._fresh_until = 0.0  # time.monotonic()
        self._next_unknown_kid_fetch = 0.0
        self._refresh = SingleFlight(self._fetch)

    async def key(self, kid: str) -> _PublishedKey:
        """The published key named `kid`; raises jwt.PyJWKClientError when none is."""
        await self.ensure_fresh()
        published = self._keys.get(kid)
        if published is None and time.monotonic() >= self._next_unknown_kid_fetch:
            self._next_unknown_kid_fetch = time.monotonic() + self.refetch_seconds
            try:
                await self._refresh()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise KeysUnavailable(f"the identity provider's keys: {exc!r}") from exc
            published = self._keys.get(kid)
        if published is None:
            raise jwt.PyJWKClientError(f"no key published by the identity provider has kid {kid!r}")
        return published

    def publishes(self, kid: str) -> bool:
        """Whether the set as last fetched still holds `kid` (call `ensure_fresh` first)."""
        return kid in self._keys

    async def ensure_fresh(self) -> None:
        """Fetch the set again once its cache period is over; keep it if the provider is down."""
        if time.monotonic() < self._fresh_until:
            return
        try:
            await self._refresh()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if not self._fetched:
                raise KeysUnavailable(f"the identity provider's keys: {exc!r}") from exc
            self._fresh_until = time.monotonic() + self.refetch_seconds
            log.warning("auth.jwks_refresh_failed", error=repr(exc), keys=sorted(self._keys))

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            if self.jwks_url is None:
                self.jwks_url = str((await discover(http, self.issuer))["jwks_uri"])
            response = await http.get(self.jwks_url)
            response.raise_for_status()
            document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{self.jwks_url} is not a JWKS (no keys list)")
        keys = {}
        for jwk in document["keys"]:
            published = _signing_key(jwk)
            if published is not None:
                keys[jwk["kid"]] = published
        if set(keys) != set(self._keys):
            log.info(
                "auth.jwks_changed", kids=sorted(keys), removed=sorted(set(self._keys) - set(keys))
            )
        self._keys = keys
        self._fetched = True
        self._fresh_until = time.monotonic() + self.cache_seconds


def _signing_key(jwk: Any) -> _PublishedKey | None:
    """An asymmetric signing key of the JWKS with its one algorithm; None for any other entry
    (an encryption key, a shared secret, an algorithm we do not accept, no kid)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
        return None
    try:
        parsed = jwt.PyJWK(jwk)
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        return None
    if parsed.algorithm_name not in ALGORITHMS:
        return None
    return _PublishedKey(key=parsed.key, algorithm=parsed.algorithm_name)


class TokenVerifier:
    """Checks signature, expiry, issuer and audience, and reads the claims into a Principal.

    Keys: the development signer's public key, or the identity provider's published keys
    (`PublishedKeys`, found through discovery or at `jwks_url`).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        public_key: Any | None = None,
        jwks_url: str | None = None,
        discover_keys: bool = False,
        jwks_cache_seconds: float = 300,
        jwks_refetch_seconds: float = 30,
        leeway_seconds: float = 0,
    ):
        if (public_key is not None) + (jwks_url is not None) + discover_keys != 1:
            raise ValueError("give exactly one of public_key, jwks_url or discover_keys")
        self._issuer = issuer
        self._audience = audience
        self._public_key = public_key
        self._leeway = leeway_seconds
        self.keys = (
            None
            if public_key is not None
            else PublishedKeys(
                issuer=issuer,
                jwks_url=jwks_url,
                cache_seconds=jwks_cache_seconds,
                refetch_seconds=jwks_refetch_seconds,
            )
        )
        # token -> (principal, expiry with leeway, kid of the key that verified it)
        self._verified: dict[str, tuple[Principal, float, str | None]] = {}

    @property
    def jwks_refetch_seconds(self) -> float:
        return self.keys.refetch_seconds if self.keys else 0

    @classmethod
    def from_settings(cls, suite: SuiteSettings) -> TokenVerifier:
        if suite.uses_identity_provider:
            return cls(
                issuer=suite.auth_issuer,
                audience=suite.auth_audience,
                jwks_url=suite.auth_jwks_url,
                discover_keys=suite.auth_jwks_url is None,
                jwks_cache_seconds=suite.auth_jwks_cache_seconds,
                jwks_refetch_seconds=suite.auth_jwks_refetch_seconds,
                # Clock skew between the provider and us; the development signer is our clock.
                leeway_seconds=suite.auth_leeway_seconds,
            )
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        key = serialization.load_pem_public_key(suite.public_key_file.read_bytes())
        return cls(issuer=suite.auth_issuer, audience=suite.auth_audience, public_key=key)

    async def verify(self, token: str) -> Principal:
        """Raise jwt.InvalidTokenError (or a subclass) when the token is not acceptable, and
        KeysUnavailable when the provider's keys cannot be had.

        A token already verified is answered from a small cache until it expires, and only
        while its key is still published: a client sends the same token with every request,
        and checking its signature costs ~1 ms.
        """
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, kid = cached
            if time.time() < expires and await self._still_published(kid):
                return principal
            self._verified.pop(token, None)
        principal, expires, kid = await self._verify(token)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (principal, expires, kid)
        return principal

    async def _still_published(self, kid: str | None) -> bool:
        if self.keys is None or kid is None:
            return True
        await self.keys.ensure_fresh()
        return self.keys.publishes(kid)

    async def _verify(self, token: str) -> tuple[Principal, float, str | None]:
        kid: str | None = None
        key: Any
        if self.keys is None:
            key, algorithms = self._public_key, ALGORITHMS
        else:
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str):
                raise jwt.InvalidTokenError("the token names no key (kid) of the identity provider")
            published = await self.keys.key(kid)
            # The key's own algorithm only: never HS256 with a public key as the secret.
            key, algorithms = published.key, [published.algorithm]
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
        principal = Principal(
            client_id=str(claims["sub"]),
            scopes=frozenset(_words(claims, "scope")),
            regions=_region_prefixes(claims),
        )
        return principal, float(claims["exp"]) + self._leeway, kid


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
    kid: str | None = None,
) -> str:
    """Sign a development token (the embedded default's stand-in for an identity provider);
    `kid` names the key when it is one of a provider's published keys."""
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
    return jwt.encode(claims, key, "ES256", headers={"kid": kid} if kid else None)


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
        except KeysUnavailable as exc:
            log.warning("auth.keys_unavailable", error=str(exc))
            raise Problem(
                503,
                "identity-provider-unavailable",
                "the identity provider's keys cannot be fetched to check the token",
                headers={"Retry-After": str(max(1, round(verifier.jwks_refetch_seconds)))},
            ) from exc
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

    async def dependency(  # async: a plain def would run in the thread pool, per request
        value: str | None = Header(
            None,
            alias=PURPOSE_HEADER,
            max_length=500,
            description=f"{description} (the header is UTF-8, percent-encoded)",
        ),
    ) -> str | None:
        return unquote(value) if value else None

    return Depends(dependency)
