"""The services against the real provider (deploy/idp): every token path the production one.

The registry validates through the provider's discovery and JWKS; department systems and the
services themselves get their tokens from its token endpoint with client credentials.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from services.benefits.app import create_app as create_benefits
from services.benefits.settings import BenefitsSettings
from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from services.verification.settings import VerificationSettings
from shared.observability import SERVICE_TOKEN_FETCHES
from shared.registry_client import PII_SCOPE, READ_SCOPE, RegistryClient
from shared.tokens import shared_credentials
from tests.conftest import running, serving
from tests.helpers import bearer, household_body, identity_number
from tests.identity.conftest import RunningIdp
from tests.services.benefits.test_consumers import eventually
from tests.shared.standin_idp import forged

SOMEWHERE_IN_4101 = "410105"
log = structlog.get_logger(__name__)


def _registry_trusting(
    idp: RunningIdp, settings: RegistrySettings, **auth: Any
) -> RegistrySettings:
    """The registry's settings with the provider as its issuer (and any BANGFU_AUTH_* given)."""
    suite = settings.suite.model_copy(
        update={"auth_issuer": idp.issuer, **{f"auth_{k}": v for k, v in auth.items()}}
    )
    return settings.model_copy(update={"suite": suite})


@asynccontextmanager
async def _registry(
    idp: RunningIdp, settings: RegistrySettings, **auth: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_registry(_registry_trusting(idp, settings, **auth))) as client:
        yield client


async def _status(client: httpx.AsyncClient, token: str) -> int:
    """What the registry answers the token for a household nobody filed: 404 if accepted."""
    answer = await client.get(f"/v1/households/{uuid.uuid4()}", headers=bearer(token))
    return answer.status_code


def _fetches(client_id: str) -> float:
    return float(SERVICE_TOKEN_FETCHES.labels(client=client_id, outcome="ok")._value.get())


class TestDepartmentClients:
    async def test_a_4113_client_files_and_reads_a_household_and_sees_none_of_4101(
        self, idp: RunningIdp, registry_settings: RegistrySettings
    ) -> None:
        token = idp.client_token("dept-4113")
        elsewhere = idp.client_token("dept-4101")
        async with _registry(idp, registry_settings) as registry:
            filed = await registry.post(
                "/v1/households",
                json=household_body(head_number=identity_number(serial=1)),
                headers=bearer(token),
            )
            assert filed.status_code == 201, filed.text
            read = await registry.get(f"/v1/households/{filed.json()['id']}", headers=bearer(token))
            number = identity_number(region=SOMEWHERE_IN_4101, serial=2)
            theirs = await registry.post(
                "/v1/households",
                json=household_body(SOMEWHERE_IN_4101, head_number=number),
                headers=bearer(elsewhere),
            )
            assert theirs.status_code == 201, theirs.text
            across = await registry.get(
                f"/v1/households/{theirs.json()['id']}", headers=bearer(token)
            )

        assert read.status_code == 200
        assert read.json()["id"] == filed.json()["id"]
        assert read.json()["location"]["region"] == "411302"
        assert across.status_code == 404

    async def test_a_client_without_registry_write_is_forbidden_to_file(
        self, idp: RunningIdp, registry_settings: RegistrySettings
    ) -> None:
        reader = idp.client_token("dept-4113-reader")
        async with _registry(idp, registry_settings) as registry:
            refused = await registry.post(
                "/v1/households",
                json=household_body(head_number=identity_number(serial=3)),
                headers=bearer(reader),
            )

        assert refused.status_code == 403
        assert refused.json()["missing_scopes"] == ["registry:write"]


def _client_settings(idp: RunningIdp, service: str) -> dict[str, Any]:
    """The service as the provider's demo client `svc-<service>` (BANGFU_<SERVICE>_CLIENT_*)."""
    registration = idp.registrations.service_credentials(service)
    assert registration is not None and registration.secret
    return {"client_id": registration.name, "client_secret": SecretStr(registration.secret)}


class TestServiceTokenRenewal:
    async def test_sixty_second_tokens_expire_during_a_run_of_calls_and_nothing_fails(
        self,
        idp_factory: Callable[..., RunningIdp],
        registry_settings: RegistrySettings,
        migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]],
    ) -> None:
        """For 70 s verification's client reads the registry every second, while benefits
        follows the registry's events and reads each new file; the registry allows no clock
        skew, so a token not renewed before its expiry would be refused."""
        idp = idp_factory(access_token_ttl=60)
        settings = _registry_trusting(idp, registry_settings, leeway_seconds=0)
        benefits_url, benefits_schema = await migrated_database("benefits")
        with serving(create_registry(settings)) as url:
            benefits = BenefitsSettings(
                suite=settings.suite,
                database_url=benefits_url,
                database_schema=benefits_schema,
                follow_registry=True,
                registry_url=url,
                **_client_settings(idp, "benefits"),
            )
            verification = VerificationSettings(
                suite=settings.suite, registry_url=url, **_client_settings(idp, "verification")
            )
            async with (
                httpx.AsyncClient(base_url=url) as http,
                running(create_benefits(benefits)),
            ):

                async def file_and_await_its_card(serial: int) -> str:
                    """A department files; benefits reads the file and the registry shows
                    the card benefits published."""
                    headers = bearer(idp.client_token("dept-4113"))
                    filed = await http.post(
                        "/v1/households",
                        json=household_body(head_number=identity_number(serial=serial)),
                        headers=headers,
                    )
                    assert filed.status_code == 201, filed.text
                    household_id = str(filed.json()["id"])

                    async def card() -> Any:
                        file = await http.get(f"/v1/households/{household_id}", headers=headers)
                        return file.json()["entitlements"]

                    assert (await eventually(card))["monthly_fen"] == 63000
                    return household_id

                household_id = await file_and_await_its_card(4)
                fetched = {c: _fetches(c) for c in ("svc-verification", "svc-benefits")}
                client = RegistryClient.from_settings(verification)
                # The client's own credentials (one per client and scope in a process): what
                # they hand out right after a read is the token that read sent.
                credentials = [
                    shared_credentials(
                        issuer=idp.issuer,
                        client_id="svc-verification",
                        client_secret=verification.client_secret.get_secret_value(),
                        scope=scope,
                    )
                    for scope in (READ_SCOPE, PII_SCOPE)
                    if verification.client_secret
                ]
                started = time.monotonic()
                reads, tokens_seen = 0, dict[str, float]()
                try:
                    while time.monotonic() - started < 70:
                        masked = await client.household(household_id)
                        clear = await client.household(household_id, pii=True, purpose="核对 test")
                        assert masked["id"] == clear["id"] == household_id
                        reads += 2
                        for sent in [await c.token() for c in credentials]:
                            tokens_seen.setdefault(sent, round(time.monotonic() - started, 1))
                        await asyncio.sleep(1)
                finally:
                    await client.aclose()
                await file_and_await_its_card(5)  # benefits' first tokens expired 10 s ago
                first = next(iter(tokens_seen))
                first_now = await http.get(f"/v1/households/{household_id}", headers=bearer(first))
                renewed = {c: _fetches(c) - fetched[c] for c in fetched}

        at = sorted(tokens_seen.values())
        log.info("identity.service_tokens_first_sent", reads=reads, seconds=at, fetches=renewed)
        # Two scopes, each fetched at the start and renewed once 48 s (80 % of 60) had passed.
        assert len(tokens_seen) == renewed["svc-verification"] == 4, at
        assert all(s < 2 or 47 <= s <= 52 for s in at) and max(at) >= 47, at
        assert renewed["svc-benefits"] >= 1  # its tokens of the first card had expired
        assert first_now.status_code == 401  # the run did span the first token's expiry


def _with_the_keys_of(idp: RunningIdp, other: RunningIdp) -> None:
    """Make `other` sign with `idp`'s keys (same kid, same key, its own issuer)."""
    other.stop()
    shutil.copyfile(idp.keys_file, other.keys_file)
    other.restart()


class TestKeyRotation:
    async def test_a_rotated_key_is_accepted_at_once_and_a_retired_one_refused_after_the_cache(
        self, idp_factory: Callable[..., RunningIdp], registry_settings: RegistrySettings
    ) -> None:
        idp = idp_factory()
        old = idp.client_token("dept-4113")
        cache_seconds = 8
        async with _registry(idp, registry_settings, jwks_cache_seconds=cache_seconds) as registry:
            assert await _status(registry, old) == 404
            idp.rotate()
            idp.reload()
            new = idp.client_token("dept-4113")
            assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
            rotated = (await _status(registry, new), await _status(registry, old))
            refetched = time.monotonic()  # the new kid made the registry fetch the keys again
            idp.retire()
            idp.reload()
            within_the_cache_period = await _status(registry, old)
            assert time.monotonic() - refetched < cache_seconds, "too slow to see the period"
            await asyncio.sleep(cache_seconds + 0.3 - (time.monotonic() - refetched))
            retired = (await _status(registry, new), await _status(registry, old))

        assert rotated == (404, 404)  # the new kid fetched the keys again; the old one still there
        assert within_the_cache_period == 404  # the cache period bounds how long it lasts
        assert retired == (404, 401)


class TestRefusedTokens:
    async def test_another_issuer_another_audience_hs256_and_none_are_all_401(
        self,
        idp: RunningIdp,
        idp_factory: Callable[..., RunningIdp],
        registry_settings: RegistrySettings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        impostor = idp_factory()  # the same key as `idp`: only its issuer is wrong
        _with_the_keys_of(idp, impostor)
        monkeypatch.setenv("BANGFU_IDP_AUDIENCE", "another-audience")
        elsewhere = idp_factory()  # a provider the registry trusts, for another audience
        genuine = idp.client_token("dept-4113")
        claims = jwt.decode(genuine, options={"verify_signature": False})
        kid = jwt.get_unverified_header(genuine)["kid"]
        [jwk] = [key for key in idp.jwks()["keys"] if key["kid"] == kid]
        public_pem = jwt.PyJWK(jwk).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tokens = {
            "genuine": genuine,
            "another issuer": impostor.client_token("dept-4113"),
            "HS256 keyed with the public key": forged(
                claims, alg="HS256", kid=kid, secret=public_pem
            ),
            "alg none": forged(claims, alg="none", kid=kid),
        }
        answers = {}
        async with _registry(idp, registry_settings) as registry:
            for name, token in tokens.items():
                answer = await registry.get(f"/v1/households/{uuid.uuid4()}", headers=bearer(token))
                answers[name] = (answer.status_code, answer.json()["detail"])
        async with _registry(elsewhere, registry_settings) as registry:
            token = elsewhere.client_token("dept-4113")
            answer = await registry.get(f"/v1/households/{uuid.uuid4()}", headers=bearer(token))
            answers["another audience"] = (answer.status_code, answer.json()["detail"])

        assert {name: status for name, (status, _) in answers.items()} == {
            "genuine": 404,
            "another issuer": 401,
            "another audience": 401,
            "HS256 keyed with the public key": 401,
            "alg none": 401,
        }
        assert "issuer" in answers["another issuer"][1].lower()
        assert "audience" in answers["another audience"][1].lower()
        assert "alg" in answers["HS256 keyed with the public key"][1].lower()


class TestProviderDown:
    async def test_cached_keys_verify_new_tokens_while_the_provider_is_stopped(
        self, idp_factory: Callable[..., RunningIdp], registry_settings: RegistrySettings
    ) -> None:
        idp = idp_factory()
        seen, unseen = idp.client_token("dept-4113"), idp.client_token("dept-4113-reader")
        async with _registry(
            idp, registry_settings, jwks_cache_seconds=1, jwks_refetch_seconds=1
        ) as registry:
            assert await _status(registry, seen) == 404
            idp.stop()
            await asyncio.sleep(1.2)  # past the cache period: a refresh is due and fails
            answers = (await _status(registry, unseen), await _status(registry, seen))

        assert answers == (404, 404)
