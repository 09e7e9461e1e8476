"""The cluster test's load: department systems filing, reviewing, enrolling and recording
incomes at a steady pace, retrying as such a system would, and what they were told."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, timedelta

from tests.cluster.harness import DepartmentClient, new_key
from tests.helpers import household_body, identity_number

PACE_SECONDS = 0.3  # between one department's households
MONTH = "2026-10"
# Each review step, the event it publishes (type and `level`) and the status it leads to.
STEPS = {
    "community_review": (("reviewed", "community"), "community_reviewed"),
    "street_review": (("reviewed", "street"), "street_reviewed"),
    "county_approve": (("approved", None), "county_approved"),
    "start_notice": (("noticed", None), "publicly_noticed"),
    "enroll": (("enrolled", None), "enrolled"),
}
PLAN = {"measures": [{"group": "basic_living", "measure": "低保金", "lead_department": "民政局"}]}


@dataclass(frozen=True)
class Filing:
    region: str
    members: int


@dataclass
class Ledger:
    """What the department clients were told: the writes answered as successful."""

    filed: dict[str, Filing] = field(default_factory=dict)
    steps: list[tuple[str, str]] = field(default_factory=list)
    # (household, month): the income recorded, and how many tries had an unknown outcome (a
    # PUT of an income takes no If-Match: such a try may have recorded it once more).
    incomes: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


async def _file(
    client: DepartmentClient,
    consents: DepartmentClient,
    ledger: Ledger,
    department: int,
    index: int,
) -> tuple[str, str]:
    """One filing, with a spouse every other time, under an Idempotency-Key kept over retries,
    after each member signed a consent (核对授权书) so that its check asks the departments; the
    household's id and ETag."""
    region = "411302" if index % 3 else "411303"
    spouse: dict[str, object] = {
        "name": "李秀英",
        "identity_number": identity_number(
            region=region, birth=date(1985, 1, 1) + timedelta(days=index), serial=department
        ),
        "relation": "spouse",
    }
    head = identity_number(
        region=region, birth=date(1955, 1, 1) + timedelta(days=index), serial=department
    )
    body = household_body(region, head_number=head, members=[spouse] if index % 2 else None)
    today = date.today()
    for member in body["members"]:  # type: ignore[attr-defined]
        consent = {
            "identity_number": member["identity_number"],
            "region": region,
            "signed_by": member["name"],
            "signed_on": (today - timedelta(days=1)).isoformat(),
            "expires_on": (today + timedelta(days=365)).isoformat(),
            "document_ref": f"授权-{department}-{index}",
        }
        signed = await consents.write("POST", "/v1/consents", body=consent)
        assert signed.response.status_code == 201, signed.response.text
    answer = await client.write("POST", "/v1/households", body=body, headers=new_key())
    assert answer.response.status_code == 201, answer.response.text
    household_id: str = answer.response.json()["id"]
    ledger.filed[household_id] = Filing(region, 2 if index % 2 else 1)
    return household_id, answer.response.headers["ETag"]


async def _step(
    client: DepartmentClient, ledger: Ledger, household_id: str, etag: str, step: str
) -> str:
    """Take a review step under If-Match, as a department system does: on 412 read the file
    again; taken already means a try of unknown outcome took it, else (the suite attached a
    report to the file meanwhile) try again with the new ETag."""
    _, reached = STEPS[step]
    path = f"/v1/households/{household_id}"
    unknown = 0
    while True:
        answer = await client.write(
            "POST", f"{path}/steps/{step}", body={}, headers={"If-Match": etag}
        )
        unknown += answer.unknown_outcomes
        response = answer.response
        if response.status_code == 200:
            break
        assert response.status_code == 412, f"{step}: {response.status_code} {response.text}"
        response = await client.read(path)
        if response.json()["status"] == reached:
            assert unknown, f"{step} taken without a try that could have taken it"
            break
        etag = response.headers["ETag"]
    ledger.steps.append((household_id, step))
    return response.headers["ETag"]


async def _set_plan(client: DepartmentClient, household_id: str, etag: str) -> str:
    path = f"/v1/households/{household_id}"
    unknown = 0
    while True:
        answer = await client.write("PUT", f"{path}/plan", body=PLAN, headers={"If-Match": etag})
        unknown += answer.unknown_outcomes
        response = answer.response
        if response.status_code == 200:
            return response.headers["ETag"]
        assert response.status_code == 412, f"plan: {response.status_code} {response.text}"
        response = await client.read(path)
        if response.json()["plan"]:
            assert unknown, "the plan set without a try that could have set it"
            return response.headers["ETag"]
        etag = response.headers["ETag"]


async def department(
    client: DepartmentClient,
    consents: DepartmentClient,
    ledger: Ledger,
    department: int,
    stop: asyncio.Event,
) -> None:
    """A department system at a steady pace: files, reviews each filing, and walks every third
    to enrolment and records its month's income."""
    index = 0
    while not stop.is_set():
        household_id, etag = await _file(client, consents, ledger, department, index)
        etag = await _step(client, ledger, household_id, etag, "community_review")
        if index % 3 == 0:
            etag = await _set_plan(client, household_id, etag)
            for step in ("street_review", "county_approve", "start_notice", "enroll"):
                etag = await _step(client, ledger, household_id, etag, step)
            income = 1000 * (index + 1)
            answer = await client.write(
                "PUT",
                f"/v1/households/{household_id}/incomes/{MONTH}",
                body={"month": MONTH, "income_fen": income},
            )
            assert answer.response.status_code == 200, answer.response.text
            ledger.incomes[(household_id, MONTH)] = (income, answer.unknown_outcomes)
        index += 1
        await asyncio.sleep(PACE_SECONDS)
