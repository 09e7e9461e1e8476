"""The county office's (县解困办) queues beyond the status lists: open objections (异议), notices
that have ended (公示期满, ready for 纳入) and households flagged as able to leave (脱困提示).

Each is a title and rows of list entries with a note; the registry has no list filter for
these, so they are read from the public notice and the files of enrolled households.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from services.console.registry import Registry
from services.console.sessions import Person
from shared.registry_client import BATCH_READ_MAX

# One page of candidates each: a county's queue beyond this is worked from the status lists.
CANDIDATES = 200


def _row(entry: dict[str, Any], note: str) -> dict[str, Any]:
    return {**entry, "note": note}


async def county_queues(
    registry: Registry, token: str, person: Person, *, today: date
) -> list[dict[str, Any]]:
    """异议待处理, 公示期满待纳入 and 脱困提示 (待退出) for the person's regions."""
    objections: dict[str, list[str]] = {}
    ended: list[dict[str, Any]] = []
    for region in person.regions:
        notice = await registry.notice(token, region)
        for objected in notice["open_objections"]:
            objections.setdefault(objected["household_id"], []).extend(objected["objections"])
        for noticed in notice["noticed"]:
            ends_on = noticed["notice_ends_on"]
            if ends_on is not None and ends_on <= today.isoformat():
                entry = {
                    "id": noticed["household_id"],
                    "head_name": noticed["head_name"],
                    "head_identity_number": noticed["head_identity_number"],
                    "category": noticed["category"],
                    "member_count": noticed["member_count"],
                }
                ended.append(_row(entry, f"公示于 {ends_on} 期满"))
    # An objection sends the file back to county review (待开始公示): its list entries.
    approved = await registry.households(token, status="county_approved", limit=str(CANDIDATES))
    objected_rows = [
        _row(entry, "；".join(objections[entry["id"]]))
        for entry in approved["items"]
        if entry["id"] in objections
    ]
    return [
        {"key": "objections", "title": "异议待处理", "rows": objected_rows},
        {"key": "notice-ended", "title": "公示期满待纳入", "rows": ended},
        {
            "key": "exit-flagged",
            "title": "脱困提示（待退出）",
            "rows": await _exit_flagged(registry, token),
        },
    ]


async def _exit_flagged(registry: Registry, token: str) -> list[dict[str, Any]]:
    """Enrolled households whose file carries benefits' 脱困 flag (income above the line)."""
    enrolled = await registry.households(token, status="enrolled", limit=str(CANDIDATES))
    entries = {entry["id"]: entry for entry in enrolled["items"]}
    ids = list(entries)
    rows = []
    for start in range(0, len(ids), BATCH_READ_MAX):
        for file in await registry.read_many(token, ids[start : start + BATCH_READ_MAX]):
            flag = file.get("exit_eligibility")
            if flag:
                since = str(flag.get("flagged_at") or "")[:10]
                rows.append(_row(entries[file["id"]], f"收入已达脱困条件（{since} 提示）"))
    return rows
