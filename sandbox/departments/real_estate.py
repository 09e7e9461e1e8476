"""不动产登记 (不动产登记中心): the properties registered to a person."""

from __future__ import annotations

from datetime import date

from sandbox.departments.base import Body, Department, province
from sandbox.people import Draw, Person

Ranges = tuple[tuple[int, int], tuple[int, int]]  # (area m², yuan per m²), each low and high
HOMES: dict[str, Ranges] = {
    "rural_homestead": ((80, 160), (300, 800)),
    "residential": ((50, 90), (3_000, 6_000)),
}
SECOND_PROPERTIES: dict[str, Ranges] = {
    "residential": ((70, 130), (4_000, 7_500)),
    "commercial": ((30, 80), (5_000, 9_000)),
}


def answer(person: Person) -> Body:
    """Each property registered by `as_of`, with area, share and assessed value, and totals."""
    draw = Draw("real_estate", person.number)
    profile = person.profile
    planned: list[tuple[str, str, Ranges, date]] = []
    for i in range(profile.homes):
        usage = draw.choice(f"home{i}.usage", ("rural_homestead", "rural_homestead", "residential"))
        planned.append((f"home{i}", usage, HOMES[usage], person.adult_day(draw, f"home{i}.date")))
    for i in range(profile.second_properties):
        key = f"second{i}"
        usage = draw.choice(f"{key}.usage", ("residential", "residential", "commercial"))
        planned.append(
            (key, usage, SECOND_PROPERTIES[usage], person.adult_day(draw, f"{key}.date"))
        )
    for i, day in enumerate(profile.added_properties):
        planned.append((f"added{i}", "residential", SECOND_PROPERTIES["residential"], day))
    properties = [
        _property(person, draw, key=key, usage=usage, ranges=ranges, registered=day)
        for key, usage, ranges, day in planned
        if person.known(day)
    ]
    return {
        "property_count": len(properties),
        "total_building_area_m2": round(sum(p["building_area_m2"] for p in properties), 2),
        "total_assessed_value_fen": sum(p["assessed_value_fen"] for p in properties),
        "properties": properties,
    }


def _property(
    person: Person, draw: Draw, *, key: str, usage: str, ranges: Ranges, registered: date
) -> Body:
    (area_low, area_high), (price_low, price_high) = ranges
    area_centi = draw.integer(f"{key}.area", area_low * 100, area_high * 100)
    joint = draw.chance(f"{key}.joint", 0.5)
    share = 50 if joint else 100
    # m² × 100 times yuan per m² is fen; then the person's share, rounded down.
    value = area_centi * draw.integer(f"{key}.price", price_low, price_high) * share // 100
    return {
        "certificate_number": (
            f"{province(person)}({registered.year})不动产权第{draw.digits(f'{key}.cert', 7)}号"
        ),
        "region": person.region,
        "usage": usage,
        "building_area_m2": area_centi / 100,
        "ownership": "joint" if joint else "sole",
        "share_percent": share,
        "assessed_value_fen": value,
        "registered_date": registered.isoformat(),
    }


DEPARTMENT = Department(
    code="real_estate",
    name="不动产",
    holder="不动产登记中心",
    answer=answer,
    change_kinds=("property_registered",),
)
