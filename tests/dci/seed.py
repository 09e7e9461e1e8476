"""Test data for the DCI conformance run only (never production data, never the demo).

The suite's README expects a record with UIN `TEST-001`, a subscription `sub-test-001` and
records matching `age<25` and `poverty_score<2.5`. Bangfu's UIN is a GB 11643 resident identity
number, which `TEST-001` is not, and the file has no poverty score: the suite's searches for
them are answered as such (no record; `rjct.search_criteria.invalid` naming the searchable
attributes). What is loaded: two households of 4113 (one with a member under 25) that its
age and region searches find, and the subscription it unsubscribes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx

from services.registry.dci import store
from shared.db import Database
from tests.helpers import bearer, household_body, identity_number

REGION = "411302"
SUBSCRIPTION_CODE = "sub-test-001"
# The suite's DCI_SENDER_ID default: the sender whose key the registry registers.
SENDER_ID = "test-client"


async def load(
    registry: httpx.AsyncClient, *, write_token: str, database: Database, client_id: str
) -> list[str]:
    """File the households through the REST API and add the subscription; their ids."""
    young = identity_number(region=REGION, birth=date(date.today().year - 19, 4, 2), serial=702)
    filings = [
        household_body(REGION, head_number=identity_number(region=REGION, serial=701)),
        household_body(
            REGION,
            head_number=identity_number(region=REGION, birth=date(1975, 1, 9), serial=703),
            members=[{"name": "李小青", "identity_number": young, "relation": "child"}],
        ),
    ]
    ids = []
    for body in filings:
        response = await registry.post("/v1/households", json=body, headers=bearer(write_token))
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    async with database.unit_of_work() as uow:
        await store.add_subscription(
            uow.session,
            {
                "code": SUBSCRIPTION_CODE,
                "client_id": client_id,
                "sender_id": SENDER_ID,
                "sender_uri": None,
                "regions": ["4113"],
                "event_type": "REGISTER",
                "filter_type": "idtype-value",
                "filter": {"type": "HOUSEHOLD_ID", "value": ids[0]},
                "record_type": "Group",
                "status": "subscribe",
                "created_at": datetime.now(UTC),
            },
        )
        await uow.commit()
    return ids
