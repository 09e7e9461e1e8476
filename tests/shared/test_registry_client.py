"""The registry client against the real registry served over HTTP on loopback."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI, Response

from services.verification.settings import VerificationSettings
from shared.events.consumer import TryLater
from shared.natsserver import free_port
from shared.registry_client import (
    HouseholdNotFound,
    RegistryAway,
    RegistryClient,
    RegistryUnavailable,
)
from shared.settings import SuiteSettings
from tests.conftest import serving
from tests.helpers import bearer, household_body, identity_number


async def test_reads_a_household_masked_or_in_clear_as_asked(
    registry_server: str, suite: SuiteSettings, token: Callable[..., str]
) -> None:
    number = identity_number(region="411302", serial=41)
    async with httpx.AsyncClient(base_url=registry_server) as http:
        created = await http.post(
            "/v1/households",
            json=household_body(head_number=number),
            headers=bearer(token("registry:write")),
        )
    assert created.status_code == 201, created.text
    household_id = created.json()["id"]

    settings = VerificationSettings(suite=suite, registry_url=registry_server)
    client = RegistryClient.from_settings(settings)
    try:
        masked = await client.household(household_id)
        clear = await client.household(household_id, pii=True, purpose="核对 test")
        assert masked["members"][0]["identity_number"] != number
        assert "*" in masked["members"][0]["identity_number"]
        assert clear["members"][0]["identity_number"] == number
        assert await client.declarations(household_id) == []
        with pytest.raises(HouseholdNotFound):
            await client.household("0190a000-0000-7000-8000-000000000000")
    finally:
        await client.aclose()


async def test_a_clear_read_says_why_or_is_not_sent(
    registry_server: str, suite: SuiteSettings, token: Callable[..., str]
) -> None:
    async with httpx.AsyncClient(base_url=registry_server) as http:
        created = await http.post(
            "/v1/households", json=household_body(), headers=bearer(token("registry:write"))
        )
        unsaid = await http.get(
            f"/v1/households/{created.json()['id']}",
            headers=bearer(token("registry:read", "pii:read")),
        )
    assert unsaid.status_code == 400  # the registry refuses a clear read without a purpose
    client = RegistryClient.from_settings(
        VerificationSettings(suite=suite, registry_url=registry_server)
    )
    try:
        with pytest.raises(ValueError, match="Bangfu-Purpose"):
            await client.household(created.json()["id"], pii=True)
        clear = await client.household(created.json()["id"], pii=True, purpose="核对 test")
        assert clear["members"][0]["birth_date"] == "1980-05-17"
    finally:
        await client.aclose()


async def test_an_unreachable_registry_is_unavailable_not_an_error_of_the_caller(
    suite: SuiteSettings,
) -> None:
    settings = VerificationSettings(suite=suite, registry_url=f"http://127.0.0.1:{free_port()}")
    client = RegistryClient.from_settings(settings)
    try:
        with pytest.raises(RegistryAway):
            await client.household("anything")
    finally:
        await client.aclose()


def test_with_an_identity_provider_a_client_of_it_is_required(suite: SuiteSettings) -> None:
    """Settings refuse this on construction; a client built from unchecked ones refuses too,
    rather than fall back to development tokens no provider's registry accepts."""
    production = suite.model_copy(
        update={"env": "production", "auth_issuer": "https://idp.example.test"}
    )
    settings = VerificationSettings.model_construct(
        suite=production, registry_url="http://127.0.0.1:1", client_id=None, client_secret=None
    )
    with pytest.raises(ValueError, match="BANGFU_VERIFICATION_CLIENT_ID"):
        RegistryClient.from_settings(settings)


@pytest.mark.parametrize(
    ("status", "away"), [(503, True), (429, True), (502, True), (504, True), (500, False)]
)
async def test_a_registry_away_is_waited_out_and_a_server_error_counts_toward_a_dead_letter(
    suite: SuiteSettings, status: int, away: bool
) -> None:
    """An event's handler meeting a registry that is away retries for as long as that lasts
    (`TryLater`); a 500 may be the event's own data and ends, after the retries, dead-lettered."""
    answering = FastAPI()

    @answering.get("/v1/households/{household_id}")
    async def household(household_id: str) -> Response:
        return Response(status_code=status)

    with serving(answering) as url:
        client = RegistryClient.from_settings(VerificationSettings(suite=suite, registry_url=url))
        try:
            with pytest.raises(RegistryUnavailable) as raised:
                await client.household("h-1")
        finally:
            await client.aclose()
    assert isinstance(raised.value, TryLater) is away
    assert isinstance(raised.value, RegistryAway) is away
    assert str(status) in str(raised.value)
