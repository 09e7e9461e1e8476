"""Service tokens by client credentials: fetched, shared, renewed before expiry, counted."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.registry.app import create_app as create_registry
from services.registry.settings import RegistrySettings
from services.verification.settings import VerificationSettings
from shared.observability import SERVICE_TOKEN_FETCHES
from shared.registry_client import RegistryClient, RegistryRefusedToken, RegistryUnavailable
from shared.settings import SuiteSettings
from shared.tokens import ClientCredentials, ServiceTokenUnavailable, shared_credentials
from tests.conftest import running
from tests.helpers import bearer, household_body
from tests.shared.standin_idp import StandInProvider


@pytest.fixture
def provider() -> Iterator[StandInProvider]:
    provider = StandInProvider()
    yield provider
    provider.stop()


def _credentials(provider: StandInProvider, *, scope: str = "registry:read") -> ClientCredentials:
    return ClientCredentials(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=scope,
    )


def _fetches(client: str, outcome: str) -> float:
    return float(SERVICE_TOKEN_FETCHES.labels(client=client, outcome=outcome)._value.get())


class TestClientCredentials:
    async def test_a_token_is_fetched_with_client_secret_basic_and_the_scope_then_kept(
        self, provider: StandInProvider
    ) -> None:
        credentials = _credentials(provider, scope="registry:read pii:read")
        counted = _fetches(provider.client_id, "ok")

        first = await credentials.token()
        again = [await credentials.token() for _ in range(10)]

        assert again == [first] * 10
        assert provider.requests == {"discovery": 1, "jwks": 0, "token": 1}
        [asked] = provider.token_requests
        assert asked["form"] == {
            "grant_type": "client_credentials",
            "scope": "registry:read pii:read",
        }
        basic = base64.b64decode(asked["authorization"].removeprefix("Basic ")).decode()
        assert basic == "svc-test:s3cret"
        assert jwt.decode(first, options={"verify_signature": False})["scope"] == (
            "registry:read pii:read"
        )
        assert _fetches(provider.client_id, "ok") == counted + 1

    async def test_the_next_token_is_fetched_after_80_percent_of_the_lifetime(
        self, provider: StandInProvider
    ) -> None:
        provider.access_token_ttl = 3  # renewed after 2.4 s
        credentials = _credentials(provider)

        first = await credentials.token()
        await asyncio.sleep(2.0)
        before_renewal = await credentials.token()
        await asyncio.sleep(0.6)
        renewed = await credentials.token()

        assert before_renewal == first
        assert renewed != first
        assert provider.requests["token"] == 2

    async def test_concurrent_callers_share_one_fetch(self, provider: StandInProvider) -> None:
        provider.delay = 0.3
        credentials = _credentials(provider)

        tokens = await asyncio.gather(*(credentials.token() for _ in range(20)))

        assert len(set(tokens)) == 1
        assert provider.requests["token"] == 1

    async def test_invalidating_the_current_token_fetches_another_a_stale_one_does_not(
        self, provider: StandInProvider
    ) -> None:
        credentials = _credentials(provider)
        first = await credentials.token()

        credentials.invalidate(first)
        second = await credentials.token()
        credentials.invalidate(first)  # a caller late with the refusal of the first one
        third = await credentials.token()

        assert second != first and third == second
        assert provider.requests["token"] == 2

    async def test_a_wrong_secret_is_refused_and_counted(self, provider: StandInProvider) -> None:
        credentials = ClientCredentials(
            issuer=provider.issuer, client_id="svc-test", client_secret="wrong", scope="x"
        )
        refused = _fetches("svc-test", "refused")

        with pytest.raises(ServiceTokenUnavailable, match="401"):
            await credentials.token()

        assert _fetches("svc-test", "refused") == refused + 1

    async def test_without_a_provider_there_is_no_token_and_it_is_counted(
        self, provider: StandInProvider
    ) -> None:
        provider.down = True
        unavailable = _fetches(provider.client_id, "unavailable")

        with pytest.raises(ServiceTokenUnavailable, match="unreachable"):
            await _credentials(provider).token()

        assert _fetches(provider.client_id, "unavailable") == unavailable + 1

    async def test_a_provider_down_at_renewal_leaves_the_current_token_in_use_until_it_expires(
        self, provider: StandInProvider
    ) -> None:
        provider.access_token_ttl = 10  # renewal due after 8 s; sent until 1 s before expiry
        credentials = _credentials(provider)
        first = await credentials.token()
        provider.down = True

        await asyncio.sleep(8.2)
        during_outage = [await credentials.token() for _ in range(5)]
        asked_during_outage = provider.refused_while_down
        provider.down = False
        await asyncio.sleep(1.0)  # past the last second of the first token
        after = await credentials.token()

        assert during_outage == [first] * 5
        assert asked_during_outage == 1  # one failed renewal, then a pause: no hammering
        assert after != first
        assert provider.requests["token"] == 2

    async def test_a_discovery_document_of_another_issuer_is_not_trusted(
        self, provider: StandInProvider
    ) -> None:
        provider.stated_issuer = "https://evil.example.test"

        with pytest.raises(ServiceTokenUnavailable, match="evil"):
            await _credentials(provider).token()
        assert provider.requests["token"] == 0

    def test_one_instance_per_client_and_scope_is_shared_in_a_process(self) -> None:
        def make(scope: str, secret: str = "s") -> ClientCredentials:
            return shared_credentials(
                issuer="http://idp.test", client_id="c", client_secret=secret, scope=scope
            )

        assert make("registry:read") is make("registry:read")
        assert make("registry:read") is not make("registry:read pii:read")
        assert make("registry:read") is not make("registry:read", secret="rotated")


@dataclass
class RegistryWithProvider:
    """The registry app validating the stand-in provider's tokens, and a verification
    service's settings as a client of that provider."""

    app: FastAPI
    http: httpx.AsyncClient
    verification: VerificationSettings

    def client(self, token: ClientCredentials) -> RegistryClient:
        return RegistryClient("http://test", token=token, transport=self.transport())

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)


@pytest.fixture
async def registry_with_provider(
    provider: StandInProvider, suite: SuiteSettings, registry_settings: RegistrySettings
) -> AsyncIterator[RegistryWithProvider]:
    with_provider = suite.model_copy(update={"auth_issuer": provider.issuer})
    app = create_registry(registry_settings.model_copy(update={"suite": with_provider}))
    async with running(app) as http:
        verification = VerificationSettings(
            suite=with_provider,
            registry_url="http://test",
            client_id=provider.client_id,
            client_secret=SecretStr(provider.client_secret),
        )
        yield RegistryWithProvider(app, http, verification)


async def _file(registry: RegistryWithProvider, provider: StandInProvider) -> str:
    token = provider.sign(scope="registry:write", regions=["41"])
    created = await registry.http.post(
        "/v1/households", json=household_body(), headers=bearer(token)
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


UNKNOWN_HOUSEHOLD = "0190a000-0000-7000-8000-000000000000"


class TestRegistryClientWithClientCredentials:
    async def test_reads_with_tokens_from_the_provider_one_per_scope(
        self, provider: StandInProvider, registry_with_provider: RegistryWithProvider
    ) -> None:
        household_id = await _file(registry_with_provider, provider)
        registry = RegistryClient.from_settings(
            registry_with_provider.verification, transport=registry_with_provider.transport()
        )
        try:
            masked = await registry.household(household_id)
            clear = await registry.household(household_id, pii=True, purpose="核对 test")
            await registry.household(household_id)
        finally:
            await registry.aclose()

        assert "*" in masked["members"][0]["identity_number"]
        assert "*" not in clear["members"][0]["identity_number"]
        scopes = [asked["form"]["scope"] for asked in provider.token_requests]
        assert scopes == ["registry:read", "registry:read pii:read"]

    async def test_a_refused_token_is_fetched_again_once_and_the_read_repeated(
        self, provider: StandInProvider, registry_with_provider: RegistryWithProvider
    ) -> None:
        household_id = await _file(registry_with_provider, provider)
        provider.audiences = ["another-audience"]  # the first token: one the registry refuses
        registry = registry_with_provider.client(_credentials(provider))
        try:
            body = await registry.household(household_id)
        finally:
            await registry.aclose()

        assert body["id"] == household_id
        assert provider.requests["token"] == 2

    async def test_a_fresh_token_refused_again_is_a_clear_error_counted_once(
        self, provider: StandInProvider, registry_with_provider: RegistryWithProvider
    ) -> None:
        provider.audiences = ["another-audience"] * 5
        rejected = _fetches(provider.client_id, "rejected")
        registry = registry_with_provider.client(_credentials(provider))
        try:
            with pytest.raises(RegistryRefusedToken, match="svc-test"):
                await registry.household(UNKNOWN_HOUSEHOLD)
        finally:
            await registry.aclose()

        assert provider.requests["token"] == 2  # once, then again once: no loop
        assert _fetches(provider.client_id, "rejected") == rejected + 1

    async def test_no_token_to_be_had_makes_the_registry_unavailable_for_now(
        self, provider: StandInProvider, registry_with_provider: RegistryWithProvider
    ) -> None:
        provider.down = True
        registry = registry_with_provider.client(_credentials(provider))
        try:
            with pytest.raises(RegistryUnavailable, match="no token"):
                await registry.household(UNKNOWN_HOUSEHOLD)
        finally:
            await registry.aclose()


def test_every_service_publishes_the_token_fetch_counter_from_zero() -> None:
    from prometheus_client import generate_latest

    from shared.observability import Metrics

    ClientCredentials(
        issuer="http://idp.test", client_id="svc-metrics", client_secret="s", scope=""
    )
    SERVICE_TOKEN_FETCHES.labels(client="svc-metrics", outcome="ok").inc()

    for service in ("verification", "notifications"):
        text = generate_latest(Metrics(service).registry).decode()
        series = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('bangfu_service_token_fetches_total{client="svc-metrics"')
        }
        assert series == {
            f'bangfu_service_token_fetches_total{{client="svc-metrics",outcome="{outcome}"}}': n
            for outcome, n in [("ok", 1), ("refused", 0), ("unavailable", 0), ("rejected", 0)]
        }
