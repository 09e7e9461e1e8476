"""Parameter files: inheritance, dates, and refusal of malformed or contradictory files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from services.benefits.domain.parameters import (
    DEFAULT_DIRECTORY,
    Book,
    NoParameters,
    ParameterError,
    Source,
    Value,
    load_book,
)

BOOK = load_book(DEFAULT_DIRECTORY)


def std(region: str, on: date) -> int | bool | str:
    value = BOOK.resolve(region, on).get("dibao.standard_fen")
    assert value is not None
    return value.value


class TestShippedFiles:
    def test_nanyang_standard_is_630_yuan_from_2024(self) -> None:
        assert std("411300", date(2024, 1, 1)) == 63000
        assert std("411300", date(2023, 12, 31)) == 60000

    def test_a_county_without_its_own_standard_inherits_the_citys(self) -> None:
        assert std("411302", date(2024, 6, 1)) == 63000
        assert std("411303", date(2024, 6, 1)) == 63000  # 卧龙区 has no file at all

    def test_a_county_overrides_its_city(self) -> None:
        assert std("411321", date(2024, 6, 1)) == 60000

    def test_a_parameter_changes_on_its_day_even_mid_month(self) -> None:
        assert std("411381", date(2025, 7, 14)) == 62000
        assert std("411381", date(2025, 7, 15)) == 65000

    def test_a_county_override_before_it_starts_falls_back_to_the_city(self) -> None:
        rent = BOOK.resolve("411302", date(2024, 12, 31)).get(
            "housing.rent_subsidy_fen_per_person_month"
        )
        assert rent is not None and (rent.value, rent.region) == (10000, "411300")
        rent = BOOK.resolve("411302", date(2025, 1, 1)).get(
            "housing.rent_subsidy_fen_per_person_month"
        )
        assert rent is not None and (rent.value, rent.region) == (12000, "411302")

    def test_province_defaults_reach_a_county_with_its_own_file(self) -> None:
        resolved = BOOK.resolve("410727", date(2024, 1, 1))
        edge = resolved.get("edge.multiple_permille")
        assert edge is not None and (edge.value, edge.region) == (1500, "410000")
        exp = resolved.get("expenditure.multiple_permille")
        assert exp is not None and exp.region == "410727" and exp.clause == "三(三)"

    def test_every_value_cites_a_source_and_clause(self) -> None:
        for levels in BOOK.levels.values():
            for values in levels.values():
                for v in values:
                    assert v.source.title and v.clause

    def test_every_demonstration_value_is_marked_a_default(self) -> None:
        """A value whose source is a demonstration must say so: it is cited as a default."""
        for levels in BOOK.levels.values():
            for values in levels.values():
                for v in values:
                    assert v.source.demo == v.source.title.startswith("演示"), v

    def test_every_seed_region_has_a_basis_for_every_category(self) -> None:
        for region in ("411302", "410727", "130302", "150624", "900100"):
            resolved = BOOK.resolve(region, date(2025, 3, 1))
            missing = [
                c
                for c in ("tekun", "dibao", "dibao_edge", "expenditure", "migrant_worker", "layoff")
                if resolved.get(f"basis.category.{c}") is None
            ]
            assert missing == [], region

    def test_the_placeholder_city_is_said_to_be_one(self) -> None:
        assert "原文未载明城市名称" in BOOK.names["900100"]
        text = (DEFAULT_DIRECTORY / "900100.yaml").read_text(encoding="utf-8")
        assert text.startswith("# PLACEHOLDER REGION CODE.")

    def test_a_demonstration_value_is_cited_as_the_default_of_its_level(self) -> None:
        rounding = BOOK.resolve("410727", date(2025, 3, 1)).get("dibao.rounding")
        assert rounding is not None
        assert rounding.citation(BOOK.names) == (
            "本地区文件未规定,适用河南省默认值(演示值):低保金按分计算不取整"
        )
        months = BOOK.resolve("410727", date(2025, 3, 1)).get("exit.consecutive_months")
        assert months is not None and months.grounds(BOOK.names) == (
            "依据《封丘县人民政府办公室关于进一步做好城市困难职工解困脱困工作的实施意见》"
            "(封政办〔2019〕20号)二(二)"
        )

    def test_qinhuangdao_has_its_own_standard(self) -> None:
        assert std("130302", date(2024, 1, 1)) == 70000

    def test_a_region_no_file_covers_is_refused(self) -> None:
        with pytest.raises(NoParameters):
            BOOK.resolve("110101", date(2024, 1, 1))


def write(tmp_path: Path, name: str, body: str) -> Path:
    (tmp_path / name).write_text(body, encoding="utf-8")
    return tmp_path


GOOD_HEAD = """region: "411300"
name: 南阳市
sources:
  s: {title: 《文件》}
values:
"""


class TestRefusedFiles:
    @pytest.mark.parametrize(
        ("values", "key", "reason"),
        [
            (
                "  dibao.standard: [{value: 1, from: 2024-01-01, source: s, clause: x}]",
                "dibao.standard",
                "unknown parameter",
            ),
            (
                "  dibao.standard_fen: [{value: 630.5, from: 2024-01-01, source: s, clause: x}]",
                "dibao.standard_fen[0]",
                "must be an integer (fen), not 630.5",
            ),
            (
                "  dibao.standard_fen: [{value: 63000, from: 2024-13-01, source: s, clause: x}]",
                "dibao.standard_fen[0]",
                "from '2024-13-01' is not a date (YYYY-MM-DD)",
            ),
            (
                "  dibao.standard_fen: [{value: 63000, from: 2024-01-01, source: t, clause: x}]",
                "dibao.standard_fen[0]",
                "source 't' is not under sources",
            ),
            (
                "  dibao.standard_fen: [{value: 63000, from: 2024-01-01, source: s}]",
                "dibao.standard_fen[0]",
                "missing clause",
            ),
            (
                "  dibao.rounding: [{value: up, from: 2024-01-01, source: s, clause: x}]",
                "dibao.rounding[0]",
                "must be one of fen, up_yuan, down_yuan, half_up_yuan, not 'up'",
            ),
            (
                "  medical.tilt_rate_percent: [{value: 160, from: 2024-01-01,"
                " source: s, clause: x}]",
                "medical.tilt_rate_percent[0]",
                "is a percentage, 160 is above 100",
            ),
            (
                "  edge.multiple_permille: [{value: 900, from: 2024-01-01, source: s, clause: x}]",
                "edge.multiple_permille[0]",
                "900‰ is below the 低保标准 itself (1000‰)",
            ),
            (
                "  basis.category.dibao: [{value: false, from: 2024-01-01, source: s, clause: x}]",
                "basis.category.dibao[0]",
                "a rule's basis is `true`, not False",
            ),
            (
                "  basis.measure.no_such: [{value: true, from: 2024-01-01, source: s, clause: x}]",
                "basis.measure.no_such",
                "unknown parameter",
            ),
            (
                "  dibao.standard_fen: [{value: 1, from: 2024-02-01, to: 2024-01-01, source: s,"
                " clause: x}]",
                "dibao.standard_fen[0]",
                "ends (2024-01-01) before it starts (2024-02-01)",
            ),
            (
                "  dibao.standard_fen:\n"
                "    - {value: 60000, from: 2023-01-01, source: s, clause: x}\n"
                "    - {value: 63000, from: 2024-01-01, source: s, clause: x}",
                "dibao.standard_fen",
                "the value from 2023-01-01 overlaps the value from 2024-01-01: close the first "
                "with `to` before the second starts",
            ),
        ],
    )
    def test_a_bad_value_is_refused_naming_file_key_and_reason(
        self, tmp_path: Path, values: str, key: str, reason: str
    ) -> None:
        write(tmp_path, "411300.yaml", GOOD_HEAD + values + "\n")
        with pytest.raises(ParameterError) as caught:
            load_book(tmp_path)
        assert (caught.value.file, caught.value.key, caught.value.reason) == (
            "411300.yaml",
            key,
            reason,
        )
        assert str(caught.value) == f"411300.yaml: {key}: {reason}"

    def test_a_file_named_for_another_region_is_refused(self, tmp_path: Path) -> None:
        write(tmp_path, "411302.yaml", GOOD_HEAD)
        with pytest.raises(ParameterError, match=r"^411302.yaml: region: 411300 does not match"):
            load_book(tmp_path)

    def test_a_source_marks_itself_a_default_only_with_true_or_false(self, tmp_path: Path) -> None:
        head = GOOD_HEAD.replace("s: {title: 《文件》}", "s: {title: 演示, demo: yes please}")
        write(tmp_path, "411300.yaml", head)
        with pytest.raises(ParameterError, match=r"sources.s.demo: must be true or false"):
            load_book(tmp_path)
        write(tmp_path, "411300.yaml", GOOD_HEAD.replace("《文件》}", "《文件》, year: 2023}"))
        with pytest.raises(ParameterError, match=r"sources.s: unknown field year"):
            load_book(tmp_path)

    def test_broken_yaml_is_refused(self, tmp_path: Path) -> None:
        write(tmp_path, "411300.yaml", "region: [\n")
        with pytest.raises(ParameterError, match=r"^411300.yaml: -: not valid YAML"):
            load_book(tmp_path)


def admin(value: int, start: date, end: date | None = None) -> Value:
    return Value(
        key="dibao.standard_fen",
        value=value,
        effective_from=start,
        effective_to=end,
        region="411300",
        source=Source("《调标通知》"),
        clause="一",
        origin="admin:test",
    )


class TestAddingAValue:
    def test_a_new_value_closes_the_open_one_the_day_before(self) -> None:
        book = BOOK.with_value(admin(66000, date(2026, 7, 1)))
        history = book.history("411300", "dibao.standard_fen")
        assert [(v.value, v.effective_from, v.effective_to) for v in history] == [
            (60000, date(2023, 1, 1), date(2023, 12, 31)),
            (63000, date(2024, 1, 1), date(2026, 6, 30)),
            (66000, date(2026, 7, 1), None),
        ]
        assert std("411300", date(2026, 7, 1)) == 63000  # the original book is unchanged

    def test_a_bounded_value_splits_the_one_it_interrupts(self) -> None:
        book: Book = BOOK.with_value(admin(70000, date(2025, 1, 1), date(2025, 1, 31)))
        got = [
            book.resolve("411300", d).get("dibao.standard_fen")
            for d in (date(2024, 12, 31), date(2025, 1, 15), date(2025, 2, 1))
        ]
        assert [v.value for v in got if v] == [63000, 70000, 63000]

    def test_a_value_of_the_wrong_kind_is_refused(self) -> None:
        bad = Value(**{**admin(1, date(2026, 1, 1)).__dict__, "value": True})
        with pytest.raises(ParameterError, match="must be an integer"):
            BOOK.with_value(bad)

    def test_a_value_up_to_the_end_of_time_replaces_the_open_one(self) -> None:
        book = BOOK.with_value(admin(70000, date(2026, 1, 1), date.max))
        history = book.history("411300", "dibao.standard_fen")
        assert [(v.value, v.effective_to) for v in history][-2:] == [
            (63000, date(2025, 12, 31)),
            (70000, date.max),
        ]

    def test_a_value_beyond_the_ceiling_is_refused(self) -> None:
        with pytest.raises(ParameterError, match="is above 10000000000"):
            BOOK.with_value(admin(10**11, date(2026, 1, 1)))
