"""The measures of the 帮扶措施明白卡 (RULES.md §5), each a rule over columns.

No measure names a document: the clause a line cites is the region's `basis.measure.<code>`,
resolved county → city → province like any value. A measure whose amount no document states
(`AMOUNT_LOCAL`) is owed wherever its basis is set, and its line says the amount follows the
local standard.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from services.benefits.domain.facts import I64, Bools, Columns, Stage
from services.benefits.domain.rules.base import (
    Members,
    Params,
    count,
    round_fen,
    total,
)
from services.benefits.domain.rules.categories import Categories, Category


class Period(StrEnum):
    MONTH = "month"
    YEAR = "year"
    ONCE = "once"


@dataclass(frozen=True)
class Amounts:
    fen: I64  # per period
    quantity: I64  # how many people (or kWh) the amount covers; 0 = not owed


Rule = Callable[[Columns, Params, Categories], Amounts]


AMOUNT_LOCAL = "金额按当地标准"


@dataclass(frozen=True)
class Measure:
    """One line of the 帮扶措施明白卡: who pays, how often, by which rule; the clause is the
    region's `basis` parameter."""

    code: str
    name: str
    department: str
    period: Period
    formula: str  # the rule in Chinese, as the explanation states it
    rounding: str
    keys: tuple[str, ...]
    rule: Rule
    unit: str = "人"
    amount_note: str = ""  # what the amount is when it is not cash paid (AMOUNT_LOCAL, a cap)

    @property
    def basis(self) -> str:
        """The parameter whose clause the measure cites."""
        return f"basis.measure.{self.code}"

    def digest(self) -> str:
        """Hash of the rule's code and its declared metadata, for the decision receipt."""
        body = "|".join(
            [inspect.getsource(self.rule), self.code, self.period, self.basis, self.formula]
        )
        return hashlib.sha256(body.encode()).hexdigest()


def _owed(fen: I64, quantity: I64) -> Amounts:
    return Amounts(fen=np.where(quantity > 0, fen, 0), quantity=quantity)


def dibao_allowance(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """低保金 = (低保标准 − 人均收入) × 人数 = 低保标准 × 人数 − 家庭收入, rounded per region."""
    owed = cats[Category.DIBAO]
    if not p.everywhere("dibao.rounding"):
        owed = owed & p.has("dibao.rounding")
    fen = round_fen(p, "dibao.rounding", cats.tests.std_total - cols.income)  # > 0 where owed
    return Amounts(fen=np.where(owed, fen, 0), quantity=np.where(owed, cols.size, 0))


def free_electricity(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """城镇低保户每月免费用电 10 千瓦时 (quantity in kWh, no cash)."""
    kwh = np.where(cats[Category.DIBAO], p["electricity.free_kwh_per_month"], 0)
    return Amounts(fen=np.zeros_like(kwh), quantity=kwh)


def rent_subsidy(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """无房的城镇低保、特困家庭: 每人每月定额临时租房补贴."""
    owed = (cats[Category.DIBAO] | cats[Category.TEKUN]) & cols.no_housing
    rate = p["housing.rent_subsidy_fen_per_person_month"]
    return _owed(rate * cols.size, np.where(owed & (rate > 0), cols.size, 0))


def _enrolled(cols: Columns, cats: Categories, flags: Bools) -> Members:
    """The members of enrolled households for whom `flags` holds."""
    return np.flatnonzero(flags & cats.enrolled_members)


def _per_person(p: Params, key: str, people: I64) -> Amounts:
    """A flat rate per person counted (per household), where the region sets one."""
    rate = p[key]
    if not p.positive(key):
        people = np.where(rate > 0, people, 0)
    return Amounts(fen=rate * people, quantity=people)


def preschool_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """学前教育: 每生每年不低于 400 元."""
    kids = _enrolled(cols, cats, cols.m_stage == Stage.PRESCHOOL)
    return _per_person(p, "education.preschool_fen_per_year", count(cols, kids))


# Indexed by band = 2 × junior high + boarding.
COMPULSORY_KEYS = (
    "education.primary_day_fen_per_year",
    "education.primary_boarder_fen_per_year",
    "education.junior_day_fen_per_year",
    "education.junior_boarder_fen_per_year",
)


def compulsory_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """义务教育生活补助: 寄宿生小学 1000、初中 1250, 非寄宿生小学 500、初中 625 (每生每年)."""
    stages = cols.m_stage
    pupils = _enrolled(cols, cats, (stages == Stage.PRIMARY) | (stages == Stage.JUNIOR_HIGH))
    h = cols.m_household[pupils]
    band = (stages[pupils] == Stage.JUNIOR_HIGH) * 2 + cols.m_boarding[pupils]
    # Each pupil's rate in one pass (not a pass per band); a pupil counts where it is set.
    rate = np.choose(band, [p[key][h] for key in COMPULSORY_KEYS])
    paid = rate > 0
    return Amounts(fen=total(cols, pupils[paid], rate[paid]), quantity=count(cols, pupils[paid]))


def vocational_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """中职一、二年级国家助学金: 平均每生每年 2000 元."""
    kids = _enrolled(cols, cats, cols.m_stage == Stage.SECONDARY_VOCATIONAL)
    max_year = p["education.vocational_grant_max_year"][cols.m_household[kids]]
    kids = kids[cols.m_school_year[kids] <= max_year]
    return _per_person(p, "education.vocational_grant_fen_per_year", count(cols, kids))


def disabled_freshman_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """考入高等院校的残疾大学新生: 一次性入学资助 2000 元."""
    kids = _enrolled(
        cols,
        cats,
        (cols.m_stage == Stage.COLLEGE) & (cols.m_school_year == 1) & (cols.m_disability > 0),
    )
    return _per_person(p, "education.disabled_freshman_fen", count(cols, kids))


ORPHAN_MIN_AGE = 18  # 年满 18 周岁, as the clause states it (not a parameter)


def orphan_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """年满 18 周岁孤儿就读高等院校或中职: 每人每年 1 万元."""
    studying = (cols.m_stage == Stage.COLLEGE) | (cols.m_stage == Stage.SECONDARY_VOCATIONAL)
    kids = _enrolled(cols, cats, studying & cols.m_orphan & (cols.m_age >= ORPHAN_MIN_AGE))
    return _per_person(p, "education.orphan_higher_fen_per_year", count(cols, kids))


def medical_tilt(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """倾斜救助: 年度政策内自付超过 12000 元的部分 × 60%, 每人每年最高 1 万元; 向下取整到分."""
    who = _enrolled(cols, cats, cols.m_medical > 0)
    h = cols.m_household[who]
    above = np.maximum(cols.m_medical[who] - p["medical.tilt_threshold_fen_per_year"][h], 0)
    aid = np.minimum(
        above * p["medical.tilt_rate_percent"][h] // 100, p["medical.tilt_cap_fen_per_year"][h]
    )
    keep = (aid > 0) & p.has("medical.tilt_rate_percent")[h]
    return Amounts(fen=total(cols, who[keep], aid[keep]), quantity=count(cols, who[keep]))


def accident_insurance(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """意外伤害保险: 本级财政为每位家庭成员每年缴纳 30 元."""
    return _per_person(
        p, "medical.accident_insurance_fen_per_person_year", np.where(cats.enrolled, cols.size, 0)
    )


def health_check(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """65 岁以上老年人每年一次免费健康体检 (a service, no cash)."""
    key = "medical.health_check_min_age"
    # Only households whose oldest member is old enough need their members looked at.
    reach = cats.enrolled & p.has(key) & (cats.oldest >= p[key])
    members = np.flatnonzero(reach[cols.m_household])
    old = members[cols.m_age[members] >= p[key][cols.m_household[members]]]
    people = count(cols, old)
    return Amounts(fen=np.zeros_like(people), quantity=people)


def graduate_subsidy(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """毕业年度高校毕业生求职创业补贴: 一次性每人 2000 元."""
    graduates = _enrolled(cols, cats, cols.m_graduating)
    return _per_person(p, "employment.graduate_subsidy_fen", count(cols, graduates))


def first_business_subsidy(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """首次自主创业、正常经营一年以上: 一次性开业补贴 5000 元."""
    owners = _enrolled(cols, cats, cols.m_business_months >= 0)
    needed = p["employment.first_business_min_months"][cols.m_household[owners]]
    owners = owners[cols.m_business_months[owners] >= needed]
    return _per_person(p, "employment.first_business_subsidy_fen", count(cols, owners))


def home_adaptation(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """城镇困难老年人家庭适老化改造: 每户 3000 元."""
    key = "old_age.min_age"
    owed = cats.enrolled & p.has(key) & (cats.oldest >= p[key])
    return _per_person(p, "old_age.home_adaptation_fen_per_household", owed.astype(np.int64))


def _nothing(cols: Columns) -> Amounts:
    """No household is owed it: no region in the columns sets what the measure needs."""
    return Amounts(
        fen=np.zeros(cols.households, dtype=np.int64),
        quantity=np.zeros(cols.households, dtype=np.int64),
    )


def _where_based(p: Params, code: str, people: Callable[[], I64], cols: Columns) -> Amounts:
    """An amount no document states: owed (quantity only) where the region sets its basis;
    the people are counted only if some region does."""
    key = f"basis.measure.{code}"
    if not p.anywhere(key):
        return _nothing(cols)
    counted = people() if p.everywhere(key) else np.where(p.has(key), people(), 0)
    return Amounts(fen=np.zeros_like(counted), quantity=counted)


def tekun_support(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """特困人员基本生活费和护理补贴, per member of a certified household; amount local."""
    return _where_based(
        p, "tekun_support", lambda: np.where(cats[Category.TEKUN], cols.size, 0), cols
    )


def disability_subsidies(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """残疾人两项补贴 (困难残疾人生活补贴、重度残疾人护理补贴) per disabled member; amount local."""
    return _where_based(
        p,
        "disability_subsidies",
        lambda: count(cols, _enrolled(cols, cats, cols.m_disability > 0)),
        cols,
    )


def medical_premium(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """城乡居民医保参保资助: 特困全额, 低保定额, every member; amount local."""
    return _where_based(
        p,
        "medical_premium",
        lambda: np.where(cats[Category.TEKUN] | cats[Category.DIBAO], cols.size, 0),
        cols,
    )


def _dibao_quantity(p: Params, cats: Categories, key: str) -> Amounts:
    """A monthly quantity (kWh, m³) off the bill of each 低保 household, no cash."""
    if not p.anywhere(key):
        return _nothing(cats.cols)
    quantity = np.where(cats[Category.DIBAO], p[key], 0)
    return Amounts(fen=np.zeros_like(quantity), quantity=quantity)


def free_water(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """低保家庭每月减免 3 立方米自来水费."""
    return _dibao_quantity(p, cats, "utilities.free_water_m3_per_month")


def free_gas(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """低保家庭每月减免 3 立方米燃气费."""
    return _dibao_quantity(p, cats, "utilities.free_gas_m3_per_month")


def _entering(cols: Columns, p: Params, cats: Categories, stage: Stage) -> Members:
    """Members of 低保 households on it long enough, in the first year of `stage`."""
    needed = p["education.entry_dibao_min_months"]
    long_enough = cats[Category.DIBAO] & p.has("education.entry_dibao_min_months")
    long_enough &= cols.dibao_months >= needed
    entering = (cols.m_stage == stage) & (cols.m_school_year == 1)
    return np.flatnonzero(entering & long_enough[cols.m_household])


def high_school_entry_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """连续一年以上城市低保家庭子女考入公办高中: 当年一次性补助 2000 元."""
    if not p.anywhere("education.high_school_entry_fen"):
        return _nothing(cols)
    kids = _entering(cols, p, cats, Stage.SENIOR_HIGH)
    return _per_person(p, "education.high_school_entry_fen", count(cols, kids))


def university_entry_grant(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """连续一年以上城市低保家庭子女考入高等院校: 当年一次性补助 5000 元."""
    if not p.anywhere("education.university_entry_fen"):
        return _nothing(cols)
    kids = _entering(cols, p, cats, Stage.COLLEGE)
    return _per_person(p, "education.university_entry_fen", count(cols, kids))


def reemployment_tax_relief(cols: Columns, p: Params, cats: Categories) -> Amounts:
    """下岗失业人员从事个体经营: 每户每年限额内扣减税费 (quantity 1 household; no cash)."""
    key = "employment.reemployment_tax_cap_fen_per_year"
    if not p.anywhere(key):
        return _nothing(cols)
    owners = _enrolled(cols, cats, cols.m_layoff & (cols.m_business_months >= 0))
    owed = (count(cols, owners) > 0) & p.has(key) & (p[key] > 0)
    quantity = owed.astype(np.int64)
    return Amounts(fen=np.zeros_like(quantity), quantity=quantity)


def _m(
    code: str,
    name: str,
    department: str,
    period: Period,
    formula: str,
    rounding: str,
    keys: tuple[str, ...],
    rule: Rule,
    unit: str = "人",
    amount_note: str = "",
) -> Measure:
    # A measure whose amount is local is gated by its basis alone, so the rule reads it.
    if amount_note == AMOUNT_LOCAL:
        keys = (f"basis.measure.{code}", *keys)
    return Measure(code, name, department, period, formula, rounding, keys, rule, unit, amount_note)


EXACT = "按分精确计算"
LOCAL = "不涉及本系统计算"
NO_CASH = "不涉及现金"
MEASURES: tuple[Measure, ...] = (
    _m(
        "dibao_allowance",
        "最低生活保障金(低保金)",
        "民政局",
        Period.MONTH,
        "(低保标准 − 家庭人均收入) × 家庭人数",
        "按参数 dibao.rounding 取整",
        ("dibao.standard_fen", "dibao.rounding"),
        dibao_allowance,
    ),
    _m(
        "tekun_support",
        "特困人员基本生活费和护理补贴",
        "民政局",
        Period.MONTH,
        "经民政部门认定的城镇特困供养人员,按当地特困供养标准发放",
        LOCAL,
        (),
        tekun_support,
        amount_note=AMOUNT_LOCAL,
    ),
    _m(
        "disability_subsidies",
        "残疾人两项补贴",
        "民政局",
        Period.MONTH,
        "家庭中的残疾人按条件领取困难残疾人生活补贴或重度残疾人护理补贴",
        LOCAL,
        (),
        disability_subsidies,
        amount_note=AMOUNT_LOCAL,
    ),
    _m(
        "free_electricity",
        "低保户免费用电",
        "供电公司",
        Period.MONTH,
        "每户每月免费用电量",
        NO_CASH,
        ("electricity.free_kwh_per_month",),
        free_electricity,
        unit="千瓦时",
    ),
    _m(
        "free_water",
        "低保家庭减免自来水费",
        "自来水公司",
        Period.MONTH,
        "凭低保金领取证,每户每月减免水量",
        NO_CASH,
        ("utilities.free_water_m3_per_month",),
        free_water,
        unit="立方米",
    ),
    _m(
        "free_gas",
        "低保家庭减免燃气费",
        "燃气公司",
        Period.MONTH,
        "凭低保金领取证,每户每月减免燃气量",
        NO_CASH,
        ("utilities.free_gas_m3_per_month",),
        free_gas,
        unit="立方米",
    ),
    _m(
        "rent_subsidy",
        "临时租房补贴",
        "住建局",
        Period.MONTH,
        "每人每月补贴标准 × 家庭人数",
        EXACT,
        ("housing.rent_subsidy_fen_per_person_month",),
        rent_subsidy,
    ),
    _m(
        "preschool_grant",
        "学前教育生活补助",
        "教育局",
        Period.YEAR,
        "在园儿童人数 × 每生每年标准",
        EXACT,
        ("education.preschool_fen_per_year",),
        preschool_grant,
    ),
    _m(
        "compulsory_grant",
        "义务教育生活补助",
        "教育局",
        Period.YEAR,
        "按小学/初中、寄宿/非寄宿分档, 每生每年标准之和",
        EXACT,
        COMPULSORY_KEYS,
        compulsory_grant,
    ),
    _m(
        "vocational_grant",
        "中等职业教育国家助学金",
        "教育局",
        Period.YEAR,
        "一、二年级中职学生人数 × 每生每年标准",
        EXACT,
        ("education.vocational_grant_fen_per_year", "education.vocational_grant_max_year"),
        vocational_grant,
    ),
    _m(
        "high_school_entry_grant",
        "低保家庭子女考入高中一次性补助",
        "教育局",
        Period.ONCE,
        "连续享受城市低保满期限的家庭中,当年计划内录取公办高中的子女人数 × 一次性补助标准",
        EXACT,
        ("education.high_school_entry_fen", "education.entry_dibao_min_months"),
        high_school_entry_grant,
    ),
    _m(
        "university_entry_grant",
        "低保家庭子女考入高校一次性补助",
        "教育局",
        Period.ONCE,
        "连续享受城市低保满期限的家庭中,当年考取高等院校的子女人数 × 一次性补助标准",
        EXACT,
        ("education.university_entry_fen", "education.entry_dibao_min_months"),
        university_entry_grant,
    ),
    _m(
        "disabled_freshman_grant",
        "残疾大学新生入学资助",
        "残联",
        Period.ONCE,
        "残疾大学新生人数 × 一次性资助标准",
        EXACT,
        ("education.disabled_freshman_fen",),
        disabled_freshman_grant,
    ),
    _m(
        "orphan_grant",
        "孤儿助学",
        "民政局",
        Period.YEAR,
        "年满18周岁在读孤儿人数 × 每人每年标准",
        EXACT,
        ("education.orphan_higher_fen_per_year",),
        orphan_grant,
    ),
    _m(
        "medical_premium",
        "城乡居民医保参保资助",
        "医保局",
        Period.YEAR,
        "特困人员全额资助、低保对象定额资助参加城乡居民基本医疗保险,家庭成员人数",
        LOCAL,
        (),
        medical_premium,
        amount_note=AMOUNT_LOCAL,
    ),
    _m(
        "medical_tilt",
        "医疗倾斜救助",
        "医保局",
        Period.YEAR,
        "每人 min((年度政策内自付 − 起付线) × 救助比例, 年度限额) 之和",
        "每人向下取整到分",
        (
            "medical.tilt_threshold_fen_per_year",
            "medical.tilt_rate_percent",
            "medical.tilt_cap_fen_per_year",
        ),
        medical_tilt,
    ),
    _m(
        "accident_insurance",
        "意外伤害保险",
        "财政局",
        Period.YEAR,
        "每人每年保险金 × 家庭人数",
        EXACT,
        ("medical.accident_insurance_fen_per_person_year",),
        accident_insurance,
    ),
    _m(
        "health_check",
        "老年人免费健康体检",
        "卫健委",
        Period.YEAR,
        "达到年龄的家庭成员每年一次",
        NO_CASH,
        ("medical.health_check_min_age",),
        health_check,
    ),
    _m(
        "graduate_subsidy",
        "高校毕业生求职创业补贴",
        "人社局",
        Period.ONCE,
        "毕业年度高校毕业生人数 × 一次性补贴标准",
        EXACT,
        ("employment.graduate_subsidy_fen",),
        graduate_subsidy,
    ),
    _m(
        "first_business_subsidy",
        "一次性创业开业补贴",
        "人社局",
        Period.ONCE,
        "首次创业且经营满期限的人数 × 补贴标准",
        EXACT,
        ("employment.first_business_subsidy_fen", "employment.first_business_min_months"),
        first_business_subsidy,
    ),
    _m(
        "reemployment_tax_relief",
        "再就业个体经营税费扣减",
        "税务局",
        Period.YEAR,
        "家中下岗失业人员持再就业优惠证从事个体经营的,每户每年在限额内依次扣减"
        "营业税、城市维护建设税、教育费附加和个人所得税",
        NO_CASH,
        ("employment.reemployment_tax_cap_fen_per_year",),
        reemployment_tax_relief,
        unit="户",
        amount_note="每户每年税费扣减限额",
    ),
    _m(
        "home_adaptation",
        "家庭适老化改造",
        "民政局",
        Period.ONCE,
        "有老年人的家庭每户定额",
        EXACT,
        ("old_age.home_adaptation_fen_per_household", "old_age.min_age"),
        home_adaptation,
        unit="户",
    ),
)
