"""The list filters the county office's queues are made of (异议待处理, 公示期满待纳入,
脱困提示) and the list's exact total: each takes exactly its households, in the caller's
regions, however many pages the rest of the register fills."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import httpx
from sqlalchemy import update

from services.registry import store
from services.registry.settings import RegistrySettings
from shared.db import Database
from tests.helpers import bearer, identity_number
from tests.services.registry.test_api import Walk, file_household

SERIALS = iter(range(300, 400))


async def _noticed(
    registry: httpx.AsyncClient, token: Callable[..., str], region: str = "411302"
) -> Walk:
    """A household filed by a sector (it enters at county review) and publicly noticed."""
    created = await file_household(
        registry,
        token,
        region=region,
        head_number=identity_number(region=region, serial=next(SERIALS)),
        channel="sector",
        submitted_by="工会",
    )
    walk = Walk(registry, token, created.json()["id"])
    await walk.step("county_approve", "review:county")
    await walk.step("start_notice", "review:county")
    return walk


async def _ids(
    registry: httpx.AsyncClient, token: str, **params: str
) -> tuple[list[str], int | None]:
    """Every page of the list with these filters: the ids, and the total the first page gave."""
    ids: list[str] = []
    total: int | None = None
    cursor: dict[str, str] = {}
    while True:
        page = await registry.get(
            "/v1/households", params={**params, **cursor, "limit": "2"}, headers=bearer(token)
        )
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"] if total is None else total
        assert body["total"] == total  # the same on every page
        ids += [item["id"] for item in body["items"]]
        if not body["next_cursor"]:
            return ids, total
        cursor = {"cursor": body["next_cursor"]}


async def test_each_queue_filter_takes_exactly_its_households_with_their_total(
    registry: httpx.AsyncClient, token: Callable[..., str], registry_settings: RegistrySettings
) -> None:
    objected = [await _noticed(registry, token) for _ in range(3)]
    for walk in objected:
        await walk.step("object", "registry:write", comment="家中有经营性车辆")
    resolved = await _noticed(registry, token)
    await resolved.step("object", "registry:write", comment="已核实无误")
    await resolved.step("start_notice", "review:county")  # noticed again: the objection is closed
    ended = [await _noticed(registry, token) for _ in range(3)]
    await _noticed(registry, token)  # its 公示 still runs: not ended
    elsewhere = await _noticed(registry, token, region="410105")
    await elsewhere.step("object", "registry:write", comment="另一地区的异议")
    flagged = [await _noticed(registry, token) for _ in range(3)]
    unflagged = await _noticed(registry, token)
    for walk in [*flagged, unflagged]:
        await walk.step("enroll", "review:county", expect=409)  # the notice has not ended yet

    url, schema = registry_settings.database
    db = Database(url, schema=schema)
    yesterday = date.today() - timedelta(days=1)
    ended_ids = [w.id for w in [*ended, *flagged, unflagged]]
    async with db.sessionmaker() as session:
        await session.execute(
            update(store.household)
            .where(store.household.c.id.in_(ended_ids))
            .values(notice_ends_on=yesterday)
        )
        await session.commit()
    for walk in [*flagged, unflagged]:
        await walk.step("enroll", "review:county")
    async with db.sessionmaker() as session:
        flag = {"flagged_at": "2026-11-30T01:00:00+00:00", "months_above": 6, "required": 6}
        await session.execute(
            update(store.household)
            .where(store.household.c.id.in_([w.id for w in flagged]))
            .values(exit_eligibility=flag)
        )
        await session.commit()
    await db.dispose()

    county = token("registry:read", regions=["4113"])
    assert await _ids(registry, county, objected="true", count="true") == (
        [w.id for w in objected],
        3,
    )
    assert await _ids(registry, county, notice_ended="true", count="true") == (
        [w.id for w in ended],
        3,
    )
    assert await _ids(registry, county, exit_flagged="true", count="true") == (
        [w.id for w in flagged],
        3,
    )
    # The total of a plain list counts every page; without ?count it is not given.
    everyone, total = await _ids(registry, county, count="true")
    assert total == len(everyone) == 12
    plain = await registry.get("/v1/households", headers=bearer(county))
    assert plain.json()["total"] is None
    # Another region's objection is its own: 4101 sees it, 4113 never did.
    other = token("registry:read", regions=["4101"])
    assert await _ids(registry, other, objected="true", count="true") == ([elsewhere.id], 1)
    nobody = token("registry:read", regions=["4102"])
    assert await _ids(registry, nobody, objected="true", count="true") == ([], 0)
    empty = token("registry:read", regions=[])  # an empty regions claim is nowhere
    for queue in ("objected", "notice_ended", "exit_flagged"):
        assert await _ids(registry, empty, **{queue: "true"}, count="true") == ([], 0)
