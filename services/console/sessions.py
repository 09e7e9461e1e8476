"""Who is signed in: sessions held in the console's memory, named by a random cookie.

The cookie carries only the session's id (32 random bytes); the tokens never reach the browser.
A session is dropped at sign-out, so a copied cookie stops working then, and sessions end
`lifetime` after they began. Held in memory: one console process (a restart signs everyone out,
and several replicas would need a shared store — see docs/console.md).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

# Roles as the console shows them, from the review scopes the person's token carries: the
# highest review stage decides (a county reviewer who could also do 初审 is 县解困办).
ROLES = (
    ("review:county", "县解困办"),
    ("review:street", "街道"),
    ("review:community", "社区"),
    ("registry:write", "帮扶责任人"),
)


@dataclass(frozen=True)
class Person:
    """The signed-in person, as their ID token and access token say."""

    sub: str
    name: str
    scopes: frozenset[str]
    regions: tuple[str, ...]

    @property
    def role(self) -> str:
        return next((role for scope, role in ROLES if scope in self.scopes), "只读")


@dataclass
class Tokens:
    access_token: str
    access_expires_at: float  # time.time()
    id_token: str
    refresh_token: str | None


@dataclass
class SignIn:
    """A sign-in in progress: what the callback must find again (RFC 6749 §10.12, RFC 7636)."""

    state: str
    nonce: str
    verifier: str
    return_to: str


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float  # time.time()
    sign_in: SignIn | None = None
    person: Person | None = None
    tokens: Tokens | None = None
    # One message for the next page (after a redirect): ("ok" | "error", text).
    flash: list[tuple[str, str]] = field(default_factory=list)

    def csrf_matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf, given or "")


class SessionStore:
    """Sessions by id, oldest first; expired ones are dropped as they are met."""

    def __init__(self, *, lifetime_seconds: float, max_sessions: int):
        self._lifetime = lifetime_seconds
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self._lifetime,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if time.time() >= session.expires_at:
            self.drop(session_id)
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def signed_in(self, before: Session, person: Person, tokens: Tokens) -> Session:
        """A new session (new id and CSRF token) for the person who just signed in.

        The id changes at sign-in so that an id planted in the browser before (session
        fixation) never becomes a signed-in session.
        """
        self.drop(before.id)
        session = self.new()
        session.person = person
        session.tokens = tokens
        return session
