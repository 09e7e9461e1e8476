"""Every explanation a household can get cites only its own region's documents (issue 14).

For each seed region, every text a household of that region is given — the card's lines and
clauses, each category's decision and reason, the 脱困 status, and the receipt stored for the
decision (the card's body with the parameter values it used) — may name only a document in
force for that region on that day (its county's, city's or province's files), and a default
only as a labelled one of its own levels. A coverage check makes sure the households reach every
measure the region offers and every category both applying and refused, so that no text is
left unread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import select, update

from services.benefits import store
from services.benefits.app import create_app
from services.benefits.domain import card, exit
from services.benefits.domain.exit import MonthIncome
from services.benefits.domain.facts import STAGE_NAMES, Household, Schooling, Stage
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, Book, chain, load_book
from services.benefits.domain.rules import CATEGORY_NAMES
from services.benefits.settings import BenefitsSettings
from shared.db import Database
from shared.migrations import alembic_config
from tests.conftest import running
from tests.helpers import bearer
from tests.services.benefits.rows import person, random_household

BOOK = load_book(DEFAULT_DIRECTORY)
ON = date(2025, 3, 1)

# Each seed region (a county where the document is a city's) and the measures its documents
# (or its levels' defaults) put on a card.
NANYANG_MEASURES = {
    "dibao_allowance",
    "tekun_support",
    "disability_subsidies",
    "free_electricity",
    "rent_subsidy",
    "preschool_grant",
    "compulsory_grant",
    "vocational_grant",
    "disabled_freshman_grant",
    "orphan_grant",
    "medical_premium",
    "medical_tilt",
    "accident_insurance",
    "health_check",
    "graduate_subsidy",
    "first_business_subsidy",
    "home_adaptation",
}
SEED_REGIONS: dict[str, set[str]] = {
    "411302": NANYANG_MEASURES,  # 南阳市 宛城区
    "411321": NANYANG_MEASURES,  # 南阳市 南召县
    "410727": {"dibao_allowance", "tekun_support", "disability_subsidies"},  # 封丘县
    "130302": {"dibao_allowance", "tekun_support"},  # 秦皇岛市
    "150624": {"dibao_allowance", "tekun_support"},  # 鄂托克旗
    "900100": {  # the city opinion's placeholder
        "dibao_allowance",
        "free_water",
        "free_gas",
        "high_school_entry_grant",
        "university_entry_grant",
        "reemployment_tax_relief",
    },
}

TITLE = re.compile(r"《[^》]*》")
NUMBER = re.compile(r"[\u4e00-\u9fff]{1,6}〔[0-9]{4}〕[0-9]+号")
DEFAULT = re.compile(r"本地区文件未规定,适用(.+?)(?:默认值\(演示值\)|演示值):")


def documents(book: Book, levels: Iterable[str], on: date | None = None) -> set[str]:
    """The titles and numbers of the documents the levels' values cite (in force on `on`)."""
    out = set()
    for level in levels:
        for values in book.levels.get(level, {}).values():
            for v in values:
                if v.source.demo or (on is not None and not v.in_force(on)):
                    continue
                out.add(v.source.title)
                if v.source.document:
                    out.add(v.source.document)
    return out


EVERY_DOCUMENT = documents(BOOK, BOOK.levels)


def check(texts: Iterable[str], *, region: str, on: date, book: Book = BOOK) -> None:
    """Fail on a document not in force for `region` on `on`, or a default of another region."""
    allowed = documents(book, chain(region), on)
    own_levels = {book.names.get(level, level) for level in chain(region)}
    for text in texts:
        named = set(TITLE.findall(text)) | set(NUMBER.findall(text))
        foreign = {d for d in named if not any(d in a or a in d for a in allowed)}
        assert not foreign, f"{region} on {on} names {foreign}: {text}"
        for where in DEFAULT.findall(text):
            assert where in own_levels, f"{region} is given {where}'s default: {text}"
        for document in EVERY_DOCUMENT - allowed:
            assert document not in text, f"{region} on {on} names {document}: {text}"


def card_texts(c: card.Card) -> list[str]:
    """Every text of a card and of the receipt stored for it (its whole body)."""
    texts = [m.explanation for m in c.measures] + [m.clause for m in c.measures]
    texts += [d.reason for d in c.eligibility] + [d.clause for d in c.eligibility]
    texts.append(json.dumps(dataclasses.asdict(c), ensure_ascii=False, default=str))
    return texts


def standard(region: str, on: date) -> int:
    value = BOOK.resolve(region, on).get("dibao.standard_fen")
    assert value is not None
    return int(value.value)


def households(region: str, on: date) -> list[Household]:
    """One household reaching every measure, one per category that needs its own income, and
    random ones for the refusals' reasons."""
    std = standard(region, on)
    studying = date(on.year - (on < date(on.year, 9, 1)), 9, 1)  # school year 1 on `on`
    everything = Household(
        household_id="all",
        region=region,
        declared_income_fen=0,
        tekun_certified=True,
        no_housing=True,
        dibao_since=date(on.year - 3, 1, 1),
        members=(
            person(70, on=on, disability_grade=1, medical_self_paid_fen=5_000_000),
            person(
                45,
                on=on,
                supply_side_layoff=True,
                business_started_on=date(on.year - 2, 1, 1),
            ),
            person(4, on=on, schooling=(Schooling(Stage.PRESCHOOL, studying),)),
            person(8, on=on, schooling=(Schooling(Stage.PRIMARY, studying, True),)),
            person(13, on=on, schooling=(Schooling(Stage.JUNIOR_HIGH, studying),)),
            person(15, on=on, schooling=(Schooling(Stage.SENIOR_HIGH, studying),)),
            person(16, on=on, schooling=(Schooling(Stage.SECONDARY_VOCATIONAL, studying),)),
            person(
                19,
                on=on,
                disability_grade=2,
                orphan=True,
                schooling=(Schooling(Stage.COLLEGE, studying),),
            ),
            person(22, on=on, graduation_year=on.year),
        ),
    )
    edge = Household("edge", region, (person(on=on),), std, hardship=True)
    spending = Household("spend", region, (person(on=on),), 2 * std, sudden_spending_fen=3_000_000)
    migrant = Household(
        "migrant",
        region,
        (person(on=on, urban_hukou=False, union_member=True, labour_contract_months=12),),
        0,
    )
    rng = random.Random(region)
    randoms = [dataclasses.replace(random_household(rng, i), region=region) for i in range(150)]
    return [everything, edge, spending, migrant, *randoms]


class TestEachRegionCitesOnlyItsOwnDocuments:
    @pytest.mark.parametrize("region", sorted(SEED_REGIONS))
    def test_every_card_eligibility_and_receipt_names_only_its_documents(self, region: str) -> None:
        seen: set[str] = set()
        applied: set[str] = set()
        refused: set[str] = set()
        for h in households(region, ON):
            c = card.compute(BOOK, h, on=ON)
            check(card_texts(c), region=region, on=ON)
            seen |= {m.code for m in c.measures}
            applied |= {d.category for d in c.eligibility if d.applies}
            refused |= {d.category for d in c.eligibility if not d.applies}
        assert seen == SEED_REGIONS[region]
        assert applied == refused == {c.value for c in CATEGORY_NAMES}

    @pytest.mark.parametrize("region", sorted(SEED_REGIONS))
    def test_the_exit_status_names_only_its_documents(self, region: str) -> None:
        std = standard(region, ON)
        for run in (5, 6):
            series = [MonthIncome(f"2024-{m:02d}", std + 1, 1) for m in range(13 - run, 13)]
            status = exit.evaluate(BOOK, region=region, series=series, on=ON)
            assert status.months_above == run
            check([status.explanation], region=region, on=ON)

    def test_before_its_document_a_region_cites_only_its_defaults(self) -> None:
        """南阳's plan is in force from 2023: a 2022 card of 宛城区 cites 河南省's defaults."""
        on = date(2022, 6, 1)
        c = card.compute(BOOK, households("411302", ON)[0], on=on)
        check(card_texts(c), region="411302", on=on)
        assert all("河南省默认值" in d.clause for d in c.eligibility)

    @pytest.mark.parametrize(
        ("region", "category", "clause"),
        [
            ("130302", "dibao", "《秦皇岛市总工会关于进一步做好困难职工解困脱困工作的实施意见》"),
            ("130302", "dibao_edge", "本地区文件未规定,适用河北省默认值(演示值):"),
            ("150624", "dibao", "《鄂托克旗总工会困难职工解困脱困工作五年(2016-2020)规划》二(一)"),
            ("150624", "dibao_edge", "本地区文件未规定,适用内蒙古自治区默认值(演示值):"),
            ("900100", "dibao_edge", "《政府帮扶困难职工工作意见(市)》(城市名称原文未载明)二"),
            ("900100", "layoff", "本地区文件未规定,适用占位市(意见原文未载明城市名称)演示值:"),
            ("411302", "migrant_worker", "本地区文件未规定,适用河南省默认值(演示值):"),
            ("410727", "migrant_worker", "《封丘县人民政府办公室关于进一步做好城市困难职工"),
        ],
    )
    def test_a_category_cites_its_regions_clause_or_a_labelled_default(
        self, region: str, category: str, clause: str
    ) -> None:
        c = card.compute(BOOK, households(region, ON)[0], on=ON)
        decision = next(d for d in c.eligibility if d.category == category)
        assert decision.clause.startswith(clause), decision.clause


class TestTheCheckItself:
    def test_it_fails_on_a_document_of_another_region(self) -> None:
        """The bug of issue 14: a 南阳 household's 脱困 cited 封丘's document."""
        text = (
            "依据《封丘县人民政府办公室关于进一步做好城市困难职工解困脱困工作的实施意见》"
            "(封政办〔2019〕20号)二(二)"
        )
        with pytest.raises(AssertionError, match="封政办"):
            check([text], region="411302", on=ON)
        check([text], region="410727", on=ON)

    def test_it_fails_on_a_document_not_yet_in_force(self) -> None:
        text = "依据《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)三(四)"
        with pytest.raises(AssertionError, match="宛政办"):
            check([text], region="411302", on=date(2022, 12, 31))

    def test_it_fails_on_another_regions_default(self) -> None:
        with pytest.raises(AssertionError, match="河北省"):
            check(["本地区文件未规定,适用河北省默认值(演示值):不限户籍"], region="150624", on=ON)


class TestTheRuleCodeNamesNoDocument:
    RULE_CODE = Path(card.__file__).parent

    def test_no_constant_in_the_rule_code_names_a_document(self) -> None:
        offending = [
            f"{path.name}:{number}: {line.strip()}"
            for path in sorted(self.RULE_CODE.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if "《" in line or NUMBER.search(line)
        ]
        assert offending == []

    def test_the_grep_finds_a_document_where_one_is_written(self) -> None:
        assert NUMBER.search('NANYANG = "(宛政办〔2023〕50号)"')
        assert "《" in "《南阳市城镇困难职工居民解困脱困工作实施方案》"


class TestThroughTheApi:
    """The same check on what the API answers: card, eligibility, exit, the stored receipt."""

    @pytest.mark.parametrize("region", ["411302", "410727", "130302", "150624", "900100"])
    async def test_each_answer_names_only_the_regions_documents(
        self,
        region: str,
        benefits: httpx.AsyncClient,
        token: Callable[..., str],
        benefits_settings: BenefitsSettings,
    ) -> None:
        headers = bearer(token("benefits:read", "benefits:admin", regions=[region[:4]]))
        today = date.today()
        h = households(region, today)[0]
        put = await benefits.put(
            f"/v1/households/h-{region}",
            json={"household": _body(h)},
            headers=headers,
        )
        assert put.status_code == 200, put.text
        await _months(benefits_settings, f"h-{region}", region, standard(region, today) + 1)
        answers = []
        for path in ("card", "eligibility", "exit"):
            got = await benefits.get(f"/v1/households/h-{region}/{path}", headers=headers)
            assert got.status_code == 200, got.text
            answers.append(got.json())
        receipt = await benefits.get(f"/v1/decisions/{answers[0]['decision_id']}", headers=headers)
        assert receipt.status_code == 200, receipt.text
        answers.append(receipt.json())
        assert {m["code"] for m in answers[0]["measures"]} == SEED_REGIONS[region]
        assert "脱困" in answers[2]["explanation"] or "低保标准" in answers[2]["explanation"]
        check([json.dumps(a, ensure_ascii=False) for a in answers], region=region, on=today)


class TestReceiptsMadeBefore:
    async def test_their_clauses_are_rewritten_from_their_regions_basis(
        self, benefits_settings: BenefitsSettings, token: Callable[..., str]
    ) -> None:
        """A 秦皇岛 receipt made before engine 1.1 cited 封丘 and 南阳: migration 0005 fixes it."""
        headers = bearer(token("benefits:read", "benefits:admin", regions=["1303"]))
        today = date.today()
        async with running(create_app(benefits_settings)) as benefits:
            put = await benefits.put(
                "/v1/households/h-old",
                json={"household": _body(households("130302", today)[0])},
                headers=headers,
            )
            assert put.status_code == 200, put.text
        decision_id, now = put.json()["decision_id"], put.json()
        fengqiu = (
            "《封丘县人民政府办公室关于进一步做好城市困难职工解困脱困工作的实施意见》"
            "(封政办〔2019〕20号)三(一)"
        )
        nanyang = "《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)四(三)1(1)①"
        url, schema = benefits_settings.database
        db = Database(url, schema=schema)
        async with db.sessionmaker() as session:
            [body] = (
                await session.execute(
                    select(store.decision.c.body).where(store.decision.c.id == decision_id)
                )
            ).scalars()
            for decision in body["eligibility"]:
                decision["clause"] = fengqiu
            for line in body["measures"]:
                cut = line["explanation"].rindex("依据")
                line["explanation"] = line["explanation"][:cut] + f"依据{nanyang}。"
                line["clause"] = nanyang
            await session.execute(
                update(store.decision).where(store.decision.c.id == decision_id).values(body=body)
            )
            await session.commit()
        await db.dispose()
        config = alembic_config("benefits", url=url, schema=schema)
        await asyncio.to_thread(command.downgrade, config, "benefits_0004")
        await asyncio.to_thread(command.upgrade, config, "head")
        async with running(create_app(benefits_settings)) as benefits:
            receipt = await benefits.get(f"/v1/decisions/{decision_id}", headers=headers)
        assert receipt.status_code == 200, receipt.text
        check([json.dumps(receipt.json(), ensure_ascii=False)], region="130302", on=today)
        rewritten = receipt.json()["body"]
        assert [d["clause"] for d in rewritten["eligibility"]] == [
            d["clause"] for d in now["eligibility"]
        ]
        assert [(m["clause"], m["explanation"]) for m in rewritten["measures"]] == [
            (m["clause"], m["explanation"]) for m in now["measures"]
        ]


def _body(h: Household) -> dict[str, object]:
    """A domain household as the API's `HouseholdIn`."""
    stages = {stage: name for name, stage in STAGE_NAMES.items()}
    return {
        "household_id": h.household_id,
        "region": h.region,
        "declared_income_fen": h.declared_income_fen,
        "tekun_certified": h.tekun_certified,
        "no_housing": h.no_housing,
        "dibao_since": h.dibao_since.isoformat() if h.dibao_since else None,
        "members": [
            {
                "birth_date": p.birth_date.isoformat(),
                "disability_grade": p.disability_grade,
                "medical_self_paid_fen": p.medical_self_paid_fen,
                "supply_side_layoff": p.supply_side_layoff,
                "orphan": p.orphan,
                "graduation_year": p.graduation_year,
                "business_started_on": (
                    p.business_started_on.isoformat() if p.business_started_on else None
                ),
                "schooling": [
                    {"stage": stages[s.stage], "start": s.start.isoformat(), "boarding": s.boarding}
                    for s in p.schooling
                ],
            }
            for p in h.members
        ],
    }


async def _months(settings: BenefitsSettings, household_id: str, region: str, fen: int) -> None:
    """Six months above the standard, as the registry's income events would record them."""
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.unit_of_work() as uow:
        for m in range(1, 7):
            await store.put_income_month(
                uow.session,
                household_id,
                region=region,
                month=f"2025-{m:02d}",
                income_fen=fen * 9,
                member_count=9,
            )
        await uow.commit()
    await db.dispose()
