"""A read changes nothing: a household's card or eligibility on a day other than today is a
receipt only. The household's current card, and the events that tell it, follow today and the
recomputations (events, parameter changes, a new input) — never the day a reader chose."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import httpx

from services.benefits import store
from services.benefits.settings import BenefitsSettings
from shared.db import Database
from tests.helpers import bearer
from tests.services.benefits.test_api import events
from tests.services.benefits.test_consumers import collect, eventually
from tests.services.benefits.test_pii import HOUSEHOLD, hold_household, household

# Days open to benefits:read (firsts of a month), one ahead of today and one behind.
OTHER_DAYS = ("2045-05-01", "2019-12-01")


async def current_card(settings: BenefitsSettings) -> dict[str, Any] | None:
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        row = await store.get_current_card(session, HOUSEHOLD)
    await db.dispose()
    return row


class TestADatedReadIsAReceiptOnly:
    async def test_a_card_of_another_first_leaves_the_current_card_and_publishes_nothing(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
        nats_url: str,
    ) -> None:
        await hold_household(benefits, token)
        current = await current_card(benefits_settings)
        assert current is not None and current["version"] == 1
        published = await events(benefits_settings)
        nc, changed = await collect(nats_url, "bangfu.benefits.entitlements.changed.>")
        await nc.flush()
        reader = bearer(token("benefits:read", regions=["4113"]))
        for on in OTHER_DAYS:
            for what in ("card", "eligibility"):
                answer = await benefits.get(
                    f"/v1/households/{HOUSEHOLD}/{what}", params={"on": on}, headers=reader
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["on"] == on
                assert answer.json()["decision_id"] != current["decision_id"]
        assert await current_card(benefits_settings) == current
        assert await events(benefits_settings) == published
        # Today's card is the current one still: read plainly, it is the same and tells nothing.
        today = await benefits.get(f"/v1/households/{HOUSEHOLD}/card", headers=reader)
        assert today.status_code == 200, today.text
        assert today.json()["on"] == date.today().isoformat()
        assert await current_card(benefits_settings) == current
        assert await events(benefits_settings) == published
        # A real change is told on the bus; by then any event of the reads above would be there.
        admin = bearer(token("benefits:admin", regions=["4113"]))
        richer = {**household(), "declared_income_fen": 50_000_000}
        put = await benefits.put(
            f"/v1/households/{HOUSEHOLD}", json={"household": richer}, headers=admin
        )
        assert put.status_code == 200, put.text
        await eventually(lambda: _some(changed))
        await nc.close()
        assert [(e["as_of"], e["decision_id"]) for e in changed] == [
            (date.today().isoformat(), put.json()["decision_id"])
        ]
        after = await current_card(benefits_settings)
        assert after is not None
        assert (after["decision_id"], after["version"]) == (put.json()["decision_id"], 2)


async def _some(seen: list[dict[str, Any]]) -> bool:
    return bool(seen)
