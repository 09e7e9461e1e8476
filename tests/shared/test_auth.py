"""Bearer tokens: verification against a real JWKS endpoint, principals, rate limit, dev keys."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import jwt.api_jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from shared import auth
from shared.auth import (
    KeysUnavailable,
    Principal,
    RateLimiter,
    TokenVerifier,
    ensure_signing_key,
    issue_token,
)
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.shared.standin_idp import StandInProvider, forged

ISSUER = "https://idp.example.test"
AUDIENCE = "bangfu"
KID = "bangfu-test-key-1"


def _jwks_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_url(signing_key: ec.EllipticCurvePrivateKey) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 publishing the signing key's JWKS."""
    jwk = ECAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "ES256"}]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _jwks_handler(body))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def verifier(jwks_url: str) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url)


def _sign(
    key: ec.EllipticCurvePrivateKey,
    *,
    kid: str = KID,
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "dept-minzheng",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "scope": "registry:read pii:read",
        "regions": ["411300", "4101"],
    }
    claims.update(overrides)
    for name in drop:
        del claims[name]
    return jwt.encode(claims, key, "ES256", headers={"kid": kid})


class TestTokenVerifier:
    async def test_a_token_signed_by_the_published_key_yields_its_principal(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        principal = await verifier.verify(_sign(signing_key))

        assert principal == Principal(
            client_id="dept-minzheng",
            scopes=frozenset({"registry:read", "pii:read"}),
            regions=("4113", "4101"),
        )

    async def test_a_token_signed_by_another_key_is_refused(self, verifier: TokenVerifier) -> None:
        other = ec.generate_private_key(ec.SECP256R1())

        with pytest.raises(jwt.InvalidSignatureError):
            await verifier.verify(_sign(other))

    async def test_a_token_for_another_audience_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.InvalidAudienceError):
            await verifier.verify(_sign(signing_key, aud="someone-else"))

    async def test_a_token_from_another_issuer_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.InvalidIssuerError):
            await verifier.verify(_sign(signing_key, iss="https://evil.example.test"))

    async def test_an_expired_token_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.ExpiredSignatureError):
            await verifier.verify(_sign(signing_key, exp=int(time.time()) - 60))

    async def test_a_token_without_an_expiry_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.MissingRequiredClaimError, match="exp"):
            await verifier.verify(_sign(signing_key, drop=("exp",)))

    async def test_a_token_without_a_subject_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.MissingRequiredClaimError, match="sub"):
            await verifier.verify(_sign(signing_key, drop=("sub",)))

    async def test_a_token_with_an_unknown_key_id_is_refused(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        with pytest.raises(jwt.PyJWKClientError):
            await verifier.verify(_sign(signing_key, kid="not-published"))

    async def test_regions_given_as_a_space_separated_string_are_read(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        principal = await verifier.verify(_sign(signing_key, regions="41 310000 411302"))

        assert principal.regions == ("41", "31", "411302")

    async def test_a_token_without_regions_or_scope_covers_nothing(
        self, verifier: TokenVerifier, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        principal = await verifier.verify(_sign(signing_key, drop=("regions", "scope")))

        assert principal.scopes == frozenset()
        assert principal.regions == ()
        assert principal.covers("411302") is False

    @pytest.mark.parametrize("regions", [["99"], ["4113", "*"], [""], "41 4x"])
    async def test_a_bad_region_in_the_claim_is_refused(
        self,
        verifier: TokenVerifier,
        signing_key: ec.EllipticCurvePrivateKey,
        regions: list[str] | str,
    ) -> None:
        with pytest.raises(jwt.InvalidTokenError, match="bad regions claim"):
            await verifier.verify(_sign(signing_key, regions=regions))

    async def test_a_local_public_key_verifies_a_development_token(
        self, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        pem = signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        token = issue_token(
            pem, client_id="c", scopes=["a"], regions=["4113"], issuer=ISSUER, audience=AUDIENCE
        )
        verifier = TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, public_key=signing_key.public_key()
        )

        principal = await verifier.verify(token)

        assert principal == Principal(client_id="c", scopes=frozenset({"a"}), regions=("4113",))

    def test_exactly_one_key_source_is_required(self) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            TokenVerifier(issuer=ISSUER, audience=AUDIENCE)


class TestPrincipal:
    @pytest.mark.parametrize(
        ("code", "covered"),
        [
            ("411302", True),  # under the city prefix 4113
            ("411300", True),
            ("410105", True),  # under the county prefix 410105 itself
            ("410106", False),
            ("411402", False),  # another city of the same province
            ("310101", False),
        ],
    )
    def test_covers_a_region_under_one_of_its_prefixes(self, code: str, covered: bool) -> None:
        principal = Principal(client_id="c", scopes=frozenset(), regions=("4113", "410105"))

        assert principal.covers(code) is covered

    def test_a_province_prefix_covers_the_whole_province(self) -> None:
        principal = Principal(client_id="c", scopes=frozenset(), regions=("41",))

        assert principal.covers("411302") is True
        assert principal.covers("421302") is False


class TestRateLimiter:
    def test_a_client_gets_a_burst_of_twice_the_rate_then_must_wait(self) -> None:
        limiter = RateLimiter(rate=5)

        waits = [limiter.retry_after("a") for _ in range(10)]
        refused = limiter.retry_after("a")

        assert waits == [0.0] * 10
        assert 0 < refused <= 1 / 5

    def test_clients_have_buckets_of_their_own(self) -> None:
        limiter = RateLimiter(rate=1)
        for _ in range(2):
            limiter.retry_after("a")

        assert limiter.retry_after("a") > 0
        assert limiter.retry_after("b") == 0.0

    def test_a_rate_of_zero_switches_the_limit_off(self) -> None:
        limiter = RateLimiter(rate=0)

        assert {limiter.retry_after("a") for _ in range(1000)} == {0.0}


class TestDevelopmentSigningKey:
    def test_the_key_pair_is_created_once_with_a_private_key_only_the_owner_reads(
        self, tmp_path: Path
    ) -> None:
        private, public = tmp_path / "home" / "key.pem", tmp_path / "home" / "key.pub.pem"

        ensure_signing_key(private, public)
        first = (private.read_bytes(), public.read_bytes())
        ensure_signing_key(private, public)

        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert (private.read_bytes(), public.read_bytes()) == first
        assert first[0].startswith(b"-----BEGIN PRIVATE KEY-----")
        assert first[1].startswith(b"-----BEGIN PUBLIC KEY-----")

    async def test_an_issued_token_carries_the_claims_and_lifetime_asked_for(
        self, tmp_path: Path
    ) -> None:
        private, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
        ensure_signing_key(private, public)
        now = datetime.now(UTC)

        token = issue_token(
            private.read_bytes(),
            client_id="bangfu-dev",
            scopes=["registry:read", "pii:read"],
            regions=["411300", "41"],
            issuer=ISSUER,
            audience=AUDIENCE,
            ttl=timedelta(hours=2),
            now=now,
        )
        key = serialization.load_pem_public_key(public.read_bytes())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        claims = jwt.decode(token, key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)

        assert claims["sub"] == "bangfu-dev"
        assert claims["scope"] == "registry:read pii:read"
        assert claims["regions"] == ["4113", "41"]
        assert claims["exp"] - claims["iat"] == 7200
        assert claims["iat"] == int(now.timestamp())

    def test_issuing_with_a_region_outside_any_province_is_refused(self, tmp_path: Path) -> None:
        private, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
        ensure_signing_key(private, public)

        with pytest.raises(ValueError, match="99"):
            issue_token(
                private.read_bytes(),
                client_id="c",
                scopes=[],
                regions=["99"],
                issuer=ISSUER,
                audience=AUDIENCE,
            )


class TestVerifiedTokenCache:
    async def test_a_cached_token_still_expires(self, tmp_path: Path) -> None:
        ensure_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
        verifier = TokenVerifier(
            issuer="bangfu-dev",
            audience="bangfu",
            public_key=serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes()),
        )
        token = issue_token(
            (tmp_path / "k.pem").read_bytes(),
            client_id="c",
            scopes=["a"],
            regions=["41"],
            issuer="bangfu-dev",
            audience="bangfu",
            ttl=timedelta(seconds=1),
        )
        first = await verifier.verify(token)
        assert await verifier.verify(token) == first
        await asyncio.sleep(1.1)
        with pytest.raises(jwt.ExpiredSignatureError):
            await verifier.verify(token)


class TestSigningKeyCreatedConcurrently:
    def test_services_starting_together_all_get_the_same_whole_key(self, tmp_path: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        private, public = tmp_path / "k.pem", tmp_path / "k.pub"

        def start_a_service() -> bytes:
            ensure_signing_key(private, public)
            serialization.load_pem_public_key(public.read_bytes())  # never half written
            return public.read_bytes()

        with ThreadPoolExecutor(8) as pool:
            keys = set(pool.map(lambda _: start_a_service(), range(16)))
        assert len(keys) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pub"]


class TestMalformedClaimsThroughARoute:
    """A claim of the wrong shape is the caller's fault: 401 from a real route, never a 500."""

    @pytest.mark.parametrize(
        "claims",
        [
            {"regions": 4113},  # a number
            {"regions": {"4113": True}},  # an object: its keys must not pass for prefixes
            {"regions": "41,4113"},  # a string of commas: prefixes are space-separated
            {"regions": [4113]},  # a list of numbers
            {"regions": [["4113"]]},  # a list of lists
            {"regions": None},
            {"regions": True},
            {"scope": ["registry:read"]},  # scope is a space-separated string (RFC 8693)
            {"scope": 7},
            {"sub": 12},
        ],
        ids=str,
    )
    async def test_a_malformed_claim_is_refused_with_401(
        self,
        registry: httpx.AsyncClient,
        suite: SuiteSettings,
        claims: dict[str, Any],
    ) -> None:
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": "dept-minzheng",
            "iss": suite.auth_issuer,
            "aud": suite.auth_audience,
            "iat": now,
            "exp": now + 600,
            "scope": "registry:read",
            "regions": ["4113"],
            **claims,
        }
        key = serialization.load_pem_private_key(suite.signing_key_file.read_bytes(), None)
        token = jwt.encode(payload, key, "ES256")  # type: ignore[arg-type]

        answer = await registry.get(
            "/v1/households/00000000-0000-0000-0000-000000000000",
            headers={"Authorization": f"Bearer {token}"},
        )

        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"] == "Bearer"

    async def test_a_space_separated_regions_string_still_reaches_the_route(
        self, registry: httpx.AsyncClient, suite: SuiteSettings
    ) -> None:
        ensure_signing_key(suite.signing_key_file, suite.public_key_file)
        now = int(time.time())
        payload = {
            "sub": "dept-minzheng",
            "iss": suite.auth_issuer,
            "aud": suite.auth_audience,
            "exp": now + 600,
            "scope": "registry:read",
            "regions": "4113 4101",
        }
        key = serialization.load_pem_private_key(suite.signing_key_file.read_bytes(), None)
        token = jwt.encode(payload, key, "ES256")  # type: ignore[arg-type]

        answer = await registry.get(
            "/v1/households/00000000-0000-0000-0000-000000000000",
            headers={"Authorization": f"Bearer {token}"},
        )

        assert answer.status_code == 404, answer.text


class CountingJwks:
    """A real JWKS endpoint on 127.0.0.1 that counts its fetches and can publish a new key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        self.fetches = 0
        self.keys: list[dict[str, Any]] = []
        self.publish(key, kid)
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})


@pytest.fixture
def counting_jwks(signing_key: ec.EllipticCurvePrivateKey) -> Iterator[CountingJwks]:
    jwks = CountingJwks(signing_key, KID)
    jwks.thread.start()
    yield jwks
    jwks.server.shutdown()
    jwks.server.server_close()
    jwks.thread.join(timeout=5)


class TestUnknownKeyIds:
    async def test_unknown_key_ids_refetch_the_jwks_at_most_once_per_interval(
        self, counting_jwks: CountingJwks, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        verifier = TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, jwks_url=counting_jwks.url, jwks_refetch_seconds=60
        )
        await verifier.verify(_sign(signing_key))
        assert counting_jwks.fetches == 1

        for n in range(25):
            with pytest.raises(jwt.PyJWKClientError, match=f"unknown-{n}"):
                await verifier.verify(_sign(signing_key, kid=f"unknown-{n}"))

        assert counting_jwks.fetches == 2  # the first unknown kid refetched; the rest waited

    async def test_a_rotated_key_is_accepted_once_the_interval_has_passed(
        self, counting_jwks: CountingJwks, signing_key: ec.EllipticCurvePrivateKey
    ) -> None:
        verifier = TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, jwks_url=counting_jwks.url, jwks_refetch_seconds=0.5
        )
        await verifier.verify(_sign(signing_key))
        with pytest.raises(jwt.PyJWKClientError):
            await verifier.verify(_sign(signing_key, kid="garbage"))  # spends the refetch
        rotated = ec.generate_private_key(ec.SECP256R1())
        counting_jwks.publish(rotated, "rotated-2")
        with pytest.raises(jwt.PyJWKClientError):
            await verifier.verify(_sign(rotated, kid="rotated-2"))  # within the interval

        await asyncio.sleep(0.6)
        principal = await verifier.verify(_sign(rotated, kid="rotated-2"))

        assert principal.client_id == "dept-minzheng"
        assert counting_jwks.fetches == 3

    async def test_the_interval_comes_from_the_suite_settings(
        self, counting_jwks: CountingJwks
    ) -> None:
        suite = SuiteSettings(
            auth_issuer=ISSUER,
            auth_audience=AUDIENCE,
            auth_jwks_url=counting_jwks.url,
            auth_jwks_refetch_seconds=120,
        )

        verifier = TokenVerifier.from_settings(suite)

        assert verifier.jwks_refetch_seconds == 120


@pytest.fixture
def provider() -> Iterator[StandInProvider]:
    provider = StandInProvider()
    yield provider
    provider.stop()


def _discovering(provider: StandInProvider, **settings: Any) -> TokenVerifier:
    """A verifier as the services build it with BANGFU_AUTH_ISSUER set to the provider's URL."""
    return TokenVerifier.from_settings(SuiteSettings(auth_issuer=provider.issuer, **settings))


class TestKeysThroughDiscovery:
    async def test_the_keys_are_found_through_the_issuers_discovery_document(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider)

        principal = await verifier.verify(provider.sign(regions=["4113"]))

        assert principal == Principal(
            client_id="svc-test", scopes=frozenset({"registry:read"}), regions=("4113",)
        )
        assert provider.requests == {"discovery": 1, "jwks": 1, "token": 0}

    async def test_a_configured_jwks_url_overrides_discovery(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider, auth_jwks_url=f"{provider.issuer}/jwks")

        await verifier.verify(provider.sign())

        assert provider.requests == {"discovery": 0, "jwks": 1, "token": 0}

    async def test_a_discovery_document_stating_another_issuer_is_not_trusted(
        self, provider: StandInProvider
    ) -> None:
        provider.stated_issuer = "https://evil.example.test"

        with pytest.raises(KeysUnavailable, match="evil"):
            await _discovering(provider).verify(provider.sign())

    async def test_concurrent_first_requests_share_one_fetch(
        self, provider: StandInProvider
    ) -> None:
        provider.delay = 0.2
        verifier = _discovering(provider)
        tokens = [provider.sign(jti=str(n)) for n in range(20)]

        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))

        assert {p.client_id for p in principals} == {"svc-test"}
        assert provider.requests == {"discovery": 1, "jwks": 1, "token": 0}

    async def test_the_keys_are_fetched_again_once_the_cache_period_is_over(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider, auth_jwks_cache_seconds=0.5)
        token = provider.sign()
        for _ in range(5):
            await verifier.verify(token)
        assert provider.requests["jwks"] == 1

        await asyncio.sleep(0.6)
        await verifier.verify(token)

        assert provider.requests["jwks"] == 2


class TestKeyRotation:
    async def test_a_removed_key_is_refused_once_the_cache_refreshes_even_for_a_token_seen(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider, auth_jwks_cache_seconds=0.5)
        old = provider.sign("k1")
        await verifier.verify(old)
        provider.add_key("k2", first=True)
        del provider.keys["k1"]  # rotated and retired at the provider

        within_the_period = await verifier.verify(old)
        await asyncio.sleep(0.6)

        assert within_the_period.client_id == "svc-test"  # the cache period is the bound
        with pytest.raises(jwt.PyJWKClientError, match="k1"):
            await verifier.verify(old)
        assert (await verifier.verify(provider.sign("k2"))).client_id == "svc-test"

    async def test_a_new_key_is_picked_up_at_once_through_its_unknown_kid(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider)
        await verifier.verify(provider.sign("k1"))
        provider.add_key("k2", first=True)

        principal = await verifier.verify(provider.sign("k2"))

        assert principal.client_id == "svc-test"
        assert provider.requests["jwks"] == 2


class TestProviderDown:
    async def test_cached_keys_keep_working_while_the_provider_is_down(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(
            provider, auth_jwks_cache_seconds=0.2, auth_jwks_refetch_seconds=0.2
        )
        await verifier.verify(provider.sign())
        provider.down = True

        await asyncio.sleep(0.3)
        seen_before = await verifier.verify(provider.sign())  # a new token, the cached key
        await asyncio.sleep(0.3)
        another = await verifier.verify(provider.sign(jti="another"))

        assert seen_before.client_id == another.client_id == "svc-test"
        assert provider.refused_while_down == 2  # tried again each refetch interval only

    async def test_without_any_key_fetched_the_provider_down_is_unavailable_not_unauthorized(
        self, provider: StandInProvider
    ) -> None:
        provider.down = True

        with pytest.raises(KeysUnavailable):
            await _discovering(provider).verify(provider.sign())


class TestForgedTokens:
    async def test_an_hs256_token_keyed_with_the_published_public_key_is_refused(
        self, provider: StandInProvider
    ) -> None:
        verifier = _discovering(provider)
        await verifier.verify(provider.sign())  # the key is known and cached
        token = forged(provider.claims(), alg="HS256", kid="k1", secret=provider.public_pem("k1"))

        with pytest.raises(jwt.InvalidAlgorithmError):
            await verifier.verify(token)

    async def test_an_unsigned_token_is_refused(self, provider: StandInProvider) -> None:
        verifier = _discovering(provider)
        await verifier.verify(provider.sign())

        with pytest.raises(jwt.InvalidAlgorithmError):
            await verifier.verify(forged(provider.claims(), alg="none", kid="k1"))

    async def test_a_token_signed_with_another_key_under_a_published_kid_is_refused(
        self, provider: StandInProvider
    ) -> None:
        other = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(provider.claims(), other, "ES256", headers={"kid": "k1"})

        with pytest.raises(jwt.InvalidSignatureError):
            await _discovering(provider).verify(token)

    async def test_a_token_naming_no_key_is_refused(self, provider: StandInProvider) -> None:
        token = jwt.encode(provider.claims(), provider.keys["k1"], "ES256")

        with pytest.raises(jwt.InvalidTokenError, match="kid"):
            await _discovering(provider).verify(token)

    def test_symmetric_keys_in_the_jwks_are_never_used(self) -> None:
        from shared.auth import _signing_key

        secret = {"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"}
        encryption = {
            **ECAlgorithm.to_jwk(
                ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True
            ),
            "kid": "e",
            "use": "enc",
        }

        assert _signing_key(secret) is None
        assert _signing_key(encryption) is None


class _WallClock:
    """The wall clock shared.auth's cache and PyJWT's expiry check read, set by the test (the
    key cache's monotonic clock stays real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float) -> None:
        self.now = now
        clock = self

        class Datetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Datetime:
                return cls.fromtimestamp(clock.now, tz)

        monkeypatch.setattr(jwt.api_jwt, "datetime", Datetime)
        monkeypatch.setattr(
            auth, "time", SimpleNamespace(time=lambda: clock.now, monotonic=time.monotonic)
        )


class TestClockSkew:
    @pytest.mark.parametrize(("expired_ago", "accepted"), [(20, True), (40, False)])
    async def test_an_expiry_within_the_leeway_is_accepted(
        self, provider: StandInProvider, expired_ago: int, accepted: bool
    ) -> None:
        verifier = _discovering(provider, auth_leeway_seconds=30)
        token = provider.sign(exp=int(time.time()) - expired_ago)

        if accepted:
            assert (await verifier.verify(token)).client_id == "svc-test"
        else:
            with pytest.raises(jwt.ExpiredSignatureError):
                await verifier.verify(token)

    async def test_a_verified_token_leaves_the_cache_when_its_leeway_ends(
        self, provider: StandInProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # On the real clock a token signed with exp = now was up to a second into its one
        # second of leeway before the first verify (discovery and JWKS fetches first), which
        # under load ran past it. The wall clock of the cache and of PyJWT is moved by hand.
        expires = int(time.time())
        clock = _WallClock(monkeypatch, now=expires)
        verifier = _discovering(provider, auth_leeway_seconds=1)
        token = provider.sign(exp=expires)
        await verifier.verify(token)

        clock.now = expires + 0.999
        assert (await verifier.verify(token)).client_id == "svc-test"  # still within the leeway

        clock.now = expires + 1
        with pytest.raises(jwt.ExpiredSignatureError):
            await verifier.verify(token)


class TestThroughARoute:
    """What a caller of a service sees: 401 for a token not accepted, 503 without keys."""

    async def test_forged_foreign_and_unfit_tokens_are_401_and_no_keys_is_503(
        self,
        provider: StandInProvider,
        registry_settings: RegistrySettings,
    ) -> None:
        suite = registry_settings.suite.model_copy(update={"auth_issuer": provider.issuer})
        app = create_registry(registry_settings.model_copy(update={"suite": suite}))
        claims = provider.claims(scope="registry:read")
        stranger = StandInProvider()
        stranger.stop()
        answers = {}
        async with running(app) as client:

            async def status(token: str) -> int:
                answer = await client.get(
                    f"/v1/households/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
                )
                return answer.status_code

            answers["fit"] = await status(provider.sign(scope="registry:read"))
            answers["another issuer"] = await status(
                provider.sign(scope="registry:read", iss=stranger.issuer)
            )
            answers["another audience"] = await status(
                provider.sign(scope="registry:read", aud="someone-else")
            )
            answers["HS256"] = await status(
                forged(claims, alg="HS256", kid="k1", secret=provider.public_pem("k1"))
            )
            answers["none"] = await status(forged(claims, alg="none", kid="k1"))
        fresh = create_registry(registry_settings.model_copy(update={"suite": suite}))
        provider.down = True
        async with running(fresh) as client:
            no_keys = await client.get(
                f"/v1/households/{uuid.uuid4()}",
                headers={"Authorization": f"Bearer {provider.sign(scope='registry:read')}"},
            )

        assert answers == {
            "fit": 404,
            "another issuer": 401,
            "another audience": 401,
            "HS256": 401,
            "none": 401,
        }
        assert no_keys.status_code == 503
        assert no_keys.json()["type"].endswith("/identity-provider-unavailable")
        assert no_keys.headers["retry-after"] == "30"
