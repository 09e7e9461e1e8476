"""核对授权书 — the signed authorisation to query departments about a person.

No valid consent for a member and a department means that department is not called for that
member: the report then carries a `no_consent` item (a partly served request is still useful);
a request that could not be served for anyone is refused outright.

A consent is recorded for a region and counts for the households of that region only; a
revocation withdraws the person's authorisation, not one paper (see `after_revocations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
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
    recorded_at: datetime | None = None  # when it was entered
    revoked_at: datetime | None = None  # when its revocation was entered

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


def after_revocations(consents: Sequence[Consent]) -> list[Consent]:
    """A person's consents as their revocations leave them, wherever each was recorded.

    From its day on, a revocation ends every consent signed before that day, and one signed
    that same day but entered before the revocation was: the person withdrew their
    authorisation, not one paper. A consent signed after it counts again.
    """
    revocations = [c for c in consents if c.revoked_on is not None]
    return [_as_revoked_by(consent, revocations) for consent in consents]


def _as_revoked_by(consent: Consent, revocations: Sequence[Consent]) -> Consent:
    days = [r.revoked_on for r in revocations if r.revoked_on and _ends(r, consent, r.revoked_on)]
    return replace(consent, revoked_on=min(days)) if days else consent


def _ends(revocation: Consent, consent: Consent, day: date) -> bool:
    if consent.signed_on != day:
        return consent.signed_on < day
    # Signed on the revocation's day: whichever was entered first (unknown times: it ends).
    if consent.recorded_at is None or revocation.revoked_at is None:
        return True
    return consent.recorded_at < revocation.revoked_at
