"""No output of the benefits service helps rebuild a member's identity number.

A reader without `pii:read` knows from the registry's masked file the region and check
character of each member's number (`411302***********X`), the birth year and the sex. The
benefits outputs of a household decided on many dates — its cards, eligibility and exit
answers, the decision receipts, re-derivations and events — are gathered, and everything they
say about a member's age on a date (an age, a threshold met or not, a birth date) narrows the
birth dates still possible, and so do the categories and amounts of each dated card: a birth
date is possible only if the rules, run with it, give every result the cards showed. The valid
numbers left must stay many (≥ 1,000).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from alembic import command
from sqlalchemy import select, update

from services.benefits import store
from services.benefits.app import create_app
from services.benefits.domain import rules
from services.benefits.domain.card import batch_results
from services.benefits.domain.facts import age_on, columns
from services.benefits.domain.parameters import Book, load_book
from services.benefits.schemas import HouseholdIn
from services.benefits.settings import BenefitsSettings
from shared import audit
from shared.db import Database
from shared.identity import mask_identity_number
from shared.migrations import alembic_config
from tests.conftest import running
from tests.helpers import bearer, identity_number
from tests.security.rebuild import candidates
from tests.services.benefits.test_api import events

ENOUGH = 1_000
HOUSEHOLD = "h-pii"
# (birth date, serial, sex, the member's inputs beyond the birth date)
PEOPLE: list[tuple[date, int, str, dict[str, Any]]] = [
    (date(1980, 5, 17), 123, "male", {}),
    (date(1982, 8, 9), 124, "female", {"medical_self_paid_fen": 3_000_000}),
    (
        date(2010, 1, 2),
        125,
        "male",
        {"schooling": [{"stage": "junior_high", "start": "2024-09-01", "boarding": True}]},
    ),
    (
        date(2007, 12, 10),
        126,
        "female",
        {
            "orphan": True,
            "schooling": [{"stage": "secondary_vocational", "start": "2025-09-01"}],
        },
    ),
    (date(1950, 3, 4), 127, "male", {}),
]
# A decision on the first of every month for two years, today, and a few days apart now and
# then: around the grandfather's birthday (3月4日) and ten days apart in November. A reader
# without pii:read is answered only on today and the firsts (`open_day`).
DATES = sorted(
    {date(2025 + m // 12, m % 12 + 1, 1) for m in range(23)}
    | {date(2026, 3, 6), date(2026, 11, 19), date.today()}
)
PURPOSE = "异议复核: 2045年健康体检"
STATED_AGE = re.compile(r"成员(\d+):(\d+)岁")
STATED_THRESHOLD = re.compile(r"成员(\d+):[^;。]*?(年满|未满)(\d+)周岁")


def open_day(on: date) -> bool:
    """The days a benefits:read caller may date a household's answer: today and the firsts."""
    return on == date.today() or on.day == 1


async def audit_rows(settings: BenefitsSettings) -> list[dict[str, Any]]:
    """The benefits audit log, oldest first, checked to be an unbroken chain."""
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        rows = (
            (await session.execute(select(audit.audit_log).order_by(audit.audit_log.c.seq)))
            .mappings()
            .all()
        )
        assert await audit.verify(session, profile=settings.suite.crypto_profile) == []
    await db.dispose()
    return [dict(r) for r in rows]


async def hold_household(benefits: httpx.AsyncClient, token: Callable[..., str]) -> None:
    admin = bearer(token("benefits:admin", regions=["4113"]))
    put = await benefits.put(
        f"/v1/households/{HOUSEHOLD}", json={"household": household()}, headers=admin
    )
    assert put.status_code == 200, put.text


def household() -> dict[str, Any]:
    """A household with no income (低保), an orphan student and a grandfather past 65."""
    return {
        "region": "411302",
        "declared_income_fen": 0,
        "members": [{"birth_date": birth.isoformat(), **more} for birth, _, _, more in PEOPLE],
    }


def shown_result(card: dict[str, Any]) -> dict[str, Any]:
    """A card's categories and amounts, as a reader sees them."""
    return {
        "eligibility": {d["category"]: d["applies"] for d in card["eligibility"]},
        "measures": {m["code"]: [m["amount_fen"], m["quantity"]] for m in card["measures"]},
    }


def same_results(
    book: Book, member: int, days: set[date], cards: list[dict[str, Any]]
) -> set[date]:
    """The `days` on which `member`, born then (the others as they are), gets every card shown."""
    ordered = sorted(days)
    known = HouseholdIn.model_validate(household()).to_domain()
    for card in cards:
        on = date.fromisoformat(card["on"])
        people = [
            dataclasses.replace(
                known,
                members=tuple(
                    dataclasses.replace(p, birth_date=day) if i == member else p
                    for i, p in enumerate(known.members, start=1)
                ),
            )
            for day in ordered
        ]
        cols = columns(people, on=on)
        found = batch_results(
            rules.evaluate(cols, rules.params_for(book, cols, on=on, keys=rules.ALL_KEYS)),
            people,
        )
        ordered = [
            day
            for day, result in zip(ordered, found, strict=True)
            if {k: result[k] for k in ("eligibility", "measures")} == shown_result(card)
        ]
    return set(ordered)


def possible_births(birth_year: int, said: list[tuple[date, str]], member: int) -> set[date]:
    """The days of `birth_year` consistent with what the texts, each dated, say of `member`."""
    days = {
        date(birth_year, 1, 1) + timedelta(days=n)
        for n in range((date(birth_year + 1, 1, 1) - date(birth_year, 1, 1)).days)
    }
    for on, text in said:
        for number, age in STATED_AGE.findall(text):
            if int(number) == member:
                days = {d for d in days if age_on(d, on) == int(age)}
        for number, reached, years in STATED_THRESHOLD.findall(text):
            if int(number) == member:
                met = reached == "年满"
                days = {d for d in days if (age_on(d, on) >= int(years)) == met}
        for shown in re.findall(r'"birth_date": ?"(\d{4}-\d{2}-\d{2})"', text):
            shown_date = date.fromisoformat(shown)
            if shown_date.year == birth_year:
                days &= {shown_date}
    return days


async def everything_a_benefits_reader_sees(
    benefits: httpx.AsyncClient, token: Callable[..., str], settings: BenefitsSettings
) -> list[tuple[date, str]]:
    """Every benefits output a reader without pii:read gets, each with its decision's date."""
    await hold_household(benefits, token)
    reader = bearer(token("benefits:read", regions=["4113"]))
    said: list[tuple[date, str]] = []
    decisions: list[str] = []
    for on in DATES:
        for what in ("card", "eligibility"):
            answer = await benefits.get(
                f"/v1/households/{HOUSEHOLD}/{what}", params={"on": str(on)}, headers=reader
            )
            if not open_day(on):
                assert answer.status_code == 403, answer.text
                continue
            assert answer.status_code == 200, answer.text
            said.append((on, answer.text))
            decisions.append(answer.json()["decision_id"])
    for decision_id in decisions:
        receipt = await benefits.get(f"/v1/decisions/{decision_id}", headers=reader)
        assert receipt.status_code == 200, receipt.text
        said.append((date.fromisoformat(receipt.json()["as_of"]), receipt.text))
        again = await benefits.post(f"/v1/decisions/{decision_id}/rederive", headers=reader)
        assert again.status_code == 200, again.text
        said.append((date.fromisoformat(receipt.json()["as_of"]), again.text))
    exit_ = await benefits.get(f"/v1/households/{HOUSEHOLD}/exit", headers=reader)
    assert exit_.status_code == 200, exit_.text
    said.append((date.today(), exit_.text))
    for _, event in await events(settings):
        said.append((date.fromisoformat(event["data"]["as_of"]), json.dumps(event)))
    return said


class TestNoBenefitsOutputRebuildsANumber:
    async def test_every_members_number_keeps_a_thousand_candidates_across_every_decision(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        said = await everything_a_benefits_reader_sees(benefits, token, benefits_settings)
        text = "\n".join(t for _, t in said)
        book = load_book(benefits_settings.parameters_dir)
        cards = [card for _, t in said if "measures" in (card := json.loads(t)) and "on" in card]
        for member, (birth, serial, sex, _) in enumerate(PEOPLE, start=1):
            for shown in (birth.isoformat(), f"{birth:%Y%m%d}", f"{birth:%Y/%m/%d}"):
                assert shown not in text, f"member {member}'s birth date is shown: {shown}"
            assert not re.search(rf"成员{member}:\d+岁", text), f"member {member}'s age is shown"
            days = same_results(book, member, possible_births(birth.year, said, member), cards)
            assert birth in days
            found = candidates(
                mask_identity_number(identity_number(birth=birth, serial=serial)),
                region="411302",
                today=date.today(),
                birth_year=birth.year,
                birth_dates=days,
                sex=sex,
            )
            assert found >= ENOUGH, f"member {member}: {len(days)} days, {found} candidates"

    async def test_cards_on_the_eve_and_the_day_of_a_65th_birthday_are_refused_without_pii_read(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        """The reader chooses the day: two cards a day apart around a 65th birthday (the health
        check counts the members of 65) would pin the birth date, ~45 numbers left."""
        await hold_household(benefits, token)
        reader = bearer(token("benefits:read", regions=["4113"]))
        birth = PEOPLE[0][0]
        for on in (date(birth.year + 65, 5, 16), date(birth.year + 65, 5, 17)):
            for what in ("card", "eligibility"):
                answer = await benefits.get(
                    f"/v1/households/{HOUSEHOLD}/{what}", params={"on": str(on)}, headers=reader
                )
                assert answer.status_code == 403, answer.text
                assert answer.json()["missing_scopes"] == ["pii:read"]
                assert "pii:read" in answer.json()["detail"]
                assert "measures" not in answer.text

    async def test_the_same_cards_with_pii_read_pin_the_day_and_each_is_audited(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        await hold_household(benefits, token)
        reader = {
            **bearer(token("benefits:read", "pii:read", regions=["4113"], client_id="民政-复核")),
            "Bangfu-Purpose": quote(PURPOSE),
        }
        birth, serial, sex, _ = PEOPLE[0]
        days = [date(birth.year + 65, 5, 16), date(birth.year + 65, 5, 17)]
        cards = []
        for on in days:
            answer = await benefits.get(
                f"/v1/households/{HOUSEHOLD}/card", params={"on": str(on)}, headers=reader
            )
            assert answer.status_code == 200, answer.text
            cards.append(answer.json())
        book = load_book(benefits_settings.parameters_dir)
        assert same_results(book, 1, possible_births(birth.year, [], 1), cards) == {birth}
        rows = await audit_rows(benefits_settings)
        assert [
            (r["client_id"], r["action"], r["target"], r["purpose"], r["detail"]) for r in rows
        ] == [("民政-复核", "card.dated_read", HOUSEHOLD, PURPOSE, {"on": str(on)}) for on in days]
        assert all(r["outcome"] == "success" and r["at"] for r in rows)

    async def test_cards_on_the_firsts_around_a_65th_birthday_leave_a_thousand(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        """What stays open to benefits:read — today and the first of every month — tells the
        month a threshold was crossed, never the day."""
        await hold_household(benefits, token)
        reader = bearer(token("benefits:read", regions=["4113"]))
        birth, serial, sex, _ = PEOPLE[0]
        cards = []
        for on in (date(birth.year + 65, 5, 1), date(birth.year + 65, 6, 1)):
            answer = await benefits.get(
                f"/v1/households/{HOUSEHOLD}/card", params={"on": str(on)}, headers=reader
            )
            assert answer.status_code == 200, answer.text
            cards.append(answer.json())
        book = load_book(benefits_settings.parameters_dir)
        days = same_results(book, 1, possible_births(birth.year, [], 1), cards)
        found = candidates(
            mask_identity_number(identity_number(birth=birth, serial=serial)),
            region="411302",
            today=date.today(),
            birth_year=birth.year,
            birth_dates=days,
            sex=sex,
        )
        assert birth in days
        assert found >= ENOUGH, f"{len(days)} days, {found} candidates"
        assert await audit_rows(benefits_settings) == []

    async def test_the_explanations_still_name_the_threshold_each_rule_used(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        said = await everything_a_benefits_reader_sees(benefits, token, benefits_settings)
        card = json.loads(next(t for on, t in said if on == date(2026, 4, 1)))
        lines = {m["code"]: m["explanation"] for m in card["measures"]}
        assert "成员5:年满65周岁" in lines["health_check"]
        assert "成员5:年满60周岁" in lines["home_adaptation"]
        assert "成员4:孤儿,年满18周岁" in lines["orphan_grant"]
        assert "成员3:初中第2学年,寄宿" in lines["compulsory_grant"]
        assert lines["health_check"].endswith("四(三)4(2)①。")


class TestReceiptsMadeBefore:
    async def test_the_ages_their_explanations_stated_are_rewritten_as_thresholds(
        self, benefits_settings: BenefitsSettings, token: Callable[..., str]
    ) -> None:
        """Receipts are kept for years: the ages the former explanations stated go too."""
        admin = bearer(token("benefits:admin", "benefits:read", regions=["4113"]))
        async with running(create_app(benefits_settings)) as benefits:
            put = await benefits.put(
                f"/v1/households/{HOUSEHOLD}", json={"household": household()}, headers=admin
            )
            assert put.status_code == 200, put.text
        decision_id = put.json()["decision_id"]
        former = {
            "compulsory_grant": "输入:家庭5人;成员3:16岁,初中第3学年,寄宿。结果:1人",
            "orphan_grant": "输入:家庭5人;成员4:18岁,中职第1学年,非寄宿,孤儿。结果:1人",
            "health_check": "输入:家庭5人;成员1:62岁;成员5:76岁。结果:1人享受",
        }
        url, schema = benefits_settings.database
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            [body] = (
                await session.execute(
                    select(store.decision.c.body).where(store.decision.c.id == decision_id)
                )
            ).scalars()
            for line in body["measures"]:
                line["explanation"] = former.get(line["code"], line["explanation"])
            await session.execute(
                update(store.decision).where(store.decision.c.id == decision_id).values(body=body)
            )
            await session.commit()
        await db.dispose()
        config = alembic_config("benefits", url=url, schema=schema)
        await asyncio.to_thread(command.downgrade, config, "benefits_0003")
        await asyncio.to_thread(command.upgrade, config, "head")
        async with running(create_app(benefits_settings)) as benefits:
            receipt = await benefits.get(f"/v1/decisions/{decision_id}", headers=admin)
        assert receipt.status_code == 200, receipt.text
        lines = {m["code"]: m["explanation"] for m in receipt.json()["body"]["measures"]}
        assert lines["compulsory_grant"] == "输入:家庭5人;成员3:初中第3学年,寄宿。结果:1人"
        assert lines["orphan_grant"] == "输入:家庭5人;成员4:中职第1学年,非寄宿,孤儿。结果:1人"
        # The former text listed the members of 60 or more: true of each, and nothing more.
        assert (
            lines["health_check"] == "输入:家庭5人;成员1:年满60周岁;成员5:年满60周岁。结果:1人享受"
        )
        assert lines["home_adaptation"].endswith("四(三)6(1)④。")


class TestADayTheCallerChooses:
    """A household's answer dated by its reader on a day other than today or a first of a month
    needs pii:read and a purpose, and is audited: such days find a birthday."""

    async def test_with_pii_read_but_no_purpose_it_is_400_naming_the_header(
        self, benefits: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await hold_household(benefits, token)
        reader = bearer(token("benefits:read", "pii:read", regions=["4113"]))
        for what in ("card", "eligibility"):
            answer = await benefits.get(
                f"/v1/households/{HOUSEHOLD}/{what}", params={"on": "2045-05-17"}, headers=reader
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["type"].endswith("purpose-required")
            assert "Bangfu-Purpose" in answer.json()["detail"]

    async def test_today_and_the_first_of_a_month_stay_open_and_unaudited(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        await hold_household(benefits, token)
        reader = bearer(token("benefits:read", regions=["4113"]))
        for params in ({}, {"on": str(date.today())}, {"on": "2045-05-01"}, {"on": "2019-12-01"}):
            for what in ("card", "eligibility"):
                answer = await benefits.get(
                    f"/v1/households/{HOUSEHOLD}/{what}", params=params, headers=reader
                )
                assert answer.status_code == 200, (params, answer.text)
        assert await audit_rows(benefits_settings) == []

    async def test_another_regions_household_is_not_found_whatever_the_day(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        await hold_household(benefits, token)
        for scopes in (("benefits:read",), ("benefits:read", "pii:read")):
            headers = {**bearer(token(*scopes, regions=["4201"])), "Bangfu-Purpose": "x"}
            answer = await benefits.get(
                f"/v1/households/{HOUSEHOLD}/card", params={"on": "2045-05-17"}, headers=headers
            )
            assert answer.status_code == 404, answer.text
        assert await audit_rows(benefits_settings) == []

    async def test_an_audited_card_is_a_receipt_only_and_publishes_nothing(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        """Events reach readers without pii:read: a card of a chosen day never travels there."""
        await hold_household(benefits, token)
        published = await events(benefits_settings)
        reader = {
            **bearer(token("benefits:read", "pii:read", regions=["4113"])),
            "Bangfu-Purpose": quote(PURPOSE),
        }
        answer = await benefits.get(
            f"/v1/households/{HOUSEHOLD}/card", params={"on": "2045-05-17"}, headers=reader
        )
        assert answer.status_code == 200, answer.text
        assert await events(benefits_settings) == published

    async def test_a_receipt_of_such_a_day_is_read_back_only_with_pii_read(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        await hold_household(benefits, token)
        clear = {
            **bearer(token("benefits:read", "pii:read", regions=["4113"], client_id="复核")),
            "Bangfu-Purpose": quote(PURPOSE),
        }
        answer = await benefits.get(
            f"/v1/households/{HOUSEHOLD}/card", params={"on": "2045-05-17"}, headers=clear
        )
        decision_id = answer.json()["decision_id"]
        reader = bearer(token("benefits:read", regions=["4113"]))
        receipt = f"/v1/decisions/{decision_id}"
        assert (await benefits.get(receipt, headers=reader)).status_code == 403
        assert (await benefits.post(f"{receipt}/rederive", headers=reader)).status_code == 403
        assert (await benefits.get(receipt, headers=clear)).status_code == 200
        assert (await benefits.post(f"{receipt}/rederive", headers=clear)).status_code == 200
        rows = await audit_rows(benefits_settings)
        assert [(r["action"], r["target"], r["detail"]) for r in rows] == [
            ("card.dated_read", HOUSEHOLD, {"on": "2045-05-17"}),
            ("decision.dated_read", decision_id, {"on": "2045-05-17"}),
            ("decision.dated_read", decision_id, {"on": "2045-05-17"}),
        ]

    async def test_a_what_if_from_such_a_day_needs_pii_read_too(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        """Its counts of households entering and leaving a category, in a county of one held
        household, are that household's card on the day."""
        await hold_household(benefits, token)
        proposal = {"region": "411302", "value": 70000, "effective_from": "2045-05-17"}
        reader = bearer(token("benefits:read", regions=["4113"]))
        refused = await benefits.post("/v1/what-if", json=proposal, headers=reader)
        assert refused.status_code == 403, refused.text
        assert refused.json()["missing_scopes"] == ["pii:read"]
        clear = bearer(token("benefits:read", "pii:read", regions=["4113"]))
        unsaid = await benefits.post("/v1/what-if", json=proposal, headers=clear)
        assert unsaid.status_code == 400, unsaid.text
        said = await benefits.post(
            "/v1/what-if", json=proposal, headers={**clear, "Bangfu-Purpose": quote(PURPOSE)}
        )
        assert said.status_code == 200, said.text
        assert said.json()["households"] == 1
        first = {**proposal, "effective_from": "2045-05-01"}
        assert (await benefits.post("/v1/what-if", json=first, headers=reader)).status_code == 200
        rows = await audit_rows(benefits_settings)
        assert [(r["action"], r["target"], r["purpose"], r["detail"]) for r in rows] == [
            ("what_if.dated_read", "411302", PURPOSE, {"on": "2045-05-17"})
        ]

    async def test_an_inline_card_of_any_day_is_open_and_is_computed_from_what_it_sent(
        self,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        """An inline card tells only what its caller sent: naming a held household's id borrows
        none of its stored birth dates (its grandfather, 76, is sent as 51 like everyone)."""
        await hold_household(benefits, token)
        reader = bearer(token("benefits:read", regions=["4113"]))
        sent = household()
        sent["members"] = [{**m, "birth_date": "1975-03-04"} for m in sent["members"]]
        for what in ("cards", "eligibility"):
            answer = await benefits.post(
                f"/v1/{what}",
                json={"household": {**sent, "household_id": HOUSEHOLD}, "on": "2026-03-04"},
                headers=reader,
            )
            assert answer.status_code == 200, answer.text
        card = await benefits.post(
            "/v1/cards",
            json={"household": {**sent, "household_id": HOUSEHOLD}, "on": "2026-03-04"},
            headers=reader,
        )
        assert "health_check" not in {m["code"] for m in card.json()["measures"]}
        held = await benefits.get(
            f"/v1/households/{HOUSEHOLD}/card", params={"on": "2026-04-01"}, headers=reader
        )
        assert "health_check" in {m["code"] for m in held.json()["measures"]}
        assert await audit_rows(benefits_settings) == []
