"""The county office's (县解困办) queues beyond the status lists: open objections (异议), notices
that have ended (公示期满, ready for 纳入) and households flagged as able to leave (脱困提示).

Each is one of the registry's list filters, with its exact total; the objections' texts come
from the public notice of the person's regions.
"""

from __future__ import annotations

from typing import Any

from services.console.registry import Registry
from services.console.sessions import Person


async def county_queues(
    registry: Registry, token: str, person: Person, *, rows: int
) -> list[dict[str, Any]]:
    """异议待处理, 公示期满待纳入 and 脱困提示 (待退出) for the person's regions: the first
    `rows` households of each, a note on each row, and how many there are in all."""
    objections: dict[str, list[str]] = {}
    for region in person.regions:
        for objected in (await registry.notice(token, region))["open_objections"]:
            objections.setdefault(objected["household_id"], []).extend(objected["objections"])
    queues = []
    for key, title, filters in (
        ("objections", "异议待处理", {"objected": "true"}),
        ("notice-ended", "公示期满待纳入", {"notice_ended": "true"}),
        ("exit-flagged", "脱困提示（待退出）", {"exit_flagged": "true"}),
    ):
        page = await registry.households(token, limit=str(rows), count="true", **filters)
        queues.append(
            {
                "key": key,
                "title": title,
                "filters": filters,
                "count": page["total"],
                "rows": [{**h, "note": _note(key, h, objections)} for h in page["items"]],
                "more": page["next_cursor"],
            }
        )
    return queues


def _note(key: str, household: dict[str, Any], objections: dict[str, list[str]]) -> str:
    if key == "objections":
        return "；".join(objections.get(household["id"], [])) or "有未处理的异议"
    if key == "notice-ended":
        return f"公示于 {household['notice_ends_on']} 期满"
    return f"收入已达脱困条件（{str(household['exit_flagged_at'])[:10]} 提示）"
