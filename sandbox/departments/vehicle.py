"""机动车登记 (公安局交管部门): the vehicles registered to a person."""

from __future__ import annotations

from datetime import date

from sandbox.departments.base import Body, Department, alnum, province, yuan
from sandbox.people import Draw, Person

CAR_BRANDS = ("五菱", "比亚迪", "长安", "吉利", "大众", "丰田")
# Estimated value in yuan, low and high.
SMALL_KINDS = {
    "electric_tricycle": (2_000, 6_000),
    "motorcycle": (3_000, 8_000),
    "farm_vehicle": (5_000, 15_000),
}


def answer(person: Person) -> Body:
    """Each vehicle registered by `as_of`, with kind, plate and estimated value, and totals."""
    draw = Draw("vehicle", person.number)
    profile = person.profile
    planned: list[tuple[str, str, date]] = [
        (f"car{i}", "small_car", person.adult_day(draw, f"car{i}.date"))
        for i in range(profile.cars)
    ]
    for i in range(profile.small_vehicles):
        kind = draw.choice(f"small{i}.kind", tuple(SMALL_KINDS))
        planned.append((f"small{i}", kind, person.adult_day(draw, f"small{i}.date")))
    planned += [(f"added{i}", "small_car", day) for i, day in enumerate(profile.added_vehicles)]
    vehicles = [
        _vehicle(person, draw, key=key, kind=kind, registered=day)
        for key, kind, day in planned
        if person.known(day)
    ]
    return {
        "vehicle_count": len(vehicles),
        "total_estimated_value_fen": sum(v["estimated_value_fen"] for v in vehicles),
        "vehicles": vehicles,
    }


def _vehicle(person: Person, draw: Draw, *, key: str, kind: str, registered: date) -> Body:
    car = kind == "small_car"
    low, high = (30_000, 150_000) if car else SMALL_KINDS[kind]
    return {
        "kind": kind,
        "brand": draw.choice(f"{key}.brand", CAR_BRANDS) if car else None,
        "plate_number": f"{province(person)}R·{alnum(draw, f'{key}.plate', 5)}",
        "registered_date": registered.isoformat(),
        "estimated_value_fen": yuan(draw, f"{key}.value", low, high),
        "status": "normal",
    }


DEPARTMENT = Department(
    code="vehicle",
    name="车辆",
    holder="公安局",
    answer=answer,
    change_kinds=("vehicle_registered",),
)
