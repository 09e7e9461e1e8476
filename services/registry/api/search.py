"""POST /v1/households:search — find a household by a member's identity number or name.

The number travels in the body, never in the URL (which proxies and access logs keep), and
is looked up through its blind index. Answers are list entries, masked as the list's are:
the caller opens the file (audited when read in clear) for more.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Self

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.registry import search
from services.registry.schemas import ID_PATTERN, Page
from shared.auth import Principal, require
from shared.crypto import Keyring
from shared.identity import InvalidIdentityNumber
from shared.problems import invalid_field
from shared.service import UnitOfWorkDep

router = APIRouter(prefix="/v1/households", tags=["households"])
Reader = Annotated[Principal, Depends(require("registry:read"))]


class HouseholdSearch(BaseModel):
    """Exactly one of `identity_number` and `name`."""

    model_config = ConfigDict(extra="forbid")

    identity_number: str | None = Field(
        None, min_length=1, max_length=40, description="a member's 18-character number"
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=50,
        # No control characters: PostgreSQL refuses a NUL in text, which would be a 500.
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="the start of a member's name (a family name finds the family)",
    )
    cursor: str | None = Field(
        None, pattern=ID_PATTERN, description="next_cursor of the previous page (name search)"
    )
    limit: int = Field(50, ge=1, le=200)

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        name = self.name.strip() if self.name else None
        if (self.identity_number is None) == (not name):
            raise ValueError("give exactly one of identity_number and name")
        self.name = name
        return self


@router.post(
    ":search",
    summary="Find households by a member's identity number or name, region-confined",
    description=(
        "`identity_number` is matched through the members' blind index (the number in clear is "
        "neither stored nor logged); `name` matches the start of a member's name. Entries are "
        "masked as `GET /v1/households` masks them; a token with no regions finds nothing."
    ),
)
async def search_households(
    body: HouseholdSearch, request: Request, uow: UnitOfWorkDep, principal: Reader
) -> Page:
    regions = list(principal.regions)
    if not regions:
        return Page(items=[], next_cursor=None)
    if body.identity_number is not None:
        keyring: Keyring = request.app.state.keyring
        try:
            items = await search.by_identity_number(
                uow.session,
                keyring=keyring,
                regions=regions,
                identity_number=body.identity_number,
                today=date.today(),
                limit=body.limit,
            )
        except InvalidIdentityNumber as exc:
            raise invalid_field("identity_number")(exc) from None
        return Page(items=items, next_cursor=None)
    assert body.name is not None
    rows = await search.by_name(
        uow.session, regions=regions, name=body.name, after=body.cursor, limit=body.limit + 1
    )
    page = rows[: body.limit]
    return Page(items=page, next_cursor=page[-1]["id"] if len(rows) > body.limit else None)
