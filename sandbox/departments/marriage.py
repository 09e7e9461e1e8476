"""婚姻登记 (民政局): marital status and the registrations behind it."""

from __future__ import annotations

from sandbox.departments.base import Body, Department
from sandbox.people import Draw, Person


def answer(person: Person) -> Body:
    """The status on `as_of` and each marriage or divorce registered by then."""
    draw = Draw("marriage", person.number)
    spouse = _spouse_masked(person, draw)
    registrations = [
        {
            "kind": kind,
            "date": day.isoformat(),
            "registry_region": person.region,
            "spouse_identity_number_masked": spouse,
        }
        for kind, day in (
            ("marriage", person.profile.marriage_date),
            ("divorce", person.profile.divorce_date),
        )
        if day is not None and person.known(day)
    ]
    return {"marital_status": person.marital_status, "registrations": registrations}


def _spouse_masked(person: Person, draw: Draw) -> str:
    # The 17th digit is odd for a man: the spouse's is the opposite of the person's.
    sex_digit = draw.choice("spouse_sex", "02468" if person.sex == "male" else "13579")
    check = draw.choice("spouse_check", "0123456789X")
    return f"{person.region}********{draw.digits('spouse', 2)}{sex_digit}{check}"


DEPARTMENT = Department(
    code="marriage", name="婚姻", holder="民政局", answer=answer, change_kinds=("marriage",)
)
