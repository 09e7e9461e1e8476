"""Dated, per-region policy parameters (政策参数) from YAML, inherited county → city → province.

A parameter file is named after its GB/T 2260 code (`411300.yaml` for 南阳市) and holds, per key,
a list of dated values, each citing its source document and clause. A value for a date is the
one in force at the most specific level (county, then city, then province) that has one.
Money is integer fen; shares are integer per-mille or percent; nothing here is a float.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from shared.regions import InvalidRegion, parse_region


class Kind(StrEnum):
    FEN = "fen"  # integer 分
    INT = "int"  # a count: months, kWh, an age
    PERMILLE = "permille"  # a multiple or share in ‰ (1500 = 1.5 ×)
    PERCENT = "percent"
    BOOL = "bool"
    ROUNDING = "rounding"  # one of ROUNDINGS
    BASIS = "basis"  # always true: the value exists to carry the clause that states a rule


class Rounding(StrEnum):
    """How a rule rounds an amount of fen: kept exact, or to whole yuan."""

    FEN = "fen"
    UP_YUAN = "up_yuan"
    DOWN_YUAN = "down_yuan"
    HALF_UP_YUAN = "half_up_yuan"


ROUNDING_CODES = {r: i for i, r in enumerate(Rounding)}


@dataclass(frozen=True)
class Spec:
    kind: Kind
    label: str  # Chinese, as the explanation names it


SPECS: dict[str, Spec] = {
    "dibao.standard_fen": Spec(Kind.FEN, "城市低保标准(每人每月)"),
    "dibao.rounding": Spec(Kind.ROUNDING, "低保金取整规则"),
    "edge.multiple_permille": Spec(Kind.PERMILLE, "低保边缘人均收入上限(低保标准的倍数)"),
    "expenditure.multiple_permille": Spec(Kind.PERMILLE, "支出型困难人均收入上限(低保标准的倍数)"),
    "expenditure.min_spending_fen": Spec(Kind.FEN, "突发大额支出(损失)起点"),
    "migrant.min_contract_months": Spec(Kind.INT, "进城务工人员劳动合同最短期限(月)"),
    "eligibility.urban_hukou_required": Spec(Kind.BOOL, "须具有本地城镇户籍"),
    "exit.consecutive_months": Spec(Kind.INT, "脱困须连续超过低保标准的月数"),
    "electricity.free_kwh_per_month": Spec(Kind.INT, "低保户每月免费用电量(千瓦时)"),
    "housing.rent_subsidy_fen_per_person_month": Spec(Kind.FEN, "临时租房补贴(每人每月)"),
    "education.preschool_fen_per_year": Spec(Kind.FEN, "学前教育生活补助(每生每年)"),
    "education.primary_boarder_fen_per_year": Spec(Kind.FEN, "小学寄宿生生活补助(每生每年)"),
    "education.primary_day_fen_per_year": Spec(Kind.FEN, "小学非寄宿生生活补助(每生每年)"),
    "education.junior_boarder_fen_per_year": Spec(Kind.FEN, "初中寄宿生生活补助(每生每年)"),
    "education.junior_day_fen_per_year": Spec(Kind.FEN, "初中非寄宿生生活补助(每生每年)"),
    "education.vocational_grant_fen_per_year": Spec(Kind.FEN, "中职国家助学金(每生每年)"),
    "education.vocational_grant_max_year": Spec(Kind.INT, "中职助学金覆盖的最高年级"),
    "education.disabled_freshman_fen": Spec(Kind.FEN, "残疾大学新生一次性入学资助"),
    "education.orphan_higher_fen_per_year": Spec(Kind.FEN, "孤儿助学(每人每年)"),
    "medical.tilt_threshold_fen_per_year": Spec(Kind.FEN, "倾斜救助起付线(年度政策内自付)"),
    "medical.tilt_rate_percent": Spec(Kind.PERCENT, "倾斜救助比例"),
    "medical.tilt_cap_fen_per_year": Spec(Kind.FEN, "倾斜救助年度最高限额"),
    "medical.accident_insurance_fen_per_person_year": Spec(Kind.FEN, "意外伤害保险金(每人每年)"),
    "medical.health_check_min_age": Spec(Kind.INT, "免费健康体检年龄(岁及以上)"),
    "employment.graduate_subsidy_fen": Spec(Kind.FEN, "高校毕业生求职创业补贴(一次性每人)"),
    "employment.first_business_subsidy_fen": Spec(Kind.FEN, "首次创业一次性开业补贴"),
    "employment.first_business_min_months": Spec(Kind.INT, "创业正常经营最短月数"),
    "old_age.home_adaptation_fen_per_household": Spec(Kind.FEN, "家庭适老化改造(每户)"),
    "old_age.min_age": Spec(Kind.INT, "老年人年龄(岁及以上)"),
    "education.high_school_entry_fen": Spec(Kind.FEN, "低保家庭子女考入公办高中一次性补助"),
    "education.university_entry_fen": Spec(Kind.FEN, "低保家庭子女考入高等院校一次性补助"),
    "education.entry_dibao_min_months": Spec(Kind.INT, "入学补助须连续享受城市低保的最短月数"),
    "employment.reemployment_tax_cap_fen_per_year": Spec(
        Kind.FEN, "再就业个体经营税费扣减限额(每户每年)"
    ),
    "utilities.free_water_m3_per_month": Spec(Kind.INT, "低保家庭每月减免自来水量(立方米)"),
    "utilities.free_gas_m3_per_month": Spec(Kind.INT, "低保家庭每月减免燃气量(立方米)"),
    # A rule's basis: the clause of the region's own document that states it (a labelled
    # default where they are silent). Categories are known by it; so is each measure, and a
    # measure whose amount no document states is owed where its basis is set.
    **{
        f"basis.{code}": Spec(Kind.BASIS, f"{name}依据")
        for code, name in (
            ("category.tekun", "城镇特困供养认定"),
            ("category.dibao", "低保困难家庭认定"),
            ("category.dibao_edge", "低保边缘户认定"),
            ("category.expenditure", "支出型(意外灾害)困难家庭认定"),
            ("category.migrant_worker", "进城务工人员困难家庭认定"),
            ("category.layoff", "供给侧结构性改革下岗失业职工认定"),
            ("measure.dibao_allowance", "低保金"),
            ("measure.tekun_support", "特困人员基本生活费和护理补贴"),
            ("measure.disability_subsidies", "残疾人两项补贴"),
            ("measure.free_electricity", "低保户免费用电"),
            ("measure.free_water", "低保家庭减免水费"),
            ("measure.free_gas", "低保家庭减免燃气费"),
            ("measure.rent_subsidy", "临时租房补贴"),
            ("measure.preschool_grant", "学前教育生活补助"),
            ("measure.compulsory_grant", "义务教育生活补助"),
            ("measure.vocational_grant", "中职国家助学金"),
            ("measure.high_school_entry_grant", "低保家庭子女考入高中补助"),
            ("measure.university_entry_grant", "低保家庭子女考入高校补助"),
            ("measure.disabled_freshman_grant", "残疾大学新生入学资助"),
            ("measure.orphan_grant", "孤儿助学"),
            ("measure.medical_premium", "城乡居民医保参保资助"),
            ("measure.medical_tilt", "医疗倾斜救助"),
            ("measure.accident_insurance", "意外伤害保险"),
            ("measure.health_check", "老年人免费健康体检"),
            ("measure.graduate_subsidy", "高校毕业生求职创业补贴"),
            ("measure.first_business_subsidy", "一次性创业开业补贴"),
            ("measure.reemployment_tax_relief", "再就业个体经营税费扣减"),
            ("measure.home_adaptation", "家庭适老化改造"),
        )
    },
}


# Any parameter's ceiling (for fen, 100 million yuan): keeps the rules' products inside int64.
MAX_VALUE = 10_000_000_000


class ParameterError(ValueError):
    """A parameter file or value that cannot be used: names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str):
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class NoParameters(LookupError):
    """No parameter file covers the region (neither it, its city nor its province)."""


@dataclass(frozen=True)
class Source:
    """A policy document: its title (书名号 included) and number (文号); or, with `demo`, a
    labelled default (演示/默认值) standing where the region's own documents are silent."""

    title: str
    document: str = ""
    demo: bool = False


@dataclass(frozen=True)
class Value:
    """One dated value of one parameter at one region level, with its source and clause."""

    key: str
    value: int | bool | str
    effective_from: date
    effective_to: date | None  # inclusive; None = open-ended
    region: str
    source: Source
    clause: str
    origin: str  # the file it came from, or "admin:<who>"

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    @property
    def number(self) -> int:
        """The value as an integer column entry (bools 0/1, roundings their code)."""
        if isinstance(self.value, bool):
            return int(self.value)
        if isinstance(self.value, str):
            return ROUNDING_CODES[Rounding(self.value)]
        return self.value

    def citation(self, names: Mapping[str, str] | None = None) -> str:
        """`<title>(文号)<clause>`; for a labelled default, that the region's documents are
        silent and whose default applies (`本地区文件未规定,适用河南省默认值(演示值):…`)."""
        if self.source.demo:
            where = (names or {}).get(self.region, self.region)
            kind = "默认值(演示值)" if self.region.endswith("0000") else "演示值"
            return f"本地区文件未规定,适用{where}{kind}:{self.clause}"
        doc = f"({self.source.document})" if self.source.document else ""
        return f"{self.source.title}{doc}{self.clause}"

    def grounds(self, names: Mapping[str, str] | None = None) -> str:
        """`依据<title>…` for a document; a labelled default as it stands (it says so itself)."""
        citation = self.citation(names)
        return citation if self.source.demo else f"依据{citation}"

    def as_dict(self) -> dict[str, Any]:
        # `demo` only where true: a receipt stored before the flag existed keeps its digest.
        demo = {"demo": True} if self.source.demo else {}
        return {
            "key": self.key,
            "value": self.value,
            "effective_from": self.effective_from.isoformat(),
            "effective_to": self.effective_to.isoformat() if self.effective_to else None,
            "region": self.region,
            "source": self.source.title,
            "document": self.source.document,
            "clause": self.clause,
            "origin": self.origin,
            **demo,
        }


def value_from_dict(raw: Mapping[str, Any]) -> Value:
    """The inverse of `Value.as_dict` (receipts store parameters this way)."""
    return Value(
        key=raw["key"],
        value=raw["value"],
        effective_from=date.fromisoformat(raw["effective_from"]),
        effective_to=date.fromisoformat(raw["effective_to"]) if raw["effective_to"] else None,
        region=raw["region"],
        source=Source(raw["source"], raw["document"], bool(raw.get("demo", False))),
        clause=raw["clause"],
        origin=raw["origin"],
    )


def chain(region: str) -> list[str]:
    """The region, then its city, then its province: `411302` -> 411302, 411300, 410000."""
    levels = [region, region[:4] + "00", region[:2] + "0000"]
    return list(dict.fromkeys(levels))


@dataclass(frozen=True)
class Resolved:
    """The parameters in force for one region on one day: key -> the value that applies."""

    region: str
    on: date
    values: Mapping[str, Value]

    def get(self, key: str) -> Value | None:
        return self.values.get(key)

    def digest(self) -> str:
        """A hash of every value used, its dates and its source: the receipt's parameter hash."""
        body = json.dumps(
            [self.values[k].as_dict() for k in sorted(self.values)], ensure_ascii=False
        )
        return hashlib.sha256(body.encode()).hexdigest()


_RESOLVED_CACHE = 10_000


@dataclass(frozen=True)
class Book:
    """Every region's dated parameter values; immutable, `with_value` returns a new book."""

    levels: Mapping[str, Mapping[str, tuple[Value, ...]]]  # region -> key -> values by date
    names: Mapping[str, str] = field(default_factory=dict)
    # Resolutions already made: a book never changes, so neither do they.
    _resolved: dict[tuple[str, date], Resolved] = field(
        default_factory=dict, compare=False, repr=False
    )

    def covers(self, region: str) -> bool:
        return any(level in self.levels for level in chain(region))

    def resolve(self, region: str, on: date) -> Resolved:
        """The value of each parameter in force on `on`, the most specific level first."""
        cached = self._resolved.get((region, on))
        if cached is not None:
            return cached
        if not self.covers(region):
            raise NoParameters(region)
        found: dict[str, Value] = {}
        for level in reversed(chain(region)):  # province, city, county: later wins
            for key, values in self.levels.get(level, {}).items():
                for value in values:
                    if value.in_force(on):
                        found[key] = value
        if len(self._resolved) >= _RESOLVED_CACHE:
            self._resolved.clear()  # a long-running service asks about many days: stay bounded
        resolved = self._resolved[(region, on)] = Resolved(region=region, on=on, values=found)
        return resolved

    def history(self, region: str, key: str) -> tuple[Value, ...]:
        return self.levels.get(region, {}).get(key, ())

    def with_value(self, value: Value) -> Book:
        """Add a dated value at its region level; it supersedes what it overlaps there."""
        check_value(value, file=value.origin)
        kept: list[Value] = []
        for old in self.history(value.region, value.key):
            kept.extend(_outside(old, value))
        values = tuple(sorted([*kept, value], key=lambda v: v.effective_from))
        level = {**self.levels.get(value.region, {}), value.key: values}
        return Book(levels={**self.levels, value.region: level}, names=self.names)


def _outside(old: Value, new: Value) -> list[Value]:
    """The parts of `old` that `new` does not cover."""
    parts: list[Value] = []
    if old.effective_from < new.effective_from:
        end = new.effective_from - timedelta(days=1)
        if old.effective_to is not None and old.effective_to < end:
            end = old.effective_to
        parts.append(replace(old, effective_to=end))
    if (
        new.effective_to is not None
        and new.effective_to < date.max
        and (old.effective_to is None or old.effective_to > new.effective_to)
    ):
        start = max(old.effective_from, new.effective_to + timedelta(days=1))
        parts.append(replace(old, effective_from=start))
    return parts


# -- loading and validation --------------------------------------------------------------------


def check_value(value: Value, *, file: str) -> None:
    """Refuse a value of the wrong type or out of range for its key."""
    spec = SPECS.get(value.key)
    if spec is None:
        raise ParameterError(file, value.key, "unknown parameter")
    v = value.value
    if spec.kind is Kind.BASIS:
        if v is not True:
            raise ParameterError(file, value.key, f"a rule's basis is `true`, not {v!r}")
    elif spec.kind is Kind.BOOL:
        if not isinstance(v, bool):
            raise ParameterError(file, value.key, f"must be true or false, not {v!r}")
    elif spec.kind is Kind.ROUNDING:
        if v not in {r.value for r in Rounding}:
            choices = ", ".join(r.value for r in Rounding)
            raise ParameterError(file, value.key, f"must be one of {choices}, not {v!r}")
    else:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParameterError(
                file, value.key, f"must be an integer ({spec.kind.value}), not {v!r}"
            )
        if v < 0:
            raise ParameterError(file, value.key, f"must not be negative, not {v}")
        if v > MAX_VALUE:
            raise ParameterError(file, value.key, f"{v} is above {MAX_VALUE}")
        if spec.kind is Kind.PERCENT and v > 100:
            raise ParameterError(file, value.key, f"is a percentage, {v} is above 100")
        if value.key == "edge.multiple_permille" and v < 1000:
            raise ParameterError(file, value.key, f"{v}‰ is below the 低保标准 itself (1000‰)")
    if value.effective_to is not None and value.effective_to < value.effective_from:
        raise ParameterError(
            file,
            value.key,
            f"ends ({value.effective_to}) before it starts ({value.effective_from})",
        )
    if not value.clause.strip():
        raise ParameterError(file, value.key, "cites no clause")


def _date(raw: Any, *, file: str, key: str, what: str) -> date:
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ParameterError(file, key, f"{what} {raw!r} is not a date (YYYY-MM-DD)")


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text, so that a bad date is reported with its key."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_file(path: Path) -> tuple[str, str, dict[str, tuple[Value, ...]]]:
    """One parameter file -> (region, name, key -> values); refuses anything doubtful."""
    file = path.name
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise ParameterError(file, "-", f"not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ParameterError(file, "-", "must be a mapping with region, name, sources, values")
    unknown = set(doc) - {"region", "name", "sources", "values"}
    if unknown:
        raise ParameterError(file, sorted(unknown)[0], "unknown top-level key")
    region = str(doc.get("region", ""))
    try:
        parse_region(region)
    except InvalidRegion as exc:
        raise ParameterError(file, "region", str(exc)) from exc
    if path.stem != region:
        raise ParameterError(file, "region", f"{region} does not match the file name")
    sources_raw = doc.get("sources") or {}
    if not isinstance(sources_raw, dict):
        raise ParameterError(file, "sources", "must map a source id to its title and document")
    sources: dict[str, Source] = {}
    for sid, raw in sources_raw.items():
        if not isinstance(raw, dict) or not raw.get("title"):
            raise ParameterError(file, f"sources.{sid}", "needs a title")
        extra = set(raw) - {"title", "document", "demo"}
        if extra:
            raise ParameterError(file, f"sources.{sid}", f"unknown field {sorted(extra)[0]}")
        demo = raw.get("demo", False)
        if not isinstance(demo, bool):
            raise ParameterError(file, f"sources.{sid}.demo", "must be true or false")
        sources[str(sid)] = Source(str(raw["title"]), str(raw.get("document", "")), demo)
    values_raw = doc.get("values") or {}
    if not isinstance(values_raw, dict):
        raise ParameterError(file, "values", "must map a parameter key to its dated values")
    out: dict[str, tuple[Value, ...]] = {}
    for key, entries in values_raw.items():
        out[key] = _parse_entries(file, region, str(key), entries, sources)
    return region, str(doc.get("name", region)), out


def _parse_entries(
    file: str, region: str, key: str, entries: Any, sources: Mapping[str, Source]
) -> tuple[Value, ...]:
    if key not in SPECS:
        raise ParameterError(file, key, "unknown parameter")
    if not isinstance(entries, list) or not entries:
        raise ParameterError(file, key, "must be a list of dated values")
    values = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise ParameterError(file, where, "must be a mapping: value, from, source, clause")
        missing = [k for k in ("value", "from", "source", "clause") if k not in entry]
        if missing:
            raise ParameterError(file, where, f"missing {', '.join(missing)}")
        extra = set(entry) - {"value", "from", "to", "source", "clause", "note"}
        if extra:
            raise ParameterError(file, where, f"unknown field {sorted(extra)[0]}")
        if entry["source"] not in sources:
            raise ParameterError(file, where, f"source {entry['source']!r} is not under sources")
        value = Value(
            key=key,
            value=entry["value"],
            effective_from=_date(entry["from"], file=file, key=where, what="from"),
            effective_to=_date(entry["to"], file=file, key=where, what="to")
            if entry.get("to") is not None
            else None,
            region=region,
            source=sources[entry["source"]],
            clause=str(entry["clause"]),
            origin=file,
        )
        try:
            check_value(value, file=file)
        except ParameterError as exc:
            raise ParameterError(file, where, exc.reason) from None
        values.append(value)
    values.sort(key=lambda v: v.effective_from)
    for before, after in zip(values, values[1:], strict=False):
        if before.effective_to is None or before.effective_to >= after.effective_from:
            raise ParameterError(
                file,
                key,
                f"the value from {before.effective_from} overlaps the value from "
                f"{after.effective_from}: close the first with `to` before the second starts",
            )
    return tuple(values)


def load_book(directory: Path, *, extra: Iterable[Value] = ()) -> Book:
    """Every `<code>.yaml` in `directory`, then `extra` values (the admin's) on top."""
    levels: dict[str, dict[str, tuple[Value, ...]]] = {}
    names: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        region, name, values = parse_file(path)
        levels[region] = values
        names[region] = name
    book = Book(levels=levels, names=names)
    for value in extra:
        book = book.with_value(value)
    return book


DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "parameters"
