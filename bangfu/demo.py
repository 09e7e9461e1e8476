"""Demo data for `bangfu up --demo`: households of a demo city filed through the real API."""

from __future__ import annotations

import random
from datetime import date

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


def demo_identity_number(rng: random.Random, region: str) -> str:
    """A checksum-valid identity number for a made-up person born 1950–2000."""
    born = date(rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28))
    body = f"{region}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return body + check_character(body)


def seed(registry_url: str, token: str, *, households: int = 40, seed_value: int = 2023) -> int:
    """File `households` demo households; returns how many the registry accepted."""
    rng = random.Random(seed_value)
    accepted = 0
    with httpx.Client(
        base_url=registry_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        for _ in range(households):
            region = rng.choice(list(NANYANG))
            name = rng.choice(_FAMILY) + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))
            response = client.post(
                "/v1/households",
                json={
                    "region": region,
                    "head": {"name": name, "identity_number": demo_identity_number(rng, region)},
                },
            )
            accepted += response.status_code == 201
    return accepted
