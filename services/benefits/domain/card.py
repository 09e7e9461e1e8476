"""The one-household path: the batch rules on columns of length 1, plus the explanation.

帮扶措施明白卡 — the card listing every measure a household is owed, each with its amount,
period, department, and an explanation in Chinese naming the rule, the parameter values with
their dates, the inputs and the clause. Eligibility says, for each category that does not
apply, why not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from services.benefits.domain import rules
from services.benefits.domain.facts import (
    Household,
    Stage,
    age_on,
    columns,
    months_between,
    schooling_on,
)
from services.benefits.domain.parameters import SPECS, Book, Kind, Resolved, Rounding, Value
from services.benefits.domain.rules import CATEGORY_BASIS, CATEGORY_NAMES, Category, Measure

ROUNDING_NAMES = {
    Rounding.FEN: "按分精确计算",
    Rounding.UP_YUAN: "按元向上取整",
    Rounding.DOWN_YUAN: "按元向下取整",
    Rounding.HALF_UP_YUAN: "按元四舍五入",
}
PERIOD_NAMES = {rules.Period.MONTH: "每月", rules.Period.YEAR: "每年", rules.Period.ONCE: "一次性"}


def yuan(fen: int) -> str:
    """`63050` -> `630.50元` (integers only: no float between fen and the text)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}元"


def show(value: Value) -> str:
    """A parameter value as people read it."""
    kind = SPECS[value.key].kind
    v = value.value
    if kind is Kind.FEN:
        return yuan(int(v))
    if kind is Kind.PERMILLE:
        return f"{Decimal(int(v)) / 1000}倍"
    if kind is Kind.PERCENT:
        return f"{v}%"
    if kind is Kind.BOOL:
        return "是" if v else "否"
    if kind is Kind.ROUNDING:
        return ROUNDING_NAMES[Rounding(str(v))]
    return str(v)


def cite(value: Value, names: dict[str, str]) -> str:
    """`城市低保标准(每人每月) 630.00元(2024-01-01起,南阳市,依据<title>四(三)1)`."""
    until = f"至{value.effective_to}" if value.effective_to else "起"
    where = names.get(value.region, value.region)
    return (
        f"{SPECS[value.key].label} {show(value)}({value.effective_from}{until},{where},"
        f"{value.grounds(names)})"
    )


NO_BASIS = "本地区文件未规定,亦无默认依据"


def basis(resolved: Resolved, key: str, names: dict[str, str]) -> tuple[str, str]:
    """The clause a rule cites for this region and day, from its `basis.*` value in force (the
    region's own document, or a default labelled as one): (clause, as a sentence names it)."""
    value = resolved.get(key)
    if value is None:
        return NO_BASIS, NO_BASIS
    return value.citation(names), value.grounds(names)


@dataclass(frozen=True)
class Line:
    """One measure on the card."""

    code: str
    name: str
    department: str
    period: str
    amount_fen: int
    quantity: int
    unit: str
    rounding: str
    clause: str
    explanation: str
    parameters: list[dict[str, Any]]
    # What the amount is when it is not cash the suite computed: "金额按当地标准" (owed, the
    # amount set locally by `department`) or a cap; "" for a computed amount.
    amount_note: str = ""


@dataclass(frozen=True)
class Decision:
    """One category: whether it applies and, if not, why not."""

    category: str
    name: str
    applies: bool
    reason: str
    clause: str


@dataclass(frozen=True)
class Card:
    household_id: str
    region: str
    on: date
    income_fen: int
    income_source: str
    report_version: int | None
    per_capita_income: str
    members: int
    eligibility: list[Decision]
    measures: list[Line]
    monthly_fen: int
    yearly_fen: int
    engine_version: str = rules.ENGINE_VERSION
    rule_digests: dict[str, str] = field(default_factory=dict)
    parameter_digest: str = ""
    parameters: list[dict[str, Any]] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        """What a receipt compares on re-derivation: categories and every amount."""
        return {
            "eligibility": {d.category: d.applies for d in self.eligibility},
            "measures": {m.code: [m.amount_fen, m.quantity] for m in self.measures},
            "income_fen": self.income_fen,
            "income_source": self.income_source,
        }


def batch_results(result: rules.Result, households: list[Household]) -> list[dict[str, Any]]:
    """`Card.result()` of each household from a batch evaluation, without building the cards:
    recomputation finds the cards that changed this way and explains only those."""
    categories = {c.value: flags.tolist() for c, flags in result.categories.items()}
    amounts = {code: (a.fen.tolist(), a.quantity.tolist()) for code, a in result.amounts.items()}
    out = []
    for i, household in enumerate(households):
        income = household.income()
        out.append(
            {
                "eligibility": {c: flags[i] for c, flags in categories.items()},
                "measures": {
                    code: [fen[i], quantity[i]]
                    for code, (fen, quantity) in amounts.items()
                    if quantity[i]
                },
                "income_fen": income.household_fen,
                "income_source": income.source,
            }
        )
    return out


def yearly(period: str, amount_fen: int) -> int:
    """A measure's amount over a year: 12 months, the year's, or the one-off payment."""
    return amount_fen * 12 if period == rules.Period.MONTH else amount_fen


def compute(book: Book, household: Household, *, on: date) -> Card:
    """The card of one household on `on`: the batch rules on a batch of one, explained."""
    return compute_many(book, [household], on=on)[0]


def compute_many(book: Book, households: Sequence[Household], *, on: date) -> list[Card]:
    """The card of each household on `on`, as `compute` gives it for each alone: the rules run
    once over the batch (on columns of one household, numpy's cost per call was most of a
    card), then each household is explained. What is per region (its digest, its values) is
    made once per region."""
    cols = columns(households, on=on)
    p = rules.params_for(book, cols, on=on, keys=rules.ALL_KEYS)
    result = rules.evaluate(cols, p)
    names = dict(book.names)
    t = rules.Tests(cols, p)
    digests = [resolved.digest() for resolved in p.resolved]
    values = [[r.values[k].as_dict() for k in sorted(r.values)] for r in p.resolved]
    categories = {c: flags.tolist() for c, flags in result.categories.items()}
    amounts = {code: (a.quantity.tolist(), a.fen.tolist()) for code, a in result.amounts.items()}
    cards = []
    for i, household in enumerate(households):
        region = int(cols.region[i])
        resolved = p.resolved[region]
        income = household.income()
        size = len(household.members)
        decisions = [
            Decision(
                category=c.value,
                name=CATEGORY_NAMES[c],
                applies=bool(flags[i]),
                reason="" if flags[i] else _why_not(c, t, cols, resolved, names, i),
                clause=basis(resolved, CATEGORY_BASIS[c], names)[0],
            )
            for c, flags in categories.items()
        ]
        lines = []
        for measure in rules.MEASURES:
            quantities, fens = amounts[measure.code]
            quantity, fen = int(quantities[i]), int(fens[i])
            if quantity == 0:
                continue
            lines.append(_line(measure, fen, quantity, household, resolved, names, on))
        cards.append(
            Card(
                household_id=household.household_id,
                region=household.region,
                on=on,
                income_fen=income.household_fen,
                income_source=income.source,
                report_version=income.report_version,
                per_capita_income=yuan_per_capita(income.household_fen, size),
                members=size,
                eligibility=decisions,
                measures=lines,
                monthly_fen=sum(m.amount_fen for m in lines if m.period == rules.Period.MONTH),
                yearly_fen=sum(yearly(m.period, m.amount_fen) for m in lines),
                rule_digests=dict(rules.rule_digests()),
                parameter_digest=digests[region],
                parameters=values[region],
            )
        )
    return cards


def yuan_per_capita(household_fen: int, size: int) -> str:
    """Per-capita income for people to read, to the fen (display only; rules never divide)."""
    return f"{(Decimal(household_fen) / size / 100).quantize(Decimal('0.01'))}元"


STAGE_LABELS = {
    Stage.PRESCHOOL: "学前",
    Stage.PRIMARY: "小学",
    Stage.JUNIOR_HIGH: "初中",
    Stage.SENIOR_HIGH: "普通高中",
    Stage.SECONDARY_VOCATIONAL: "中职",
    Stage.COLLEGE: "高校",
}
SCHOOL_MEASURES = {
    "preschool_grant",
    "compulsory_grant",
    "vocational_grant",
    "disabled_freshman_grant",
}
ORPHAN_STAGES = {Stage.COLLEGE, Stage.SECONDARY_VOCATIONAL}
ENTRY_STAGES = {
    "high_school_entry_grant": Stage.SENIOR_HIGH,
    "university_entry_grant": Stage.COLLEGE,
}
# The age threshold (a parameter) each age-based measure compares the members with; a line of
# these measures exists only where the region sets it.
AGE_KEYS = {"health_check": "medical.health_check_min_age", "home_adaptation": "old_age.min_age"}


def _reached(age: int, years: int) -> str:
    """`年满65周岁` or `未满65周岁`: the threshold a rule read, never the age itself."""
    return f"{'年满' if age >= years else '未满'}{years}周岁"


def _member_inputs(code: str, household: Household, resolved: Resolved, on: date) -> list[str]:
    """The members' facts a member-level measure read, as its explanation names them.

    Ages are stated only as the threshold the rule compares them with (年满/未满 N 周岁): an
    exact age beside the decision's date narrows the birth date, which with the masked
    identity number and the birth year a file shows would leave few numbers to try.
    """
    out = []
    for i, person in enumerate(household.members, start=1):
        age = age_on(person.birth_date, on)
        stage, year, boarding = schooling_on(person, on)
        if code == "orphan_grant" and person.orphan and stage in ORPHAN_STAGES:
            reached = _reached(age, rules.ORPHAN_MIN_AGE)
            out.append(f"成员{i}:孤儿,{reached},{_schooling(stage, year, boarding)}")
        elif code in SCHOOL_MEASURES and stage is not Stage.NONE:
            extra = f",残疾{person.disability_grade}级" if person.disability_grade else ""
            extra += ",孤儿" if person.orphan else ""
            out.append(f"成员{i}:{_schooling(stage, year, boarding)}{extra}")
        elif code == "medical_tilt" and person.medical_self_paid_fen:
            out.append(f"成员{i}:年度政策内自付{yuan(person.medical_self_paid_fen)}")
        elif code in AGE_KEYS and age >= (years := int(resolved.values[AGE_KEYS[code]].value)):
            out.append(f"成员{i}:{_reached(age, years)}")
        elif code == "disability_subsidies" and person.disability_grade:
            out.append(f"成员{i}:残疾{person.disability_grade}级")
        elif code in ENTRY_STAGES and stage is ENTRY_STAGES[code] and year == 1:
            out.append(f"成员{i}:{_schooling(stage, year, boarding)}")
        elif code == "reemployment_tax_relief" and person.supply_side_layoff:
            if person.business_started_on and person.business_started_on <= on:
                out.append(f"成员{i}:下岗失业,{person.business_started_on}起从事个体经营")
        elif code == "graduate_subsidy" and person.graduation_year:
            out.append(f"成员{i}:{person.graduation_year}年高校毕业")
        elif code == "first_business_subsidy" and person.business_started_on:
            months = months_between(person.business_started_on, on)
            out.append(f"成员{i}:{person.business_started_on}首次创业,已经营{months}个月")
    return out


def _schooling(stage: Stage, year: int, boarding: bool) -> str:
    """`初中第2学年,寄宿`."""
    return f"{STAGE_LABELS[stage]}第{year}学年,{'寄宿' if boarding else '非寄宿'}"


def _line(
    measure: Measure,
    fen: int,
    quantity: int,
    household: Household,
    resolved: Resolved,
    names: dict[str, str],
    on: date,
) -> Line:
    # A basis is cited as the line's clause, not listed among the values.
    used = [
        v
        for k in measure.keys
        if (v := resolved.get(k)) is not None and SPECS[k].kind is not Kind.BASIS
    ]
    income = household.income()
    size = len(household.members)
    source = "核对报告核实收入" if income.source == "verified" else "申报收入"
    inputs = (
        f"家庭{size}人,家庭月收入{yuan(income.household_fen)}"
        f"(人均{yuan_per_capita(income.household_fen, size)},{source})"
    )
    if measure.code in ENTRY_STAGES:
        since = household.dibao_since
        months = months_between(since, on) if since and since <= on else None
        inputs += f";连续享受城市低保{months}个月" if months is not None else ";未享受城市低保"
    members = _member_inputs(measure.code, household, resolved, on)
    if members:
        inputs += ";" + ";".join(members)
    if measure.code == "dibao_allowance":
        std = resolved.values["dibao.standard_fen"]
        gap = int(std.value) * size - income.household_fen
        result = (
            f"({yuan(int(std.value))} − {yuan_per_capita(income.household_fen, size)}) × {size}人"
            f" = {yuan(gap)},{show(resolved.values['dibao.rounding'])}得{yuan(fen)}"
        )
    elif measure.unit in ("千瓦时", "立方米"):
        result = f"{quantity}{measure.unit}"
    elif measure.amount_note == rules.AMOUNT_LOCAL:
        result = f"{quantity}{measure.unit}享受,{rules.AMOUNT_LOCAL},由{measure.department}核定发放"
    elif measure.amount_note:
        caps = ";".join(show(v) for v in used if SPECS[v.key].kind is Kind.FEN)
        result = f"{quantity}{measure.unit}享受,{measure.amount_note}{caps}(不发放现金)"
    elif fen == 0:
        result = f"{quantity}{measure.unit}享受"
    else:
        result = f"{quantity}{measure.unit}合计{yuan(fen)}"
    clause, grounds = basis(resolved, measure.basis, names)
    values = ";".join(cite(v, names) for v in used) or "无(金额由当地标准确定)"
    explanation = (
        f"{measure.name}:{measure.formula}。参数:{values}。"
        f"输入:{inputs}。结果:{result}({PERIOD_NAMES[rules.Period(measure.period)]})。"
        f"{grounds}。"
    )
    return Line(
        code=measure.code,
        name=measure.name,
        department=measure.department,
        period=measure.period.value,
        amount_fen=fen,
        quantity=quantity,
        unit=measure.unit,
        rounding=measure.rounding,
        clause=clause,
        explanation=explanation,
        parameters=[v.as_dict() for v in used],
        amount_note=measure.amount_note,
    )


def _why_not(
    category: Category,
    t: rules.Tests,
    cols: Any,
    resolved: Resolved,
    names: dict[str, str],
    i: int,
) -> str:
    """The first condition of `category` household `i` of the columns fails, in Chinese, with
    the values."""

    def param(key: str) -> str:
        value = resolved.get(key)
        return cite(value, names) if value else f"{SPECS[key].label}(本地区未设定)"

    size = int(cols.size[i])
    pci = yuan_per_capita(int(cols.income[i]), size)
    if not t.urban_ok[i]:
        return f"不具有城镇户籍:{param('eligibility.urban_hukou_required')}"
    if (
        category in (Category.DIBAO, Category.DIBAO_EDGE, Category.EXPENDITURE)
        and not (t.has_standard[i])
    ):
        return f"本地区未设定低保标准:{param('dibao.standard_fen')}"
    std = param("dibao.standard_fen")
    if category is Category.TEKUN:
        return "未经民政部门认定为城镇特困供养人员"
    if category is Category.DIBAO:
        if not t.below[i]:
            return f"家庭人均收入{pci}不低于{std}"
        return "家庭财产状况不符合最低生活保障相关要求"
    if category is Category.DIBAO_EDGE:
        if t.below[i]:
            return f"家庭人均收入{pci}低于{std},属低保而非低保边缘"
        if not t.within_edge[i]:
            return f"家庭人均收入{pci}超过{param('edge.multiple_permille')}所定上限"
        return "无重大疾病、长期慢性病、子女上大学、失业或意外等致困原因"
    if category is Category.EXPENDITURE:
        if not t.within_expenditure[i]:
            return f"家庭人均收入{pci}超过{param('expenditure.multiple_permille')}所定上限"
        spent = yuan(int(cols.sudden_spending[i]))
        return f"突发支出(损失){spent}未达{param('expenditure.min_spending_fen')}"
    if category is Category.MIGRANT_WORKER:
        if not t.migrant_member[i]:
            return (
                "家中无加入工会、劳动合同达到"
                f"{param('migrant.min_contract_months')}的农业户籍进城务工人员"
            )
        if cols.rural_roster[i]:
            return "已纳入农村建档立卡扶贫对象"
        return "不符合低保、低保边缘或支出型困难条件"
    return "家中无因供给侧结构性改革下岗失业的职工"
