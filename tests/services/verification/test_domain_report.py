import json
from dataclasses import asdict
from datetime import date

from services.verification.domain.departments import Department
from services.verification.domain.report import (
    Asset,
    AssetLimits,
    Declared,
    Discrepancy,
    Findings,
    Income,
    ItemStatus,
    ReportItem,
    Verdict,
    build_report,
    canonical_json,
)

LIMITS = AssetLimits(
    deposits_per_capita_fen=2_000_000,
    max_properties=1,
    max_vehicles=0,
    business_capital_fen=5_000_000,
    source="demo parameters",
)
AS_OF = date(2026, 10, 31)


def ok(member: str, department: Department, **findings: object) -> ReportItem:
    return ReportItem(
        member,
        department,
        ItemStatus.OK,
        source=f"sandbox:{department}",
        as_of=AS_OF,
        findings=Findings(**findings),
    )  # type: ignore[arg-type]


def missing(member: str, department: Department, status: ItemStatus) -> ReportItem:
    return ReportItem(
        member, department, status, source=f"sandbox:{department}", reason="timed out after 5 s"
    )


def report(
    items: list[ReportItem],
    declared: list[Declared] | None = None,
    members: tuple[str, ...] = ("a", "b", "c"),
):  # type: ignore[no-untyped-def]
    return build_report(
        household_id="h",
        version=1,
        member_ids=members,
        items=items,
        declared=declared or [],
        limits=LIMITS,
        discrepancy_threshold_fen=10_000,
    )


class TestPerCapitaIncome:
    def test_income_is_summed_over_members_and_divided_rounding_down_to_the_fen(self) -> None:
        result = report(
            [
                ok("a", Department.TAX, incomes=(Income("wages", 150_000),)),
                ok("b", Department.SOCIAL_INSURANCE, incomes=(Income("pension", 100_001),)),
            ]
        )
        assert result.per_capita_income_fen == 83_333  # 250001 // 3
        assert result.income_complete

    def test_the_same_wage_seen_by_two_departments_counts_once_at_its_highest(self) -> None:
        result = report(
            [
                ok("a", Department.TAX, incomes=(Income("wages", 150_000),)),
                ok("a", Department.HOUSING_FUND, incomes=(Income("wages", 160_000),)),
            ],
            members=("a",),
        )
        assert result.per_capita_income_fen == 160_000

    def test_an_unavailable_income_department_makes_income_incomplete(self) -> None:
        result = report(
            [
                ok("a", Department.TAX, incomes=(Income("wages", 1),)),
                missing("b", Department.TAX, ItemStatus.UNAVAILABLE),
            ]
        )
        assert not result.income_complete
        assert result.unavailable_departments == (Department.TAX,)


class TestAssetVerdicts:
    def test_within_every_limit_passes(self) -> None:
        result = report(
            [
                ok("a", Department.FINANCE, assets=(Asset("deposits", 5_999_999),)),
                ok("a", Department.REAL_ESTATE, assets=(Asset("real_estate", 1, 1),)),
                ok("a", Department.VEHICLE),
                ok("a", Department.MARKET),
            ]
        )
        assert set(result.asset_verdicts.values()) == {Verdict.PASS}

    def test_deposits_just_over_the_per_capita_limit_fail(self) -> None:
        result = report([ok("a", Department.FINANCE, assets=(Asset("deposits", 6_000_003),))])
        assert result.asset_verdicts["deposits_per_capita"] is Verdict.FAIL

    def test_a_second_property_a_car_or_large_business_capital_fail(self) -> None:
        result = report(
            [
                ok("a", Department.REAL_ESTATE, assets=(Asset("real_estate", 1, 1),)),
                ok("b", Department.REAL_ESTATE, assets=(Asset("real_estate", 1, 1),)),
                ok("c", Department.VEHICLE, assets=(Asset("vehicle", 5_000_000),)),
                ok("c", Department.MARKET, assets=(Asset("business", 5_000_001),)),
            ]
        )
        assert result.asset_verdicts["properties"] is Verdict.FAIL
        assert result.asset_verdicts["vehicles"] is Verdict.FAIL
        assert result.asset_verdicts["business_capital"] is Verdict.FAIL

    def test_a_silent_department_makes_its_test_unknown_unless_already_failed(self) -> None:
        result = report(
            [
                missing("a", Department.FINANCE, ItemStatus.UNAVAILABLE),
                ok("a", Department.VEHICLE, assets=(Asset("vehicle", 1),)),
                missing("b", Department.VEHICLE, ItemStatus.NO_CONSENT),
            ]
        )
        assert result.asset_verdicts["deposits_per_capita"] is Verdict.UNKNOWN
        assert result.asset_verdicts["vehicles"] is Verdict.FAIL

    def test_a_region_without_limits_gets_unknown_verdicts_even_for_plenty(self) -> None:
        result = build_report(
            household_id="h",
            version=1,
            member_ids=["a"],
            items=[ok("a", Department.VEHICLE, assets=(Asset("vehicle", 9_000_000, 3),))],
            declared=[],
            limits=None,
            discrepancy_threshold_fen=10_000,
        )
        assert dict(result.asset_verdicts) == {
            "deposits_per_capita": Verdict.UNKNOWN,
            "properties": Verdict.UNKNOWN,
            "vehicles": Verdict.UNKNOWN,
            "business_capital": Verdict.UNKNOWN,
        }


class TestDiscrepancies:
    def test_an_undeclared_wage_is_flagged_with_its_size(self) -> None:
        result = report(
            [ok("a", Department.TAX, incomes=(Income("wages", 180_000),))],
            declared=[Declared("a", "income", "wages", 0)],
        )
        assert result.discrepancies == (Discrepancy("a", "monthly_income", 0, 180_000),)
        assert result.discrepancies[0].size_fen == 180_000

    def test_a_difference_within_the_threshold_is_not_flagged(self) -> None:
        result = report(
            [ok("a", Department.TAX, incomes=(Income("wages", 150_000),))],
            declared=[Declared("a", "income", "wages", 145_000)],
        )
        assert result.discrepancies == ()

    def test_over_declared_deposits_are_flagged_with_a_negative_size(self) -> None:
        result = report(
            [ok("a", Department.FINANCE, assets=(Asset("deposits", 100_000),))],
            declared=[Declared("a", "asset", "deposits", 900_000)],
        )
        assert [(d.item, d.size_fen) for d in result.discrepancies] == [("deposits", -800_000)]


class TestReportHash:
    def test_the_content_hash_changes_with_any_finding_and_not_otherwise(self) -> None:
        items = [ok("a", Department.TAX, incomes=(Income("wages", 150_000),))]
        same = report(items).content_hash
        assert report(items).content_hash == same
        other = [ok("a", Department.TAX, incomes=(Income("wages", 150_001),))]
        assert report(other).content_hash != same
        assert len(same) == 64

    def test_the_canonical_json_is_what_asdict_gave_so_stored_hashes_still_hold(self) -> None:
        # Reports hashed before as_dict was written out field by field keep their hash.
        items = [
            ok(
                "a",
                Department.TAX,
                incomes=(Income("wages", 150_000),),
                assets=(Asset("vehicle", 3_000_000, 2),),
                flags=frozenset({"receiving_pension", "business_owner"}),
                facts={"hukou_type": "urban", "marital_status": "married"},
                amounts={"medical_self_paid_fen": 12_345},
            ),
            missing("b", Department.FINANCE, ItemStatus.UNAVAILABLE),
            ok("c", Department.REAL_ESTATE, assets=(Asset("real_estate", 0, 2),)),
        ]
        declared = [Declared("a", "income", "wages", 100_000)]
        made = report(items, declared)
        assert made.discrepancies and made.unavailable_departments
        reference = asdict(made)
        reference["discrepancies"] = [
            {**asdict(d), "size_fen": d.size_fen} for d in made.discrepancies
        ]
        assert made.canonical == canonical_json(reference)
        # The standard library's writer, which hashed the reports stored before orjson's, writes
        # the same text: a report's values are strings, integers, booleans and dates.
        assert made.canonical == json.dumps(
            reference,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=lambda v: v.isoformat() if isinstance(v, date) else sorted(v),
        )
