"""户籍 (公安局): the household registration of one person, and their death."""

from __future__ import annotations

from sandbox.departments.base import Body, Department, iso
from sandbox.people import Draw, Person


def answer(person: Person) -> Body:
    """Status, registered region, household number (户号) and the person's place in it."""
    draw = Draw("hukou", person.number)
    return {
        "status": "deceased" if person.deceased else "normal",
        "death_date": iso(person.profile.death_date) if person.deceased else None,
        "sex": person.sex,
        "birth_date": person.birth_date.isoformat(),
        "registered_region": person.region,
        "household_number": person.region + draw.digits("household", 6),
        "hukou_kind": "rural" if draw.chance("rural", 0.75) else "urban",
        "relation_to_head": _relation(person, draw),
        "household_size": draw.integer("household_size", 1, 6),
        "registered_since": person.birth_date.isoformat(),
    }


def _relation(person: Person, draw: Draw) -> str:
    if person.age < 18:
        return "child"
    if person.age >= 70 and draw.chance("lives_with_children", 0.4):
        return "parent"
    return draw.choice("relation", ("head", "head", "spouse", "child"))


DEPARTMENT = Department(
    code="hukou", name="户籍", holder="公安局", answer=answer, change_kinds=("death",)
)
