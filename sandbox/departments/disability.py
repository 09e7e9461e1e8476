"""残疾人联合会 (残联): the disability certificate (残疾人证) and the two subsidies (两项补贴)."""

from __future__ import annotations

from datetime import date, timedelta

from sandbox.departments.base import Body, Department
from sandbox.people import REFERENCE_DATE, Draw, Person

CATEGORIES = ("visual", "hearing", "speech", "physical", "intellectual", "mental", "multiple")
# 重度残疾人护理补贴 for grades 1 and 2, a month, in fen.
NURSING_SUBSIDY_FEN = {1: 10_000, 2: 8_000}
LIVING_SUBSIDY_FEN = 7_000  # 困难残疾人生活补贴, a month


def answer(person: Person) -> Body:
    """The certificate (number masked), and the subsidies paid on it."""
    grade = person.profile.disability_grade
    draw = Draw("disability", person.number)
    # Third-generation certificates (第三代残疾人证), issued since 2016, valid ten years.
    issued = draw.day("issued", max(person.birth_date, date(2016, 1, 1)), REFERENCE_DATE)
    if grade is None or not person.known(issued):
        return {"certificate": None, "subsidies": None}
    category = draw.integer("category", 1, len(CATEGORIES))
    valid_until = issued + timedelta(days=3_652)
    return {
        "certificate": {
            # 残疾人证号 = the identity number, then the category and the grade.
            "certificate_number_masked": f"{person.masked}{category}{grade}",
            "category": CATEGORIES[category - 1],
            "grade": grade,
            "issued_date": issued.isoformat(),
            "valid_until": valid_until.isoformat(),
            "status": "valid" if person.as_of <= valid_until else "expired",
        },
        "subsidies": {
            "living_subsidy_monthly_fen": LIVING_SUBSIDY_FEN if draw.chance("hardship", 0.6) else 0,
            "nursing_subsidy_monthly_fen": NURSING_SUBSIDY_FEN.get(grade, 0),
        },
    }


DEPARTMENT = Department(code="disability", name="残联", holder="残疾人联合会", answer=answer)
