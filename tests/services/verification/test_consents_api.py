"""Consents through the verification API on a real database and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import select

from services.verification.app import create_app
from services.verification.settings import VerificationSettings
from shared import audit
from shared.db import Database
from shared.settings import SuiteSettings
from tests.conftest import running
from tests.helpers import bearer, identity_number

SCOPE = "verification:request"


@pytest.fixture
async def settings(
    suite: SuiteSettings, migrated_database: Callable[[str], Awaitable[tuple[str, str | None]]]
) -> VerificationSettings:
    url, schema = await migrated_database("verification")
    return VerificationSettings(suite=suite, database_url=url, database_schema=schema)


@pytest.fixture
async def verification(settings: VerificationSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


DATES = ("signed_on", "expires_on")


def consent_body(**overrides: object) -> dict[str, object]:
    today = date.today()
    return {
        "identity_number": identity_number(),
        "region": "411302",
        "signed_by": "张三明",
        "signed_on": (today - timedelta(days=10)).isoformat(),
        "expires_on": (today + timedelta(days=355)).isoformat(),
        "departments": ["tax", "finance"],
        "document_ref": "宛城-2026-0001",
        **overrides,
    }


class TestConsents:
    async def test_a_recorded_consent_is_found_by_number_masked_and_audited(
        self,
        verification: httpx.AsyncClient,
        token: Callable[..., str],
        settings: VerificationSettings,
    ) -> None:
        created = await verification.post(
            "/v1/consents", json=consent_body(), headers=bearer(token(SCOPE))
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["identity_number"] == "411302***********" + identity_number()[-1]
        assert body["state"] == "valid"
        assert body["departments"] == ["finance", "tax"]
        found = await verification.post(
            "/v1/consents/search",
            headers=bearer(token(SCOPE)),
            json={"identity_number": identity_number()},
        )
        assert [c["id"] for c in found.json()] == [body["id"]]
        url, schema = settings.database
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            actions = (await session.execute(select(audit.audit_log.c.action))).scalars().all()
        await db.dispose()
        assert actions == ["consent.recorded"]

    async def test_revoking_ends_it_and_a_second_revocation_is_refused(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        created = (
            await verification.post(
                "/v1/consents", json=consent_body(), headers=bearer(token(SCOPE))
            )
        ).json()
        url = f"/v1/consents/{created['id']}/revoke"
        revoked = await verification.post(
            url, json={"reason": "本人撤回"}, headers=bearer(token(SCOPE))
        )
        assert revoked.json()["state"] == "revoked"
        again = await verification.post(url, json={"reason": "x"}, headers=bearer(token(SCOPE)))
        assert again.status_code == 422

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"signed_on": 1}, "signed_on"),  # dates as days from today, when the test runs
            ({"expires_on": -30}, "expires_on"),
            ({"identity_number": "411302198005171230"}, "identity_number"),
            ({"departments": ["tax", "astrology"]}, "departments.1"),
        ],
    )
    async def test_an_impossible_consent_is_refused_naming_the_field(
        self,
        verification: httpx.AsyncClient,
        token: Callable[..., str],
        overrides: dict[str, object],
        field: str,
    ) -> None:
        # Not computed when the tests are collected: a run that crossed midnight signed
        # "tomorrow" today.
        dated = {
            k: (date.today() + timedelta(days=v)).isoformat() if k in DATES else v
            for k, v in overrides.items()
        }
        response = await verification.post(
            "/v1/consents", json=consent_body(**dated), headers=bearer(token(SCOPE))
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field

    async def test_consents_stay_in_the_callers_regions(
        self, verification: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        outside = await verification.post(
            "/v1/consents", json=consent_body(), headers=bearer(token(SCOPE, regions=["4101"]))
        )
        assert outside.status_code == 403
        created = (
            await verification.post(
                "/v1/consents", json=consent_body(), headers=bearer(token(SCOPE))
            )
        ).json()
        hidden = await verification.get(
            f"/v1/consents/{created['id']}", headers=bearer(token(SCOPE, regions=["4101"]))
        )
        assert hidden.status_code == 404
        none = await verification.post(
            "/v1/consents/search",
            headers=bearer(token(SCOPE, regions=["4101"])),
            json={"identity_number": identity_number()},
        )
        assert none.json() == []
