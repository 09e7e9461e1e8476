"""One sample `data` per occurrence the rules know, shaped as its producer sends it."""

from __future__ import annotations

from typing import Any

MEASURES = [
    {"code": "dibao", "name": "低保金", "amount_fen": 63000, "department": "民政局"},
    {"code": "job_training", "name": "职业技能培训补贴", "amount_fen": 0, "department": "人社局"},
    {"code": "public_job", "name": "公益性岗位", "amount_fen": 120000, "department": "renshe"},
    {"code": "medical_aid", "name": "医疗倾斜救助", "amount_fen": 600000, "department": "yibao"},
    {
        "code": "boarding_allowance",
        "name": "寄宿生生活补助",
        "amount_fen": 100000,
        "department": "教育局",
    },
    {"code": "union_aid", "name": "工会帮扶救助金", "amount_fen": 200000, "department": "gonghui"},
    {"code": "rent_subsidy", "name": "租赁补贴", "amount_fen": 30000, "department": "zhujian"},
]

SAMPLES: dict[str, dict[str, Any]] = {
    "registry.household.helper_assigned": {
        "helper_id": "H001",
        "helper_name_masked": "李*",
        "unit": "南阳市总工会",
    },
    "registry.household.noticed": {
        "notice_starts_on": "2026-11-01",
        "notice_ends_on": "2026-11-07",
    },
    "verification.verification.completed": {
        "discrepancies": [
            {
                "member_id": "m-1",
                "item": "wages",
                "declared_fen": 100000,
                "verified_fen": 180000,
                "size_fen": 80000,
            }
        ],
        "unavailable_departments": ["tax"],
    },
    "benefits.entitlements.determined": {"measures": MEASURES},
    "benefits.entitlements.changed": {"measures": MEASURES[:2]},
    "benefits.exit.eligible": {"months_above": 6, "required": 6, "latest_month": "2026-10"},
    "schedule.visit_due": {"period": "2026-11", "helper_id": "H001"},
    "schedule.visit_overdue": {"period": "2026-10", "helper_id": "H001", "overdue_days": 5},
    "schedule.recheck_due": {"period": "2027-11-20", "helper_id": "H001", "due_on": "2027-11-20"},
    "schedule.notice_ended": {
        "period": "2026-11-07",
        "helper_id": None,
        "notice_ends_on": "2026-11-07",
    },
}
