"""Every rule and amount against hand-computed values; each row cites its clause."""

from __future__ import annotations

import ast
import random
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from services.benefits.domain import card, rules
from services.benefits.domain.facts import Household, Schooling, Stage, columns
from services.benefits.domain.parameters import DEFAULT_DIRECTORY, load_book
from tests.services.benefits.rows import household, person, random_household

BOOK = load_book(DEFAULT_DIRECTORY)
ON = date(2025, 3, 1)


def amount(h: Household, code: str, on: date = ON) -> tuple[int, int]:
    """(fen, quantity) of one measure on the card; (0, 0) when it is not on it."""
    lines = {m.code: m for m in card.compute(BOOK, h, on=on).measures}
    return (lines[code].amount_fen, lines[code].quantity) if code in lines else (0, 0)


def applies(h: Household, on: date = ON) -> set[str]:
    return {d.category for d in card.compute(BOOK, h, on=on).eligibility if d.applies}


class TestDibaoAllowance:
    """低保金 — 《南阳市…实施方案》四(三)1(1)①: (标准 − 人均收入) × 人数, rounded per region."""

    @pytest.mark.parametrize(
        ("clause", "h", "expected"),
        [
            ("四(三)1(1)① 630×3−1500=390元", household(income=150000, members=3), (39000, 3)),
            (
                "四(三)1(1)① 389.99元 向上取整 390元",
                household(income=150001, members=3),
                (39000, 3),
            ),
            ("四(三)1(1)① 0.01元 向上取整 1元", household(income=62999), (100, 1)),
            ("四(三)1(1)① 收入恰等于标准: 不低于, 无低保金", household(income=63000), (0, 0)),
            ("封丘 按分 550×2−1000.01=99.99元", household("410727", 100001, 2), (9999, 2)),
            ("秦皇岛 700元 − 0", household("130302", 0, 1), (70000, 1)),
            ("南召县 覆盖市标准 600元", household("411321", 0, 1), (60000, 1)),
            ("鄂托克旗 内蒙古默认标准 700×2−500", household("150624", 50000, 2), (90000, 2)),
            ("占位市 演示标准 500−100.01 按分", household("900100", 10001, 1), (39999, 1)),
            (
                "核实收入优先: 人均500元 × 2人",
                household(income=0, members=2, verified_per_capita_income_fen=50000),
                (26000, 2),
            ),
            ("财产不符合要求: 不纳入低保", household(income=0, assets_within_limits=False), (0, 0)),
        ],
    )
    def test_amount(self, clause: str, h: Household, expected: tuple[int, int]) -> None:
        assert amount(h, "dibao_allowance") == expected, clause

    def test_a_standard_changing_mid_month_applies_from_its_day(self) -> None:
        h = household("411381", 0, 1)  # 邓州市: 620元 until 2025-07-14, 650元 from 07-15
        assert amount(h, "dibao_allowance", date(2025, 7, 14)) == (62000, 1)
        assert amount(h, "dibao_allowance", date(2025, 7, 15)) == (65000, 1)

    def test_the_card_says_which_income_it_used(self) -> None:
        verified = card.compute(
            BOOK,
            household(
                income=0, verified_per_capita_income_fen=41250, verification_report_version=3
            ),
            on=ON,
        )
        assert (verified.income_source, verified.report_version) == ("verified", 3)
        assert "核对报告核实收入" in verified.measures[0].explanation
        declared = card.compute(BOOK, household(income=41250), on=ON)
        assert declared.income_source == "declared"

    def test_the_explanation_names_rule_parameters_dates_inputs_and_clause(self) -> None:
        line = card.compute(BOOK, household(income=165050, members=4), on=ON).measures[0]
        assert line.explanation == (
            "最低生活保障金(低保金):(低保标准 − 家庭人均收入) × 家庭人数。"
            "参数:城市低保标准(每人每月) 630.00元(2024-01-01起,南阳市,依据"
            "《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)四(三)1);"
            "低保金取整规则 按元向上取整(2024-01-01起,南阳市,本地区文件未规定,适用南阳市演示值:"
            "低保金按元向上取整(演示))。输入:家庭4人,家庭月收入1650.50元(人均412.62元,申报收入)。"
            "结果:(630.00元 − 412.62元) × 4人 = 869.50元,按元向上取整得870.00元(每月)。"
            "依据《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)四(三)1(1)①。"
        )
        assert (line.department, line.period) == ("民政局", "month")


class TestEligibility:
    @pytest.mark.parametrize(
        ("clause", "h", "expected"),
        [
            ("封丘三(一) 人均低于标准", household(income=62999), {"dibao"}),
            (
                "封丘三(二) 恰等于标准 + 致困原因: 边缘",
                household(income=63000, hardship=True),
                {"dibao_edge"},
            ),
            ("封丘三(二) 1.5倍以内(含)", household(income=94500, hardship=True), {"dibao_edge"}),
            ("封丘三(二) 超过1.5倍", household(income=94501, hardship=True), set()),
            ("封丘三(二) 无致困原因", household(income=63000), set()),
            (
                "封丘三(三) 3倍以内(含) + 大额支出",
                household(income=189000, sudden_spending_fen=1_000_000),
                {"expenditure"},
            ),
            ("封丘三(三) 超过3倍", household(income=189001, sudden_spending_fen=1_000_000), set()),
            (
                "封丘三(三) 支出未达起点",
                household(income=100000, sudden_spending_fen=999_999),
                set(),
            ),
            ("南阳三 须城镇户籍", household(income=0, urban_hukou=False), set()),
            ("封丘 不限户籍", household("410727", 0, urban_hukou=False), {"dibao"}),
            (
                "封丘三(四) 农民工 工会+合同满12月",
                household(
                    "410727",
                    0,
                    people=(
                        person(urban_hukou=False, union_member=True, labour_contract_months=12),
                    ),
                ),
                {"dibao", "migrant_worker"},
            ),
            (
                "封丘三(四) 合同11个月",
                household(
                    "410727",
                    0,
                    people=(
                        person(urban_hukou=False, union_member=True, labour_contract_months=11),
                    ),
                ),
                {"dibao"},
            ),
            (
                "封丘三(四) 已纳入农村建档立卡",
                household(
                    "410727",
                    0,
                    rural_poverty_roster=True,
                    people=(
                        person(urban_hukou=False, union_member=True, labour_contract_months=12),
                    ),
                ),
                {"dibao"},
            ),
            (
                "封丘三(五) 供给侧下岗",
                household(income=500000, people=(person(supply_side_layoff=True),)),
                {"layoff"},
            ),
            ("南阳四(三)1(1)② 特困", household(income=0, tekun_certified=True), {"dibao", "tekun"}),
            (
                "秦皇岛二(二)第四项 农民工",
                household(
                    "130302",
                    0,
                    people=(
                        person(urban_hukou=False, union_member=True, labour_contract_months=12),
                    ),
                ),
                {"dibao", "migrant_worker"},
            ),
            (
                "鄂托克旗二(五) 供给侧下岗",
                household("150624", 500000, people=(person(supply_side_layoff=True),)),
                {"layoff"},
            ),
            (
                "鄂托克旗二(三) 支出突增",
                household("150624", 140000, sudden_spending_fen=1_000_000),
                {"expenditure"},
            ),
            (
                "占位市二 略高于低保线 + 疾病",
                household("900100", 50000, hardship=True),
                {"dibao_edge"},
            ),
            ("占位市二 低于低保线", household("900100", 49999), {"dibao"}),
        ],
    )
    def test_categories(self, clause: str, h: Household, expected: set[str]) -> None:
        assert applies(h) == expected, clause

    def test_each_refusal_says_why_with_the_values(self) -> None:
        decisions = {
            d.category: d for d in card.compute(BOOK, household(income=63000), on=ON).eligibility
        }
        assert decisions["dibao"].reason.startswith(
            "家庭人均收入630.00元不低于城市低保标准(每人每月) 630.00元(2024-01-01起,南阳市,"
        )
        assert decisions["dibao_edge"].reason == (
            "无重大疾病、长期慢性病、子女上大学、失业或意外等致困原因"
        )
        assert decisions["dibao_edge"].clause == (
            "《南阳市城镇困难职工居民解困脱困工作实施方案》(宛政办〔2023〕50号)三(四)"
        )
        hukou = card.compute(BOOK, household(urban_hukou=False), on=ON).eligibility[1]
        assert hukou.reason.startswith("不具有城镇户籍:须具有本地城镇户籍 是(2023-01-01起,南阳市")


def kid(stage: Stage, start: date, boarding: bool = False, age: int = 10) -> object:
    return person(age, schooling=(Schooling(stage, start, boarding),))


class TestMeasures:
    @pytest.mark.parametrize(
        ("clause", "code", "h", "expected"),
        [
            (
                "四(三)4(1)④ 自付恰为12000: 无",
                "medical_tilt",
                household(people=(person(medical_self_paid_fen=1_200_000),)),
                (0, 0),
            ),
            (
                "四(三)4(1)④ 超1元×60%=0.60元",
                "medical_tilt",
                household(people=(person(medical_self_paid_fen=1_200_100),)),
                (60, 1),
            ),
            (
                "四(三)4(1)④ 16666.66×60%=9999.996 向下取整",
                "medical_tilt",
                household(people=(person(medical_self_paid_fen=2_866_666),)),
                (999_999, 1),
            ),
            (
                "四(三)4(1)④ 封顶1万元",
                "medical_tilt",
                household(people=(person(medical_self_paid_fen=5_000_000),)),
                (1_000_000, 1),
            ),
            (
                "四(三)4(1)④ 每人各自封顶",
                "medical_tilt",
                household(
                    people=(
                        person(medical_self_paid_fen=5_000_000),
                        person(medical_self_paid_fen=1_300_000),
                    )
                ),
                (1_060_000, 2),
            ),
            ("四(三)4(3) 每人每年30元", "accident_insurance", household(members=3), (9000, 3)),
            ("四(三)1(7) 每月10千瓦时", "free_electricity", household(), (0, 10)),
            (
                "四(三)3(1)① 学前400元",
                "preschool_grant",
                household(people=(kid(Stage.PRESCHOOL, date(2024, 9, 1), age=4),)),
                (40000, 1),
            ),
            (
                "四(三)3(1)② 小学寄宿1000元",
                "compulsory_grant",
                household(people=(kid(Stage.PRIMARY, date(2024, 9, 1), True),)),
                (100000, 1),
            ),
            (
                "四(三)3(1)② 小学非寄宿500元",
                "compulsory_grant",
                household(people=(kid(Stage.PRIMARY, date(2024, 9, 1)),)),
                (50000, 1),
            ),
            (
                "四(三)3(1)② 初中寄宿1250元",
                "compulsory_grant",
                household(people=(kid(Stage.JUNIOR_HIGH, date(2024, 9, 1), True),)),
                (125000, 1),
            ),
            (
                "四(三)3(1)② 初中非寄宿625元",
                "compulsory_grant",
                household(people=(kid(Stage.JUNIOR_HIGH, date(2024, 9, 1)),)),
                (62500, 1),
            ),
            (
                "四(三)3(1)④ 中职二年级2000元",
                "vocational_grant",
                household(people=(kid(Stage.SECONDARY_VOCATIONAL, date(2023, 9, 1)),)),
                (200000, 1),
            ),
            (
                "四(三)3(1)④ 中职三年级不享受",
                "vocational_grant",
                household(people=(kid(Stage.SECONDARY_VOCATIONAL, date(2022, 9, 1)),)),
                (0, 0),
            ),
            (
                "四(三)3(5) 残疾大学新生2000元",
                "disabled_freshman_grant",
                household(
                    people=(
                        person(
                            19,
                            disability_grade=2,
                            schooling=(Schooling(Stage.COLLEGE, date(2024, 9, 1)),),
                        ),
                    )
                ),
                (200000, 1),
            ),
            (
                "四(三)3(2)① 孤儿就读高校1万元",
                "orphan_grant",
                household(
                    people=(
                        person(
                            19, orphan=True, schooling=(Schooling(Stage.COLLEGE, date(2023, 9, 1)),)
                        ),
                    )
                ),
                (1_000_000, 1),
            ),
            (
                "四(三)3(2)① 孤儿未满18岁",
                "orphan_grant",
                household(
                    people=(
                        person(
                            17,
                            orphan=True,
                            schooling=(Schooling(Stage.SECONDARY_VOCATIONAL, date(2023, 9, 1)),),
                        ),
                    )
                ),
                (0, 0),
            ),
            ("四(三)4(2)① 65岁体检", "health_check", household(people=(person(65),)), (0, 1)),
            ("四(三)4(2)① 64岁不体检", "health_check", household(people=(person(64),)), (0, 0)),
            (
                "四(三)5(1)③ 毕业年度2000元",
                "graduate_subsidy",
                household(people=(person(22, graduation_year=2025),)),
                (200000, 1),
            ),
            (
                "四(三)5(1)③ 非毕业年度",
                "graduate_subsidy",
                household(people=(person(23, graduation_year=2024),)),
                (0, 0),
            ),
            (
                "四(三)5(1)③ 创业满一年5000元",
                "first_business_subsidy",
                household(people=(person(business_started_on=date(2024, 3, 1)),)),
                (500000, 1),
            ),
            (
                "四(三)5(1)③ 创业差一天满一年",
                "first_business_subsidy",
                household(people=(person(business_started_on=date(2024, 3, 2)),)),
                (0, 0),
            ),
            (
                "四(三)6(1)④ 60岁老人 每户3000元",
                "home_adaptation",
                household(people=(person(60), person(30))),
                (300000, 1),
            ),
            ("四(三)6(1)④ 59岁", "home_adaptation", household(people=(person(59),)), (0, 0)),
            (
                "四(三)2(1)② 宛城区2025年起每人120元",
                "rent_subsidy",
                household(members=3, no_housing=True),
                (36000, 3),
            ),
            ("四(三)2(1)② 有房不补", "rent_subsidy", household(members=3), (0, 0)),
            (
                "南阳四(三)1(1)④ 残疾人两项补贴 金额按当地标准",
                "disability_subsidies",
                household(people=(person(disability_grade=1), person())),
                (0, 1),
            ),
            ("南阳四(三)4(1)③ 参保资助", "medical_premium", household(members=3), (0, 3)),
            (
                "南阳四(三)4(1)③ 边缘户不资助",
                "medical_premium",
                household(income=63000, hardship=True),
                (0, 0),
            ),
            (
                "封丘四(二)4 特困 金额按当地标准",
                "tekun_support",
                household("410727", 0, 2, tekun_certified=True),
                (0, 2),
            ),
            (
                "秦皇岛三(二)4 特困",
                "tekun_support",
                household("130302", 0, tekun_certified=True),
                (0, 1),
            ),
            (
                "鄂托克旗三(三) 特困",
                "tekun_support",
                household("150624", 0, tekun_certified=True),
                (0, 1),
            ),
            (
                "鄂托克旗 未规定残疾人补贴",
                "disability_subsidies",
                household("150624", 0, people=(person(disability_grade=1),)),
                (0, 0),
            ),
            ("占位市三(二) 每月减免3立方米水", "free_water", household("900100", 0, 3), (0, 3)),
            ("占位市三(二) 每月减免3立方米燃气", "free_gas", household("900100", 0), (0, 3)),
            ("南阳 未规定水费减免", "free_water", household(income=0), (0, 0)),
            (
                "占位市三(一) 连续低保满12个月 考入高中2000元",
                "high_school_entry_grant",
                household(
                    "900100",
                    0,
                    dibao_since=date(2024, 3, 1),
                    people=(kid(Stage.SENIOR_HIGH, date(2024, 9, 1), age=15),),
                ),
                (200000, 1),
            ),
            (
                "占位市三(一) 低保差一天满12个月",
                "high_school_entry_grant",
                household(
                    "900100",
                    0,
                    dibao_since=date(2024, 3, 2),
                    people=(kid(Stage.SENIOR_HIGH, date(2024, 9, 1), age=15),),
                ),
                (0, 0),
            ),
            (
                "占位市三(一) 高中二年级: 非考取当年",
                "high_school_entry_grant",
                household(
                    "900100",
                    0,
                    dibao_since=date(2020, 1, 1),
                    people=(kid(Stage.SENIOR_HIGH, date(2023, 9, 1), age=16),),
                ),
                (0, 0),
            ),
            (
                "占位市三(一) 考入高校5000元",
                "university_entry_grant",
                household(
                    "900100",
                    0,
                    dibao_since=date(2020, 1, 1),
                    people=(kid(Stage.COLLEGE, date(2024, 9, 1), age=18),),
                ),
                (500000, 1),
            ),
            (
                "南阳 未规定考入高校补助",
                "university_entry_grant",
                household(
                    income=0,
                    dibao_since=date(2020, 1, 1),
                    people=(kid(Stage.COLLEGE, date(2024, 9, 1), age=18),),
                ),
                (0, 0),
            ),
            (
                "占位市三(一) 下岗失业人员个体经营 每户每年限额8000元",
                "reemployment_tax_relief",
                household(
                    "900100",
                    0,
                    people=(
                        person(supply_side_layoff=True, business_started_on=date(2024, 6, 1)),
                        person(supply_side_layoff=True, business_started_on=date(2024, 6, 1)),
                    ),
                ),
                (0, 1),
            ),
            (
                "占位市三(一) 未下岗不扣减",
                "reemployment_tax_relief",
                household("900100", 0, people=(person(business_started_on=date(2024, 6, 1)),)),
                (0, 0),
            ),
        ],
    )
    def test_amount(self, clause: str, code: str, h: Household, expected: tuple[int, int]) -> None:
        assert amount(h, code) == expected, clause

    def test_an_amount_no_document_states_is_owed_with_its_department(self) -> None:
        h = household("410727", 0, people=(person(disability_grade=2),), tekun_certified=True)
        one = card.compute(BOOK, h, on=ON)
        lines = {m.code: m for m in one.measures}
        subsidies = lines["disability_subsidies"]
        assert (subsidies.amount_fen, subsidies.amount_note, subsidies.department) == (
            0,
            "金额按当地标准",
            "民政局",
        )
        assert "结果:1人享受,金额按当地标准,由民政局核定发放(每月)。" in subsidies.explanation
        assert subsidies.explanation.endswith("(封政办〔2019〕20号)四(二)4。")
        assert one.monthly_fen == lines["dibao_allowance"].amount_fen

    def test_the_tax_cap_is_stated_and_paid_as_no_cash(self) -> None:
        h = household(
            "900100",
            0,
            people=(person(supply_side_layoff=True, business_started_on=date(2024, 6, 1)),),
        )
        one = card.compute(BOOK, h, on=ON)
        relief = next(m for m in one.measures if m.code == "reemployment_tax_relief")
        assert "结果:1户享受,每户每年税费扣减限额8000.00元(不发放现金)(每年)。" in (
            relief.explanation
        )
        assert "成员1:下岗失业,2024-06-01起从事个体经营" in relief.explanation
        assert relief.department == "税务局" and relief.amount_fen == 0
        assert one.yearly_fen == 12 * one.monthly_fen

    def test_a_county_override_starts_on_its_date(self) -> None:
        h = household(members=3, no_housing=True)  # 宛城区: city 100元 until 2024, own 120元
        assert amount(h, "rent_subsidy", date(2024, 12, 31)) == (30000, 3)
        assert amount(h, "rent_subsidy", date(2025, 1, 1)) == (36000, 3)

    def test_member_measures_name_the_members_they_read(self) -> None:
        h = household(
            people=(
                person(45, medical_self_paid_fen=3_000_000),
                kid(Stage.JUNIOR_HIGH, date(2024, 9, 1), True, age=13),
            )
        )
        lines = {m.code: m for m in card.compute(BOOK, h, on=ON).measures}
        assert "成员2:初中第1学年,寄宿。" in lines["compulsory_grant"].explanation
        assert "成员1:年度政策内自付30000.00元" in lines["medical_tilt"].explanation
        assert lines["medical_tilt"].explanation.endswith("四(三)4(1)④。")

    def test_ages_are_named_only_as_the_threshold_the_rule_read(self) -> None:
        """An age beside the decision's date narrows the birth date: only 年满/未满 N 周岁."""
        studying = (Schooling(Stage.SECONDARY_VOCATIONAL, date(2024, 9, 1)),)
        h = household(
            people=(
                person(70),
                person(62),
                person(19, orphan=True, schooling=studying),
                person(17, orphan=True, schooling=studying),
            )
        )
        lines = {m.code: m.explanation for m in card.compute(BOOK, h, on=ON).measures}
        assert (
            "输入:家庭4人,家庭月收入0.00元(人均0.00元,申报收入);成员1:年满65周岁。"
            in (lines["health_check"])
        )
        assert "成员1:年满60周岁;成员2:年满60周岁。" in lines["home_adaptation"]
        assert (
            "成员3:孤儿,年满18周岁,中职第1学年,非寄宿;成员4:孤儿,未满18周岁,中职第1学年"
            in (lines["orphan_grant"])
        )
        assert (
            "成员3:中职第1学年,非寄宿,孤儿;成员4:中职第1学年,非寄宿,孤儿。"
            in (lines["vocational_grant"])
        )
        for explanation in lines.values():
            assert not any(f"{age}岁" in explanation for age in (17, 19, 62, 70)), explanation

    def test_a_child_moving_to_junior_high_changes_the_grant_on_that_day(self) -> None:
        child = person(
            12,
            schooling=(
                Schooling(Stage.PRIMARY, date(2019, 9, 1)),
                Schooling(Stage.JUNIOR_HIGH, date(2025, 9, 1), boarding=True),
            ),
        )
        h = household(people=(child,))
        assert amount(h, "compulsory_grant", date(2025, 8, 31)) == (50000, 1)
        assert amount(h, "compulsory_grant", date(2025, 9, 1)) == (125000, 1)

    def test_a_household_in_no_category_is_owed_nothing(self) -> None:
        h = household(income=500000, people=(person(70, medical_self_paid_fen=5_000_000),))
        assert card.compute(BOOK, h, on=ON).measures == []

    def test_a_region_without_the_parameter_offers_no_such_measure(self) -> None:
        codes = {m.code for m in card.compute(BOOK, household("410727", 0), on=ON).measures}
        assert codes == {"dibao_allowance"}


class TestOnePathForOneAndMany:
    def test_one_household_and_the_batch_agree_on_10000_random_households(self) -> None:
        rng = random.Random(20261123)
        households = [random_household(rng, i) for i in range(10_000)]
        cols = columns(households, on=ON)
        batch = rules.evaluate(cols, rules.params_for(BOOK, cols, on=ON, keys=rules.ALL_KEYS))
        results = card.batch_results(batch, households)
        for i, h in enumerate(households):
            one = card.compute(BOOK, h, on=ON)
            assert results[i] == one.result()
            assert {d.category: d.applies for d in one.eligibility} == {
                c.value: bool(flags[i]) for c, flags in batch.categories.items()
            }, h
            lines = {m.code: (m.amount_fen, m.quantity) for m in one.measures}
            assert lines == {
                code: (int(a.fen[i]), int(a.quantity[i]))
                for code, a in batch.amounts.items()
                if a.quantity[i]
            }, h

    def test_the_cards_of_a_batch_are_each_households_card_alone(self) -> None:
        """`compute_many` runs the rules once over the batch and explains each household: every
        card, explanations and refusals included, is the one `compute` gives it alone."""
        rng = random.Random(20261130)
        households = [random_household(rng, i) for i in range(400)]
        assert len({h.region for h in households}) > 1  # per-region values are kept apart
        many = card.compute_many(BOOK, households, on=ON)
        assert len(many) == len(households)
        for h, batched in zip(households, many, strict=True):
            assert batched == card.compute(BOOK, h, on=ON), h
        refused = {d.reason for c in many for d in c.eligibility if not d.applies}
        assert len(refused) > 10  # the refusals of many households, not one repeated

    def test_the_random_households_reach_every_category_and_measure(self) -> None:
        rng = random.Random(20261123)
        households = [random_household(rng, i) for i in range(10_000)]
        cols = columns(households, on=ON)
        batch = rules.evaluate(cols, rules.params_for(BOOK, cols, on=ON, keys=rules.ALL_KEYS))
        assert all(flags.any() for flags in batch.categories.values())
        assert all(a.quantity.any() for a in batch.amounts.values())


class TestNoFloatTouchesMoney:
    # parameters.py is guarded by refusing non-integer values (test_domain_parameters).
    RULE_FILES = (
        "rules/__init__.py",
        "rules/base.py",
        "rules/categories.py",
        "rules/measures.py",
        "facts.py",
        "exit.py",
        "whatif.py",
    )

    @pytest.mark.parametrize("name", RULE_FILES)
    def test_rule_code_has_no_true_division_or_float(self, name: str) -> None:
        path = Path(rules.__file__).parent.parent / name
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offending = [
            node.lineno
            for node in ast.walk(tree)
            if (isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div))
            or (isinstance(node, ast.Constant) and isinstance(node.value, float))
            or (isinstance(node, ast.Name) and node.id in {"float", "float32", "float64"})
        ]
        assert offending == [], f"{name}: float or / at lines {offending}"

    def test_every_amount_column_is_int64(self) -> None:
        rng = random.Random(1)
        cols = columns([random_household(rng, i) for i in range(500)], on=ON)
        batch = rules.evaluate(cols, rules.params_for(BOOK, cols, on=ON, keys=rules.ALL_KEYS))
        assert {a.fen.dtype for a in batch.amounts.values()} == {np.dtype(np.int64)}
        assert cols.income.dtype == np.int64

    def test_the_card_holds_ints_only(self) -> None:
        one = card.compute(BOOK, household(income=165050, members=4), on=ON)
        assert all(type(m.amount_fen) is int for m in one.measures)
        assert type(one.monthly_fen) is int and type(one.yearly_fen) is int
