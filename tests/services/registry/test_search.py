"""POST /v1/households:search: a household found by a member's identity number (through its
blind index) or name, confined to the token's regions and masked as the list is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import bearer, household_body, identity_number

SEARCH = "/v1/households:search"
PROBLEM = "application/problem+json"


async def _file(
    registry: httpx.AsyncClient,
    token: Callable[..., str],
    region: str,
    *,
    serial: int,
    spouse_name: str = "李芳",
) -> tuple[dict[str, Any], str, str]:
    """A filed household, its head's number and its spouse's number."""
    head = identity_number(region=region, serial=serial)
    spouse = identity_number(region=region, serial=serial + 1)
    response = await registry.post(
        "/v1/households",
        json=household_body(
            region,
            head_number=head,
            members=[{"name": spouse_name, "relation": "spouse", "identity_number": spouse}],
        ),
        headers=bearer(token("registry:write", regions=[region[:4]])),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body, head, spouse


def _reader(token: Callable[..., str], *scopes: str, regions: list[str]) -> dict[str, str]:
    return bearer(token("registry:read", *scopes, regions=regions))


class TestByIdentityNumber:
    async def test_a_members_number_finds_the_household_masked_as_the_list_shows_it(
        self,
        registry: httpx.AsyncClient,
        token: Callable[..., str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        filed, head, spouse = await _file(registry, token, "411302", serial=301)
        await _file(registry, token, "411302", serial=311)  # another household, not found
        for number in (head, spouse, spouse.lower(), f"  {spouse}  "):
            answer = await registry.post(
                SEARCH,
                json={"identity_number": number},
                headers=_reader(token, regions=["4113"]),
            )
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert [item["id"] for item in items] == [filed["id"]]
            assert items[0]["head_name"] == "张*明"
            assert items[0]["head_identity_number"] == head[:6] + "*" * 11 + head[-1]
            assert head not in answer.text and spouse not in answer.text
        listed = await registry.get(
            "/v1/households", params={"region": "411302"}, headers=_reader(token, regions=["4113"])
        )
        entry = next(i for i in listed.json()["items"] if i["id"] == filed["id"])
        assert entry == items[0]
        logged = capsys.readouterr()
        assert SEARCH in logged.out  # the access log is captured here …
        assert spouse not in logged.out + logged.err  # … and never names the number

    async def test_a_person_filed_in_another_region_is_found_nowhere(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        _, head, _ = await _file(registry, token, "411302", serial=321)
        answer = await registry.post(
            SEARCH, json={"identity_number": head}, headers=_reader(token, regions=["4101"])
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"items": [], "next_cursor": None}

    async def test_an_empty_regions_claim_finds_nothing(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        _, head, _ = await _file(registry, token, "411302", serial=331)
        for body in ({"identity_number": head}, {"name": "张"}):
            answer = await registry.post(SEARCH, json=body, headers=_reader(token, regions=[]))
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"] == []

    async def test_pii_read_with_a_purpose_still_gets_list_entries_masked(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        filed, head, _ = await _file(registry, token, "411302", serial=341)
        answer = await registry.post(
            SEARCH,
            json={"identity_number": head},
            headers={
                **_reader(token, "pii:read", regions=["4113"]),
                "Bangfu-Purpose": quote("查找户档"),
            },
        )
        assert answer.status_code == 200, answer.text
        assert [item["id"] for item in answer.json()["items"]] == [filed["id"]]
        assert head not in answer.text  # the clear number only by reading the file, audited

    async def test_a_number_that_is_not_one_is_422_naming_the_field(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        good = identity_number(region="411302", serial=351)
        wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
        answer = await registry.post(
            SEARCH, json={"identity_number": wrong_check}, headers=_reader(token, regions=["4113"])
        )
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["errors"][0]["field"] == "identity_number"
        assert answer.json()["errors"][0]["code"] == "checksum"


class TestByName:
    async def test_the_start_of_a_members_name_finds_the_households_in_region_only(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        ours, _, _ = await _file(registry, token, "411302", serial=401, spouse_name="欧阳春花")
        second, _, _ = await _file(registry, token, "411303", serial=411, spouse_name="欧阳秋月")
        await _file(registry, token, "410105", serial=421, spouse_name="欧阳夏雨")  # 4101
        await _file(registry, token, "411302", serial=431, spouse_name="司马光")
        headers = _reader(token, regions=["4113"])
        answer = await registry.post(SEARCH, json={"name": "欧阳"}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert [i["id"] for i in answer.json()["items"]] == [ours["id"], second["id"]]
        exact = await registry.post(SEARCH, json={"name": "欧阳春花"}, headers=headers)
        assert [i["id"] for i in exact.json()["items"]] == [ours["id"]]
        # Pages follow the cursor.
        first = await registry.post(SEARCH, json={"name": "欧阳", "limit": 1}, headers=headers)
        assert [i["id"] for i in first.json()["items"]] == [ours["id"]]
        cursor = first.json()["next_cursor"]
        assert cursor == ours["id"]
        rest = await registry.post(
            SEARCH, json={"name": "欧阳", "limit": 1, "cursor": cursor}, headers=headers
        )
        assert [i["id"] for i in rest.json()["items"]] == [second["id"]]
        assert rest.json()["next_cursor"] is None

    async def test_like_wildcards_typed_in_a_name_match_only_themselves(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await _file(registry, token, "411302", serial=441, spouse_name="王五")
        for wildcard in ("%", "_", "王%"):
            answer = await registry.post(
                SEARCH, json={"name": wildcard}, headers=_reader(token, regions=["4113"])
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"] == []


class TestBadBodies:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"name": "   "},
            {"identity_number": "411302198005171234", "name": "张"},
            {"identity_number": "411302198005171234", "region": "4113"},
            {"name": "张", "limit": 0},
            {"name": "张\u0000"},
            {"name": "张\n三"},
        ],
    )
    async def test_a_body_without_exactly_one_key_is_422(
        self, registry: httpx.AsyncClient, token: Callable[..., str], body: dict[str, Any]
    ) -> None:
        answer = await registry.post(SEARCH, json=body, headers=_reader(token, regions=["4113"]))
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"].endswith("/invalid-input")

    async def test_without_registry_read_it_is_403(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        answer = await registry.post(
            SEARCH,
            json={"name": "张"},
            headers=bearer(token("benefits:read", regions=["4113"])),
        )
        assert answer.status_code == 403, answer.text
