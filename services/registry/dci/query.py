"""DCI queries (idtype-value, expression, predicate) as SQL over the household file.

Attributes a registry search needs, and no others (an unknown one is refused, never ignored):
`region` (GB/T 2260 prefix), `status`, `category`, `group_size` (members on file), `age` (some
member's age in whole years today), `per_capita_income` (yuan a month, from the latest
verification report), and for idtype-value `UIN`/`NIN` (a member's identity number, through the
blind index) and `HOUSEHOLD_ID`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, false, not_, or_, select

from services.registry.service import INDEX_PURPOSE
from services.registry.store import household, member
from shared.crypto import Keyring, blind_index
from shared.regions import InvalidRegion, normalize_prefix

IDENTITY_TYPES = frozenset({"UIN", "NIN", "ID", "IDENTITY_NUMBER"})
ATTRIBUTES = ("region", "status", "category", "group_size", "age", "per_capita_income")
SORTABLE = {
    "household_id": household.c.id,
    "region": household.c.region,
    "status": household.c.status,
    "category": household.c.category,
    "group_size": household.c.member_count,
    "registration_date": household.c.created_at,
    "last_updated": household.c.updated_at,
}
# The predicate operators of the spec and the expression operators (MongoDB-style) they mirror.
_EXPRESSION_OPERATORS = {
    "$eq": "eq",
    "$lt": "lt",
    "$gt": "gt",
    "$lte": "le",
    "$gte": "ge",
    "$in": "in",
}


class QueryNotSupported(ValueError):
    """A query this registry cannot answer as asked (rjct.search_criteria.invalid)."""


def _number(value: Any, attribute: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise QueryNotSupported(f"{attribute} compares with a number, not {value!r}") from exc


def _compare(column: Any, operator: str, value: Any) -> Any:
    if operator == "in":
        values = value if isinstance(value, list) else [value]
        return column.in_(values)
    comparisons: dict[str, Callable[[Any, Any], Any]] = {
        "eq": lambda c, v: c == v,
        "lt": lambda c, v: c < v,
        "gt": lambda c, v: c > v,
        "le": lambda c, v: c <= v,
        "ge": lambda c, v: c >= v,
    }
    if operator not in comparisons:
        raise QueryNotSupported(f"operator {operator!r} is not one of eq lt gt le ge in")
    return comparisons[operator](column, value)


def _years_before(today: date, years: int) -> date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February in a year without one
        return today.replace(year=today.year - years, day=28)


def _age_condition(operator: str, value: Any, today: date) -> Any:
    """Some member's age (whole years today) compares to `value`: as birth-date ranges."""
    if operator == "in":
        values = value if isinstance(value, list) else [value]
        return or_(*(_age_condition("eq", v, today) for v in values)) if values else false()
    age = int(_number(value, "age"))
    # age >= n  <=>  born on or before today n years ago; age < n is its negation.
    at_least = {"ge": age, "gt": age + 1, "eq": age}.get(operator)
    below = {"lt": age, "le": age + 1, "eq": age + 1}.get(operator)
    if at_least is None and below is None:
        raise QueryNotSupported(f"operator {operator!r} is not one of eq lt gt le ge in")
    conditions = []
    if at_least is not None:
        conditions.append(member.c.birth_date <= _years_before(today, at_least))
    if below is not None:
        conditions.append(member.c.birth_date > _years_before(today, below))
    return household.c.id.in_(select(member.c.household_id).where(and_(*conditions)))


def _region_condition(operator: str, value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    if operator not in ("eq", "in"):
        raise QueryNotSupported("region takes eq or in (region prefixes)")
    try:
        prefixes = [normalize_prefix(str(v)) for v in values]
    except InvalidRegion as exc:
        raise QueryNotSupported(str(exc)) from exc
    return or_(*(household.c.region.startswith(p) for p in prefixes)) if prefixes else false()


def attribute_condition(attribute: str, operator: str, value: Any, *, today: date) -> Any:
    """One `attribute operator value` as a condition on households."""
    if attribute == "region":
        return _region_condition(operator, value)
    if attribute in ("status", "category"):
        return _compare(household.c[attribute], operator, value)
    if attribute == "group_size":
        values = [
            int(_number(v, attribute)) for v in (value if isinstance(value, list) else [value])
        ]
        return _compare(
            household.c.member_count, operator, values if operator == "in" else values[0]
        )
    if attribute == "age":
        return _age_condition(operator, value, today)
    if attribute == "per_capita_income":
        fen = household.c.verification["per_capita_income_fen"].as_integer()
        if operator == "in":
            raise QueryNotSupported("per_capita_income takes eq lt gt le ge")
        return _compare(fen, operator, int(_number(value, attribute) * 100))
    raise QueryNotSupported(
        f"attribute {attribute!r} is not searchable here; use one of {', '.join(ATTRIBUTES)}"
    )


def idtype_condition(query: Any, keyring: Keyring) -> Any:
    if not isinstance(query, dict) or "type" not in query or "value" not in query:
        raise QueryNotSupported("an idtype-value query is {type, value}")
    id_type, value = str(query["type"]).upper(), query["value"]
    if not isinstance(value, (str, int)):
        raise QueryNotSupported("an identifier value is a string")
    if id_type in IDENTITY_TYPES:
        # A number that cannot be anyone's simply matches no one: the index is exact.
        index = blind_index(keyring, str(value).strip().upper(), purpose=INDEX_PURPOSE)
        return household.c.id.in_(
            select(member.c.household_id).where(member.c.identity_index == index)
        )
    if id_type == "HOUSEHOLD_ID":
        return household.c.id == str(value)
    raise QueryNotSupported(
        f"identifier type {query['type']!r} is not one of "
        f"{', '.join(sorted(IDENTITY_TYPES))}, HOUSEHOLD_ID"
    )


def _expression(node: Any, today: date) -> Any:
    if not isinstance(node, dict) or not node:
        raise QueryNotSupported("an expression is an object of conditions")
    conditions = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise QueryNotSupported(f"{key} takes a list of expressions")
            parts = [_expression(v, today) for v in value]
            conditions.append(and_(*parts) if key == "$and" else or_(*parts))
        elif key == "$not":
            conditions.append(not_(_expression(value, today)))
        elif isinstance(value, dict):
            for operator, operand in value.items():
                if operator not in _EXPRESSION_OPERATORS:
                    raise QueryNotSupported(
                        f"operator {operator!r} is not one of {', '.join(_EXPRESSION_OPERATORS)}"
                    )
                conditions.append(
                    attribute_condition(key, _EXPRESSION_OPERATORS[operator], operand, today=today)
                )
        else:
            conditions.append(attribute_condition(key, "eq", value, today=today))
    return and_(*conditions)


def expression_condition(query: Any, today: date) -> Any:
    """`{type, value: {expression: {collection, query}}}` with a MongoDB-style query."""
    try:
        expression = query["value"]["expression"]
        body = expression["query"]
    except (KeyError, TypeError) as exc:
        raise QueryNotSupported(
            "an expression query is {type, value: {expression: {collection, query}}}"
        ) from exc
    if expression.get("collection", "Group") not in ("Group", "Member"):
        raise QueryNotSupported("the expression's collection is Group or Member")
    return _expression(body, today)


def predicate_condition(query: Any, today: date) -> Any:
    """A list of `{seq_num, expression1, condition, expression2}`, all of which must hold."""
    if not isinstance(query, list) or not query:
        raise QueryNotSupported("a predicate query is a list of expressions")

    def one(expression: Any) -> Any:
        try:
            return attribute_condition(
                str(expression["attribute_name"]),
                str(expression["operator"]),
                expression["attribute_value"],
                today=today,
            )
        except (KeyError, TypeError) as exc:
            raise QueryNotSupported(
                "an expression is {attribute_name, operator, attribute_value}"
            ) from exc

    conditions = []
    for item in sorted(query, key=lambda p: p.get("seq_num", 0) if isinstance(p, dict) else 0):
        if not isinstance(item, dict) or "expression1" not in item:
            raise QueryNotSupported("each predicate has an expression1")
        first = one(item["expression1"])
        if "expression2" not in item:
            conditions.append(not_(first) if item.get("condition") == "not" else first)
            continue
        second = one(item["expression2"])
        condition = item.get("condition", "and")
        if condition == "and":
            conditions.append(and_(first, second))
        elif condition == "or":
            conditions.append(or_(first, second))
        elif condition == "not":
            conditions.append(and_(first, not_(second)))
        else:
            raise QueryNotSupported("condition is and, or or not")
    return and_(*conditions)


def condition(query_type: str, query: Any, *, keyring: Keyring, today: date) -> Any:
    if query_type == "idtype-value":
        return idtype_condition(query, keyring)
    if query_type == "expression":
        return expression_condition(query, today)
    if query_type == "predicate":
        return predicate_condition(query, today)
    raise QueryNotSupported(f"query_type {query_type!r}")


def order_by(sort: Sequence[Any]) -> list[Any]:
    """The spec's sort list as ORDER BY, the household id last so pages are stable."""
    clauses = []
    for item in sort:
        column = SORTABLE.get(item.attribute_name)
        if column is None:
            raise QueryNotSupported(f"sort by one of {', '.join(SORTABLE)}")
        clauses.append(column.desc() if item.sort_order == "desc" else column.asc())
    return [*clauses, household.c.id.asc()]
