"""Demo data for `bangfu up --demo`: households of a demo city filed through the real API."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from shared.identity import check_character

# 南阳市 districts and counties (GB/T 2260), the demo city of the policies.
NANYANG = {
    "411302": "宛城区",
    "411303": "卧龙区",
    "411321": "南召县",
    "411322": "方城县",
    "411323": "西峡县",
    "411324": "镇平县",
    "411325": "内乡县",
    "411326": "淅川县",
    "411327": "社旗县",
    "411328": "唐河县",
    "411329": "新野县",
    "411330": "桐柏县",
    "411381": "邓州市",
}
_FAMILY = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国"


def demo_identity_number(rng: random.Random, region: str, years: tuple[int, int]) -> str:
    """A checksum-valid identity number for a made-up person born in `years`."""
    born = date(rng.randint(*years), rng.randint(1, 12), rng.randint(1, 28))
    body = f"{region}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return body + check_character(body)


def demo_household(rng: random.Random) -> dict[str, object]:
    """One household of the demo city: a head and up to three more members."""
    region = rng.choice(list(NANYANG))
    family = rng.choice(_FAMILY)

    def person(relation: str, born: tuple[int, int]) -> dict[str, object]:
        name = family + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))
        number = demo_identity_number(rng, region, born)
        return {
            "name": name,
            "identity_number": number,
            "relation": relation,
            "employment": rng.choice(["unemployed", "flexible", "laid_off", "employed"]),
        }

    members = [person("head", (1955, 1985))]
    if rng.random() < 0.7:
        members.append(person("spouse", (1955, 1985)))
    for _ in range(rng.randint(0, 2)):
        child = person("child", (2005, 2020))
        child["employment"] = "student"
        child["education_stage"] = rng.choice(["primary", "junior_high", "senior_high"])
        members.append(child)
    return {
        "location": {
            "region": region,
            "address": f"{NANYANG[region]}建设路{rng.randint(1, 300)}号",
        },
        "category": rng.choice(["dibao", "dibao", "dibao_edge", "expenditure", "layoff"]),
        "causes": rng.sample(
            ["illness", "disability", "education", "unemployment"], k=rng.randint(1, 2)
        ),
        "members": members,
    }


def seed(
    registry_url: str,
    token: str,
    *,
    verification_url: str | None = None,
    households: int = 40,
    seed_value: int = 2023,
) -> int:
    """File `households` demo households and walk some through review; returns how many filed.

    With `verification_url`, members sign consents (核对授权书) first, so that the check each
    application starts has reports to show: most for every department, every tenth household
    for two departments only, and every tenth other one none at all (its check fails).
    """
    rng = random.Random(seed_value)
    filed = 0
    # The demo's token has pii:read, so each read says why (the registry audits it).
    auth = {"Authorization": f"Bearer {token}", "Bangfu-Purpose": quote("演示数据")}
    with (
        httpx.Client(base_url=registry_url, headers=auth, timeout=10) as client,
        httpx.Client(base_url=verification_url or registry_url, headers=auth, timeout=10) as checks,
    ):
        for index in range(households):
            household = demo_household(rng)
            if verification_url and index % 10 != 9:
                departments = ["tax", "social_insurance"] if index % 10 == 8 else None
                _consent(checks, household, departments)
            response = client.post("/v1/households", json=household)
            if response.status_code != 201:
                continue
            filed += 1
            _walk(client, response.json()["id"], steps=index % 6)
    return filed


def _consent(
    client: httpx.Client, household: dict[str, Any], departments: list[str] | None
) -> None:
    today = date.today()
    region = household["location"]["region"]
    for member in household["members"]:
        body: dict[str, Any] = {
            "identity_number": member["identity_number"],
            "region": region,
            "signed_by": member["name"],
            "signed_on": (today - timedelta(days=1)).isoformat(),
            "expires_on": (today + timedelta(days=365)).isoformat(),
            "document_ref": f"演示授权-{member['identity_number'][-6:]}",
        }
        if departments:
            body["departments"] = departments
        client.post("/v1/consents", json=body)


_DEMO_STEPS = ("community_review", "street_review", "county_approve", "start_notice")


def _walk(client: httpx.Client, household_id: str, *, steps: int) -> None:
    """Take the first `steps` review steps (the street review comes with a draft plan)."""
    etag = client.get(f"/v1/households/{household_id}").headers["ETag"]
    for step in _DEMO_STEPS[:steps]:
        if step == "street_review":
            etag = client.put(
                f"/v1/households/{household_id}/plan",
                headers={"If-Match": etag},
                json={
                    "measures": [
                        {"group": "basic_living", "measure": "低保金", "lead_department": "民政局"}
                    ]
                },
            ).headers["ETag"]
        response = client.post(
            f"/v1/households/{household_id}/steps/{step}", headers={"If-Match": etag}, json={}
        )
        if response.status_code != 200:
            return
        etag = response.headers["ETag"]
