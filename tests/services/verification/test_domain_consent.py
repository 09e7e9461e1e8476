from datetime import UTC, date, datetime

from services.verification.domain.consent import (
    Consent,
    ConsentState,
    after_revocations,
    consent_state,
)
from services.verification.domain.departments import DEPARTMENTS, Department


def consent(**overrides: object) -> Consent:
    values: dict[str, object] = {
        "id": "c-1",
        "person_index": "p",
        "signed_by": "张三明",
        "signed_on": date(2026, 1, 1),
        "expires_on": date(2026, 12, 31),
        "departments": frozenset({Department.TAX, Department.FINANCE}),
        "document_ref": "宛城-2026-0001",
    }
    values.update(overrides)
    return Consent(**values)  # type: ignore[arg-type]


class TestConsent:
    def test_a_signed_unexpired_consent_covers_its_departments_only(self) -> None:
        on = date(2026, 6, 1)
        assert consent().state_for(Department.TAX, on=on) is ConsentState.VALID
        assert consent().state_for(Department.VEHICLE, on=on) is ConsentState.NOT_COVERED

    def test_the_first_and_last_days_are_inside_and_the_next_day_is_expired(self) -> None:
        assert consent().state_for(Department.TAX, on=date(2026, 1, 1)) is ConsentState.VALID
        assert consent().state_for(Department.TAX, on=date(2026, 12, 31)) is ConsentState.VALID
        assert consent().state_for(Department.TAX, on=date(2027, 1, 1)) is ConsentState.EXPIRED
        assert consent().state_for(Department.TAX, on=date(2025, 12, 31)) is (
            ConsentState.NOT_YET_VALID
        )

    def test_a_revoked_consent_stops_on_the_day_it_is_revoked(self) -> None:
        revoked = consent(revoked_on=date(2026, 3, 1))
        assert revoked.state_for(Department.TAX, on=date(2026, 2, 28)) is ConsentState.VALID
        assert revoked.state_for(Department.TAX, on=date(2026, 3, 1)) is ConsentState.REVOKED

    def test_the_best_of_several_consents_is_used_and_its_reason_kept_otherwise(self) -> None:
        on = date(2026, 6, 1)
        old = consent(id="old", expires_on=date(2026, 5, 31))
        new = consent(id="new", departments=frozenset({Department.VEHICLE}))
        assert consent_state([old, new], Department.VEHICLE, on=on) == (ConsentState.VALID, new)
        assert consent_state([old, new], Department.TAX, on=on) == (ConsentState.EXPIRED, None)
        assert consent_state([], Department.TAX, on=on) == (ConsentState.MISSING, None)

    def test_every_department_has_its_chinese_name_and_holder(self) -> None:
        assert set(DEPARTMENTS) == set(Department)
        assert DEPARTMENTS[Department.REAL_ESTATE].name_zh == "不动产登记"


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


class TestRevocations:
    """A revocation ends the person's authorisation, whichever paper it was recorded on."""

    def test_a_revocation_ends_every_consent_signed_before_its_day(self) -> None:
        here = consent(id="here", signed_on=date(2026, 1, 1))
        there = consent(id="there", signed_on=date(2026, 2, 1), revoked_on=date(2026, 3, 1))

        ended = {c.id: c for c in after_revocations([here, there])}

        assert ended["here"].revoked_on == date(2026, 3, 1)
        assert ended["here"].state_for(Department.TAX, on=date(2026, 2, 28)) is ConsentState.VALID
        assert ended["here"].state_for(Department.TAX, on=date(2026, 3, 1)) is (
            ConsentState.REVOKED
        )

    def test_a_consent_signed_after_the_revocations_day_counts(self) -> None:
        there = consent(id="there", revoked_on=date(2026, 3, 1))
        later = consent(id="later", signed_on=date(2026, 3, 2))

        ended = {c.id: c for c in after_revocations([there, later])}

        assert ended["later"].revoked_on is None

    def test_on_the_revocations_day_the_order_of_entry_decides(self) -> None:
        there = consent(id="there", revoked_on=date(2026, 3, 1), revoked_at=at(1, 10))
        before = consent(id="before", signed_on=date(2026, 3, 1), recorded_at=at(1, 9))
        after = consent(id="after", signed_on=date(2026, 3, 1), recorded_at=at(1, 11))

        ended = {c.id: c for c in after_revocations([there, before, after])}

        assert ended["before"].revoked_on == date(2026, 3, 1)
        assert ended["after"].revoked_on is None
        on = date(2026, 3, 1)
        assert consent_state(list(ended.values()), Department.TAX, on=on) == (
            ConsentState.VALID,
            ended["after"],
        )

    def test_a_consents_own_earlier_revocation_is_kept(self) -> None:
        own = consent(id="own", revoked_on=date(2026, 2, 1))
        other = consent(id="other", revoked_on=date(2026, 3, 1))

        ended = {c.id: c for c in after_revocations([own, other])}

        assert ended["own"].revoked_on == date(2026, 2, 1)
