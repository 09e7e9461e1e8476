"""The household file as DCI records: a household is a `Group`, each person a `Member`.

Identity numbers, birth dates and phones follow the REST API's rule: masked unless the caller
holds pii:read (then read in clear, with a purpose, audited by the caller of these functions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from services.registry.service import IDENTITY, PHONE
from shared.crypto import Keyring, decrypt

# Bangfu's relation to the head as the DCI RelationshipType words.
RELATIONSHIP = {"head": "self", "spouse": "spouse", "child": "child", "parent": "parent"}


def _iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def member_record(
    row: Mapping[str, Any], *, keyring: Keyring | None, today: date
) -> dict[str, Any]:
    """One person; `keyring` given means identity number, birth date and phone in clear."""
    number = (
        decrypt(keyring, row["identity_cipher"], context=IDENTITY)
        if keyring
        else row["identity_masked"]
    )
    birth: date = row["birth_date"]
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    person: dict[str, Any] = {
        "@type": "SRPerson",
        "identifier": [
            {"@type": "Identifier", "identifier_type": "UIN", "identifier_value": number}
        ],
        "name": {"@type": "Name", "given_name": row["name"]},
        "sex": {"male": "male", "female": "female"}.get(row["sex"], row["sex"]),
        "birth_year": birth.year,
        "age": age,
    }
    if keyring is not None:
        person["birth_date"] = birth.isoformat()
        if row["phone_cipher"]:
            person["phone_number"] = decrypt(keyring, row["phone_cipher"], context=PHONE)
    elif row["phone_masked"]:
        person["phone_number"] = row["phone_masked"]
    return {
        "@type": "Member",
        "@id": row["id"],
        "member_identifier": [
            {"@type": "Identifier", "identifier_type": "MEMBER_ID", "identifier_value": row["id"]},
            {"@type": "Identifier", "identifier_type": "UIN", "identifier_value": number},
        ],
        "demographic_info": person,
        "relationship_head": RELATIONSHIP.get(row["relation"], row["relation"]),
        "is_disabled": row["disability_grade"] is not None,
        "employment_status": row["employment"],
        "education_level": row["education_stage"],
        "additional_attributes": [
            {"name": "household_id", "value": row["household_id"]},
            {"name": "hukou_type", "value": row["hukou_type"]},
            {"name": "labour_capacity", "value": row["labour_capacity"]},
            {"name": "major_illness", "value": row["major_illness"]},
            {"name": "chronic_illness", "value": row["chronic_illness"]},
        ],
    }


def group_record(
    row: Mapping[str, Any],
    *,
    members: Sequence[Mapping[str, Any]],
    keyring: Keyring | None,
    today: date,
) -> dict[str, Any]:
    """One household (一户一档) with its members."""
    people = [member_record(m, keyring=keyring, today=today) for m in members]
    head = next((p for p, m in zip(people, members, strict=True) if m["relation"] == "head"), None)
    verification = row.get("verification") or {}
    income = verification.get("per_capita_income_fen")
    record: dict[str, Any] = {
        "@type": "Group",
        "@id": row["id"],
        "group_identifier": [
            {
                "@type": "Identifier",
                "identifier_type": "HOUSEHOLD_ID",
                "identifier_value": row["id"],
            }
        ],
        "group_type": "household",
        "group_size": row["member_count"],
        "place": {
            "@type": "Place",
            "region": row["region"],
            "street": row["street_name"],
            "community": row["community_name"],
            "address": row["address"],
        },
        "group_head_info": head,
        "member_list": people,
        "registration_date": _iso(row["created_at"]),
        "last_updated": _iso(row["updated_at"]),
        "additional_attributes": [
            {"name": "status", "value": row["status"]},
            {"name": "category", "value": row["category"]},
            {"name": "enrolled_on", "value": _iso(row["enrolled_on"])},
            {"name": "exited_on", "value": _iso(row["exited_on"])},
            {
                "name": "per_capita_income_yuan",
                "value": income / 100 if income is not None else None,
            },
        ],
    }
    return record
