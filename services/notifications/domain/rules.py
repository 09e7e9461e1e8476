"""Rules that turn an event into messages: to whom, by which channel, with which template.

The rules themselves are data (`rules.yaml` beside the service); this module reads them and
applies them to one event. Recipients:
- `helper` — the household's 帮扶责任人 (from the event, else the one on file);
- `household` — the household itself, by SMS to the head's phone (read from the registry when
  sending, never carried in an event);
- `county_office` — the county-level office (县级解困办) of the household's county;
- `departments` — each department responsible for one of the household's measures, as a
  referral (转介), e.g. 人社 for employment, 医保 for illness, 教育 for education grants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

CHANNELS = ("inbox", "email", "sms", "webhook")
# Which channel can reach which kind of recipient.
REACHABLE: Mapping[str, frozenset[str]] = {
    "helper": frozenset({"inbox"}),
    "household": frozenset({"sms"}),
    "county_office": frozenset({"inbox", "email"}),
    "departments": frozenset({"inbox", "email", "webhook"}),
}


class InvalidRules(ValueError):
    """The rules file says something impossible (an unknown channel, an unreachable recipient)."""


@dataclass(frozen=True)
class Rule:
    """One kind of message an event causes."""

    template: str
    to: str
    channels: tuple[str, ...]
    # Send only when one of these data fields is non-empty (e.g. `discrepancies`).
    when_any: tuple[str, ...] = ()

    def applies(self, data: Mapping[str, Any]) -> bool:
        return not self.when_any or any(data.get(name) for name in self.when_any)


@dataclass(frozen=True)
class RuleBook:
    """Rules per short event type (`registry.household.noticed`, `schedule.visit_due`)."""

    rules: Mapping[str, tuple[Rule, ...]]
    departments: Mapping[str, str] = field(default_factory=dict)
    # Other names a producer may use for a department (`人社局` for `renshe`).
    aliases: Mapping[str, str] = field(default_factory=dict)

    def for_type(self, short: str) -> tuple[Rule, ...]:
        """The rules of every pattern matching the short type, in file order."""
        found: list[Rule] = []
        for pattern, rules in self.rules.items():
            if fnmatchcase(short, pattern):
                found.extend(rules)
        return tuple(found)

    def templates(self) -> set[tuple[str, str]]:
        """Every (template, channel) pair a rule can render."""
        return {(r.template, c) for rules in self.rules.values() for r in rules for c in r.channels}

    def department_name(self, code: str) -> str:
        return self.departments.get(code, code)

    def department_code(self, name: str) -> str:
        """The code a department's systems subscribe under; an unknown name stays as it is."""
        return name if name in self.departments else self.aliases.get(name, name)


def load_rulebook(raw: Mapping[str, Any]) -> RuleBook:
    """Validate the parsed rules file; refuse a recipient no listed channel can reach."""
    rules: dict[str, tuple[Rule, ...]] = {}
    for pattern, entries in (raw.get("events") or {}).items():
        parsed = []
        for entry in entries:
            to = str(entry["to"])
            channels = tuple(str(c) for c in entry["channels"])
            if to not in REACHABLE:
                raise InvalidRules(f"{pattern}: unknown recipient {to!r}")
            unreachable = [c for c in channels if c not in REACHABLE[to]]
            if unreachable:
                raise InvalidRules(f"{pattern}: {to} cannot be reached by {unreachable}")
            when = entry.get("when_any", ())
            parsed.append(
                Rule(
                    template=str(entry["template"]),
                    to=to,
                    channels=channels,
                    when_any=tuple([when] if isinstance(when, str) else when),
                )
            )
        rules[str(pattern)] = tuple(parsed)
    departments: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for code, entry in (raw.get("departments") or {}).items():
        if isinstance(entry, str):
            entry = {"name": entry}
        departments[str(code)] = str(entry["name"])
        aliases.update({str(alias): str(code) for alias in entry.get("aliases", ())})
    return RuleBook(rules=rules, departments=departments, aliases=aliases)


def short_type(event_type: str) -> str:
    """`cn.bangfu.registry.household.noticed.v1` -> `registry.household.noticed`."""
    parts = event_type.split(".")
    if parts[:2] == ["cn", "bangfu"]:
        parts = parts[2:]
    if parts and parts[-1].startswith("v") and parts[-1][1:].isdigit():
        parts = parts[:-1]
    return ".".join(parts)


@dataclass(frozen=True)
class Recipient:
    """Whom a message is for; `key` is also the inbox owner's user id."""

    kind: str  # helper | household | county_office | department
    id: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class Intent:
    """A message to send: the dedupe key is (recipient, channel, cause)."""

    template: str
    channel: str
    recipient: Recipient
    cause: str
    household_id: str
    region: str
    context: Mapping[str, Any]


@dataclass(frozen=True)
class Occurrence:
    """What happened, as the rules see it: an event or a schedule firing."""

    short_type: str
    cause: str  # event id, or `<schedule kind>:<household>:<period>`
    household_id: str
    region: str
    data: Mapping[str, Any]
    date: str  # ISO date it happened on, for the templates


def intents(
    book: RuleBook, occurrence: Occurrence, *, helper_id: str | None = None
) -> list[Intent]:
    """The messages an occurrence causes under the rule book.

    A rule for the helper of a household that has none goes to the county office instead:
    a reminder nobody receives is how a household falls through the cracks.
    """
    found: list[Intent] = []
    base = {
        "household_id": occurrence.household_id,
        "region": occurrence.region,
        "date": occurrence.date,
        "data": dict(occurrence.data),
    }
    for rule in book.for_type(occurrence.short_type):
        if not rule.applies(occurrence.data):
            continue
        for recipient, context in _recipients(book, rule, occurrence, helper_id, base):
            for channel in rule.channels:
                found.append(
                    Intent(
                        template=rule.template,
                        channel=channel,
                        recipient=recipient,
                        cause=occurrence.cause,
                        household_id=occurrence.household_id,
                        region=occurrence.region,
                        context=context,
                    )
                )
    return list({(i.recipient, i.channel, i.template): i for i in found}.values())


def _recipients(
    book: RuleBook,
    rule: Rule,
    occurrence: Occurrence,
    helper_id: str | None,
    base: Mapping[str, Any],
) -> list[tuple[Recipient, Mapping[str, Any]]]:
    county = Recipient("county_office", occurrence.region)
    if rule.to == "helper":
        helper = str(occurrence.data.get("helper_id") or helper_id or "")
        if helper:
            return [(Recipient("helper", helper), {**base, "unassigned": False})]
        return [(county, {**base, "unassigned": True})]
    if rule.to == "household":
        return [(Recipient("household", occurrence.household_id), base)]
    if rule.to == "county_office":
        return [(county, base)]
    return [
        (
            Recipient("department", f"{code}:{occurrence.region}"),
            {
                **base,
                "department": code,
                "department_name": book.department_name(code),
                "measures": measures,
            },
        )
        for code, measures in measures_by_department(
            occurrence.data.get("measures", ()), code_of=book.department_code
        ).items()
    ]


def measures_by_department(
    measures: Sequence[Mapping[str, Any]], *, code_of: Callable[[str], str]
) -> dict[str, list[dict[str, Any]]]:
    """Each responsible department's measures, amounts also in yuan for people to read."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for measure in measures:
        department = str(measure.get("department") or "")
        if not department:
            continue
        amount = int(measure.get("amount_fen") or 0)
        grouped.setdefault(code_of(department), []).append(
            {
                "code": str(measure.get("code", "")),
                "name": str(measure.get("name") or measure.get("code", "")),
                "amount_fen": amount,
                "amount_yuan": yuan(amount),
            }
        )
    return grouped


def yuan(fen: int) -> str:
    """Integer 分 as yuan with two decimals, for people (`63000` -> `630.00`)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"
