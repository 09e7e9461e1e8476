"""An Idempotency-Key replays its answer only to a token allowed what the first one was.

The key is the client's; a client may hold several tokens (one per county office, one with
pii:read). A replay answers without running the write, so nothing checks the replaying token's
regions or scopes: it must have the same ones, or be refused like a key reused for another body.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.helpers import bearer, household_body

PATH = "/v1/households"


class TestAReplayIsBoundToTheTokensPowers:
    async def test_a_token_of_another_region_gets_no_stored_answer(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        ours = {**bearer(token("registry:write", regions=["4113"])), "Idempotency-Key": "K"}
        first = await registry.post(PATH, json=household_body(), headers=ours)
        assert first.status_code == 201, first.text
        household_id = first.json()["id"]
        theirs = {**bearer(token("registry:write", regions=["42"])), "Idempotency-Key": "K"}
        replayed = await registry.post(PATH, json=household_body(), headers=theirs)
        assert replayed.status_code == 422, replayed.text
        assert replayed.json()["type"].endswith("/idempotency-key-reused")
        assert "other regions or scopes" in replayed.json()["detail"]
        assert household_id not in replayed.text
        assert "location" not in replayed.headers
        again = await registry.post(PATH, json=household_body(), headers=ours)
        assert again.status_code == 201, again.text
        assert again.json() == first.json()
        assert again.headers["location"] == f"{PATH}/{household_id}"

    async def test_a_token_with_other_scopes_gets_no_stored_answer(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        plain = bearer(token("registry:write", regions=["4113"]))
        first = await registry.post(
            PATH, json=household_body(), headers={**plain, "Idempotency-Key": "K"}
        )
        assert first.status_code == 201, first.text
        wider = bearer(token("registry:write", "pii:read", regions=["4113"]))
        replayed = await registry.post(
            PATH, json=household_body(), headers={**wider, "Idempotency-Key": "K"}
        )
        assert replayed.status_code == 422, replayed.text
        assert first.json()["id"] not in replayed.text

    async def test_the_order_of_regions_and_scopes_in_the_token_does_not_matter(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        one = bearer(token("registry:write", "registry:read", regions=["4113", "4201"]))
        first = await registry.post(
            PATH, json=household_body(), headers={**one, "Idempotency-Key": "K"}
        )
        assert first.status_code == 201, first.text
        same = bearer(token("registry:read", "registry:write", regions=["4201", "4113"]))
        again = await registry.post(
            PATH, json=household_body(), headers={**same, "Idempotency-Key": "K"}
        )
        assert again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"]
