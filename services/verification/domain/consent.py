"""核对授权书 — the signed authorisation to query departments about a person.

No valid consent for a member and a department means that department is not called for that
member: the report then carries a `no_consent` item (a partly served request is still useful);
a request that could not be served for anyone is refused outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from services.verification.domain.departments import Department


class ConsentState(StrEnum):
    VALID = "valid"
    MISSING = "missing"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_COVERED = "not_covered"  # signed, but not for this department


@dataclass(frozen=True)
class Consent:
    """One person's signed consent: who signed, when, which departments, until when."""

    id: str
    person_index: str  # blind index of the person's identity number
    signed_by: str
    signed_on: date
    expires_on: date
    departments: frozenset[Department]
    document_ref: str
    revoked_on: date | None = None

    def state_for(self, department: Department, *, on: date) -> ConsentState:
        """Whether this consent lets `department` be queried on day `on`."""
        if self.revoked_on is not None and self.revoked_on <= on:
            return ConsentState.REVOKED
        if on < self.signed_on:
            return ConsentState.NOT_YET_VALID
        if on > self.expires_on:
            return ConsentState.EXPIRED
        if department not in self.departments:
            return ConsentState.NOT_COVERED
        return ConsentState.VALID


def consent_state(
    consents: list[Consent], department: Department, *, on: date
) -> tuple[ConsentState, Consent | None]:
    """The best state among a person's consents for one department, and the consent used."""
    if not consents:
        return ConsentState.MISSING, None
    order = list(ConsentState)
    ranked = sorted(
        ((c.state_for(department, on=on), c) for c in consents),
        key=lambda pair: order.index(pair[0]),
    )
    state, consent = ranked[0]
    return state, consent if state is ConsentState.VALID else None
