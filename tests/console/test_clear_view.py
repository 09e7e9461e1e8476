"""A member's number in clear from the file, for a chosen purpose, against real processes (the
provider, the registry over HTTP): shown once to a person granted `pii:read`, recorded in the
registry's audit log with the purpose; refused to everyone else."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from services.console.clear import PURPOSES
from services.registry.settings import RegistrySettings
from shared.audit import audit_log
from shared.db import Database
from shared.identity import mask_identity_number
from tests.console.conftest import Stack, csrf_of, sign_in
from tests.console.test_daily_work import _file
from tests.helpers import identity_number

PHONE = "13912345678"


async def _clear_reads(settings: RegistrySettings, household_id: str) -> list[tuple[str, str]]:
    """Who read the household's file in clear and why, from the registry's audit log."""
    url, schema = settings.database
    db = Database(url, schema=schema)
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(audit_log.c.client_id, audit_log.c.purpose).where(
                audit_log.c.action == "household.pii_read", audit_log.c.target == household_id
            )
        )
        found = [(str(who), str(why)) for who, why in rows]
    await db.dispose()
    return found


async def test_the_county_sees_one_number_for_a_purpose_and_the_read_is_audited(
    stack: Stack, registry_settings: RegistrySettings
) -> None:
    number = identity_number(serial=631)
    with httpx.Client(follow_redirects=False, timeout=30) as community:
        sign_in(community, stack, "shequ-411302")
        household_id = _file(community, stack, number=number, name="周玉梅")
        url = f"{stack.console_url}/households/{household_id}"
        filed = community.get(url)
        spouse = community.post(
            f"{url}/members",
            data={
                "csrf": csrf_of(filed),
                "version": re.findall(r'name="version" value="(\d+)"', filed.text)[0],
                "name": "李强",
                "identity_number": identity_number(serial=632),
                "relation": "spouse",
                "phone": PHONE,
            },
        )
        assert spouse.status_code == 303, spouse.text
        plain = community.get(url)
        head = re.search(r'data-member="([^"]+)"', plain.text)
        assert head
        member_url = f"{url}/members/{head.group(1)}/clear"
        spouse_id = re.findall(r'<tr data-member="([^"]+)">', plain.text)[1]
        refused = community.post(member_url, data={"csrf": csrf_of(plain), "purpose": PURPOSES[0]})
    assert await _clear_reads(registry_settings, household_id) == []

    with httpx.Client(follow_redirects=False, timeout=30) as county:
        sign_in(county, stack, "jiekunban-411302")
        page = county.get(url)
        no_purpose = county.post(member_url, data={"csrf": csrf_of(page), "purpose": "随便看看"})
        shown = county.post(member_url, data={"csrf": csrf_of(page), "purpose": PURPOSES[2]})
        phone = county.post(
            f"{url}/members/{spouse_id}/clear", data={"csrf": csrf_of(page), "purpose": PURPOSES[0]}
        )
        after = county.get(url)  # the pages go on with the masked token: nothing in clear

    # Without pii:read: no control, and a direct POST is refused before the registry is asked.
    assert "查看完整身份证号" not in plain.text
    assert refused.status_code == 403
    assert number not in refused.text

    assert "查看完整身份证号" in page.text
    assert mask_identity_number(number) in page.text and number not in page.text
    assert no_purpose.status_code == 422
    assert "请选择查看完整身份证号的用途" in no_purpose.text
    assert shown.status_code == 200, shown.text
    assert f'<dd id="clear-number">{number}</dd>' in shown.text
    assert '<dd id="clear-phone">未登记</dd>' in shown.text  # the head gave no phone
    assert phone.status_code == 200, phone.text
    assert f'<dd id="clear-phone">{PHONE}</dd>' in phone.text
    assert PHONE not in page.text and PHONE not in after.text  # masked on the file
    assert "已连同用途记入登记系统的审计日志" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert after.status_code == 200
    assert number not in after.text
    assert mask_identity_number(number) in after.text
    # One clear read, the person's and the purpose chosen: the page reads alone were masked.
    assert sorted(await _clear_reads(registry_settings, household_id)) == sorted(
        [("jiekunban-411302", PURPOSES[2]), ("jiekunban-411302", PURPOSES[0])]
    )
