"""Who is signed in: sessions in a table every console replica shares, named by a random cookie.

The cookie carries only the session's id (32 random bytes); the tokens never reach the browser.
The table holds the id's SHA-256 (a copy of the table names no cookie) and the session's state
encrypted with the console's keyring, bound to that hash. A session's row is deleted at
sign-out, so a copied cookie stops working then on every replica, and sessions end `lifetime`
after they began. A restart signs nobody out.

Routes read and change a request's session synchronously (`get`, `new`, `drop`, and in place):
`SessionMiddleware` loads the cookie's session before the route runs and writes back what
changed before the response starts, so the next request, on any replica, sees it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.crypto import DecryptionError, Keyring, decrypt, encrypt
from shared.db import Database, new_metadata

metadata = new_metadata()

sessions_table = sa.Table(
    "sessions",
    metadata,
    # SHA-256 of the cookie's id, hex.
    sa.Column("id_hash", sa.String(64), primary_key=True),
    # time.time() the session ends at (also inside `state`, authenticated): expired rows go.
    sa.Column("expires_at", sa.Float(), nullable=False, index=True),
    # The session's JSON (CSRF token, sign-in in progress, person, tokens), encrypted.
    sa.Column("state", sa.Text(), nullable=False),
)

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


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _state(session: Session) -> str:
    """The session as JSON (id aside: the row is found by its hash)."""
    data = dataclasses.asdict(session)
    del data["id"]
    if session.person is not None:
        data["person"]["scopes"] = sorted(session.person.scopes)
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _session(session_id: str, state: str) -> Session:
    data: dict[str, Any] = json.loads(state)
    person, tokens, sign_in = data["person"], data["tokens"], data["sign_in"]
    return Session(
        id=session_id,
        csrf=data["csrf"],
        expires_at=data["expires_at"],
        sign_in=SignIn(**sign_in) if sign_in else None,
        person=Person(
            sub=person["sub"],
            name=person["name"],
            scopes=frozenset(person["scopes"]),
            regions=tuple(person["regions"]),
        )
        if person
        else None,
        tokens=Tokens(**tokens) if tokens else None,
        flash=[(kind, text) for kind, text in data["flash"]],
    )


@dataclass
class _Request:
    """The sessions one request met: as loaded (to write back only a change), and dropped."""

    loaded: dict[str, str] = field(default_factory=dict)  # id -> state as read
    sessions: dict[str, Session] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)


_request: contextvars.ContextVar[_Request] = contextvars.ContextVar("console_sessions")


class SessionStore:
    """Sessions in the `sessions` table; a request's are read and written by the middleware."""

    def __init__(self, database: Database, keyring: Keyring, *, lifetime_seconds: float):
        self._db = database
        self._keyring = keyring
        self._lifetime = lifetime_seconds

    def new(self) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self._lifetime,
        )
        _request.get().sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The request's session by id, as the middleware loaded it (None if none or ended)."""
        current = _request.get(None)
        if not session_id or current is None or session_id in current.dropped:
            return None
        session = current.sessions.get(session_id)
        if session is None or time.time() >= session.expires_at:
            return None
        return session

    def drop(self, session_id: str) -> None:
        current = _request.get()
        current.sessions.pop(session_id, None)
        current.dropped.add(session_id)

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

    async def load(self, session_id: str) -> Session | None:
        """The stored session, unless it expired or does not decrypt as this id's."""
        async with self._db.engine.connect() as connection:
            return await self._read(connection, session_id)

    async def _read(self, connection: AsyncConnection, session_id: str) -> Session | None:
        id_hash = _id_hash(session_id)
        row = (
            await connection.execute(
                sa.select(sessions_table.c.state, sessions_table.c.expires_at).where(
                    sessions_table.c.id_hash == id_hash
                )
            )
        ).one_or_none()
        if row is None or time.time() >= row.expires_at:
            return None
        try:
            return _session(
                session_id, decrypt(self._keyring, row.state, context=_context(id_hash))
            )
        except DecryptionError:
            return None

    @contextlib.asynccontextmanager
    async def renewing(self, session: Session) -> AsyncIterator[Tokens]:
        """Hold the session's refresh token while it is used: one request at a time, on every
        replica. The provider rotates the refresh token at each use and ends the whole grant
        when a used one comes again, so two requests renewing at once would sign the person
        out. Yields the newest tokens stored (another request may have renewed them while this
        one waited); the tokens the caller leaves in `session.tokens` are stored before the
        hold ends, and the request's own write-back keeps them."""
        assert session.tokens is not None
        id_hash = _id_hash(session.id)
        async with self._db.engine.begin() as connection:
            # A no-op update takes the row's lock (PostgreSQL) or the database's write lock
            # (SQLite) until the commit: another renewal of this session waits here.
            locked = await connection.execute(
                sa.update(sessions_table)
                .where(sessions_table.c.id_hash == id_hash)
                .values(expires_at=sessions_table.c.expires_at)
            )
            stored = await self._read(connection, session.id) if locked.rowcount else None
            if stored is not None and stored.tokens is not None:
                session.tokens = stored.tokens
            yield session.tokens
            if stored is None:
                return  # a session not stored yet (signed in by this request): nobody else has it
            stored.tokens = session.tokens
            sealed = encrypt(self._keyring, _state(stored), context=_context(id_hash))
            await connection.execute(
                sa.update(sessions_table)
                .where(sessions_table.c.id_hash == id_hash)
                .values(state=sealed)
            )
        current = _request.get(None)
        if current is not None and session.id in current.loaded:
            # What this request loaded, as far as the tokens go, is what is stored now.
            loaded = json.loads(current.loaded[session.id])
            loaded["tokens"] = dataclasses.asdict(session.tokens) if session.tokens else None
            current.loaded[session.id] = json.dumps(loaded, sort_keys=True, ensure_ascii=False)

    async def save(self, request: _Request) -> None:
        """Write back the request's new and changed sessions, delete its dropped ones; a new
        session also clears the rows that expired (so the table holds live sessions only)."""
        changed = [
            (session, state)
            for session in request.sessions.values()
            if (state := _state(session)) != request.loaded.get(session.id)
        ]
        if not changed and not request.dropped:
            return
        async with self._db.engine.begin() as connection:
            if request.dropped:
                hashes = [_id_hash(session_id) for session_id in request.dropped]
                await connection.execute(
                    sa.delete(sessions_table).where(sessions_table.c.id_hash.in_(hashes))
                )
            for session, state in changed:
                id_hash = _id_hash(session.id)
                if session.id in request.loaded:
                    state = await self._keeping_renewed_tokens(connection, session, request)
                sealed = encrypt(self._keyring, state, context=_context(id_hash))
                insert = (
                    postgresql.insert(sessions_table)
                    if connection.dialect.name == "postgresql"
                    else sqlite.insert(sessions_table)
                ).values(id_hash=id_hash, expires_at=session.expires_at, state=sealed)
                await connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=[sessions_table.c.id_hash],
                        set_={"expires_at": insert.excluded.expires_at, "state": sealed},
                    )
                )
            if any(session.id not in request.loaded for session, _ in changed):
                await connection.execute(
                    sa.delete(sessions_table).where(sessions_table.c.expires_at <= time.time())
                )

    async def _keeping_renewed_tokens(
        self, connection: AsyncConnection, session: Session, request: _Request
    ) -> str:
        """The state to write back for a session this request loaded: its own, but with the
        tokens another request renewed meanwhile when this one left its tokens as loaded (a
        flash or a new CSRF token must not put back a used refresh token)."""
        loaded_tokens = json.loads(request.loaded[session.id])["tokens"]
        mine = dataclasses.asdict(session.tokens) if session.tokens else None
        if mine == loaded_tokens:
            stored = await self._read(connection, session.id)
            if stored is not None and stored.tokens is not None:
                session.tokens = stored.tokens
        return _state(session)


def _context(id_hash: str) -> str:
    # Bound to the row: a state copied into another row does not decrypt there.
    return f"console.session.{id_hash}"


class SessionMiddleware:
    """Loads the cookie's session before the route and saves what changed before the response
    starts: a redirect the browser follows to another replica finds the session written."""

    def __init__(self, app: ASGIApp, *, cookie: str):
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        store: SessionStore = scope["app"].state.console.sessions
        current = _Request()
        session_id = HTTPConnection(scope).cookies.get(self.cookie)
        if session_id:
            session = await store.load(session_id)
            if session is not None:
                current.sessions[session_id] = session
                current.loaded[session_id] = _state(session)
        token = _request.set(current)
        saved = False

        async def send_after_saving(message: Message) -> None:
            nonlocal saved
            if message["type"] == "http.response.start" and not saved:
                saved = True
                await store.save(current)
            await send(message)

        try:
            await self.app(scope, receive, send_after_saving)
        finally:
            _request.reset(token)
