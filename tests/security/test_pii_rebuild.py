"""No output of the registry lets an identity number be rebuilt without `pii:read`.

Everything a caller without `pii:read` can obtain about a household — its file, the list, its
history, the public notice, the measures card and the ledger export (.xlsx), the refusal of a
second filing, the household events on NATS and the log lines — is gathered, and for each member
every masked number found is merged with the region, the sex and the birth information shown.
The valid GB 11643 numbers that still agree with all of it must stay many (≥ 1,000): with the
region and the check character shown and only the birth year, about 16,600 remain for a person
of known sex. Each 409 of a filing tests at most 30 candidates (the member cap), so the filing
conflict as an oracle needs hundreds of refused filings per person, each in the request log.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import nats
from openpyxl import load_workbook

from shared.observability import configure_logging
from tests.helpers import bearer, household_body, identity_number
from tests.security.rebuild import MASKED, candidates
from tests.services.registry.test_api import Walk

READ = ("registry:read",)
PEOPLE = [
    ("张三明", "head", date(1980, 5, 17), 123, "male"),
    ("李芳", "spouse", date(1982, 8, 9), 124, "female"),
    ("张小明", "child", date(2010, 1, 2), 125, "male"),
]
GRANDPARENT = ("张老汉", "grandparent", date(1950, 3, 4), 127, "male")
EVERYONE = [*PEOPLE, GRANDPARENT]
ENOUGH = 1_000


def number(birth: date, serial: int) -> str:
    return identity_number(birth=birth, serial=serial)


def xlsx_text(content: bytes) -> str:
    book = load_workbook(io.BytesIO(content))
    return "\n".join(
        str(value)
        for sheet in book.worksheets
        for row in sheet.iter_rows(values_only=True)
        for value in row
        if value is not None
    )


async def everything_a_masked_reader_sees(
    registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every output without pii:read (as text), and the members as the file shows them."""
    logs = io.StringIO()
    configure_logging(json=True, stream=logs)
    nc = await nats.connect(nats_url)
    events = await nc.subscribe("bangfu.registry.>")
    outputs: list[str] = []
    try:
        head, *others = PEOPLE
        filed = await registry.post(
            "/v1/households",
            json=household_body(
                head_number=number(head[2], head[3]),
                members=[
                    {"name": n, "relation": r, "identity_number": number(b, s)}
                    for n, r, b, s, _ in others
                ],
            ),
            headers=bearer(token("registry:write")),
        )
        assert filed.status_code == 201, filed.text
        outputs.append(filed.text)
        household_id = filed.json()["id"]
        name, relation, birth, serial, _ = GRANDPARENT
        added = await registry.post(
            f"/v1/households/{household_id}/members",
            json={"name": name, "relation": relation, "identity_number": number(birth, serial)},
            headers={**bearer(token("registry:write")), "If-Match": '"1"'},
        )
        assert added.status_code == 201, added.text
        outputs.append(added.text)
        walk = Walk(registry, token, household_id)
        walk.etag = added.headers["etag"]
        outputs.append((await walk.step("community_review", "review:community")).text)
        await walk.plan()
        for step, scope in (
            ("street_review", "review:street"),
            ("county_approve", "review:county"),
            ("start_notice", "review:county"),
        ):
            outputs.append((await walk.step(step, scope)).text)
        spouse = number(PEOPLE[1][2], PEOPLE[1][3])
        conflict = await registry.post(
            "/v1/households",
            json=household_body(
                head_number=identity_number(serial=901),
                members=[{"name": "李芳", "relation": "spouse", "identity_number": spouse}],
            ),
            headers=bearer(token("registry:write")),
        )
        assert conflict.status_code == 409, conflict.text
        outputs.append(conflict.text)
        reader = bearer(token(*READ))
        shown = await registry.get(f"/v1/households/{household_id}", headers=reader)
        outputs.append(shown.text)
        for path in (
            "/v1/households",
            f"/v1/households/{household_id}/history",
            "/v1/notices/411302",
            "/v1/statistics",
        ):
            answer = await registry.get(path, headers=reader)
            assert answer.status_code == 200, answer.text
            outputs.append(answer.text)
        for path in (f"/v1/households/{household_id}/card.xlsx", "/v1/exports/ledger"):
            sheet = await registry.get(path, headers=reader)
            assert sheet.status_code == 200, sheet.text
            outputs.append(xlsx_text(sheet.content))
        seen: list[str] = []
        while not any(".noticed." in subject for subject in seen):
            message = await events.next_msg(timeout=10)
            seen.append(message.subject)
            outputs.append(message.data.decode())
        await asyncio.sleep(0.2)
        while events.pending_msgs:
            outputs.append((await events.next_msg(timeout=1)).data.decode())
    finally:
        await nc.close()
        configure_logging(json=True)
    outputs.append(logs.getvalue())
    return outputs, shown.json()["members"]


class TestNoOutputRebuildsANumber:
    async def test_every_members_number_keeps_a_thousand_candidates_across_every_output(
        self, registry: httpx.AsyncClient, token: Callable[..., str], nats_url: str
    ) -> None:
        outputs, members = await everything_a_masked_reader_sees(registry, token, nats_url)
        text = "\n".join(outputs)
        today = date.today()
        for (name, _, birth, serial, sex), member in zip(EVERYONE, members, strict=True):
            clear = number(birth, serial)
            assert clear not in text
            for shown_date in (birth.isoformat(), f"{birth:%Y%m%d}", f"{birth:%Y/%m/%d}"):
                assert shown_date not in text, f"{name}'s birth date is shown: {shown_date}"
            assert member.get("birth_date") is None
            assert member["birth_year"] == birth.year
            assert member["sex"] == sex
            masks = [m for m in MASKED.findall(text) if _agrees(m, clear)]
            assert masks, f"no masked number of {name} was found"
            merged = "".join(
                next((m[i] for m in masks if m[i] != "*"), "*") for i in range(len(clear))
            )
            found = candidates(
                merged, region="411302", today=today, birth_year=member["birth_year"], sex=sex
            )
            assert found >= ENOUGH, f"{name}: {merged} leaves only {found} candidates"

    async def test_the_old_mask_beside_the_birth_date_left_exactly_one(self) -> None:
        """The attack works on the former outputs: the counter can find a number."""
        birth, serial = PEOPLE[0][2], PEOPLE[0][3]
        clear = number(birth, serial)
        former = clear[:6] + "*" * 8 + clear[-4:]
        assert candidates(former, region="411302", today=date.today(), birth_date=birth) == 1


def _agrees(mask: str, number: str) -> bool:
    return "*" in mask and all(m in ("*", n) for m, n in zip(mask, number, strict=True))
