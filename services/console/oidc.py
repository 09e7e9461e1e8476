"""Signing people in: OpenID Connect authorization code with PKCE (S256) against the provider.

The provider's endpoints come from its discovery document (checked to state the configured
issuer); ID tokens are verified against its published keys with the audience, issuer and the
nonce of the sign-in; access tokens as the services verify them (shared.auth), so the console
sees exactly the scopes and regions the registry will.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from services.console.sessions import Person, SignIn, Tokens
from shared.auth import Principal, TokenVerifier
from shared.tokens import SingleFlight, discover

PII_READ = "pii:read"
# The scopes of the sign-in itself, always asked again when a refresh narrows the token.
OIDC_SCOPES = frozenset({"openid", "offline_access"})


def everyday_scopes(granted: frozenset[str]) -> frozenset[str]:
    """What the pages are read with: all the person was granted but `pii:read`."""
    return granted - {PII_READ}


class SignInFailed(Exception):
    """The sign-in cannot be completed (a state or nonce that does not match, a refused code)."""


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    end_session: str | None


def pkce_pair() -> tuple[str, str]:
    """A code verifier (RFC 7636 §4.1, 64 characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    """The console as a public client of the provider (no secret: PKCE proves the caller)."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        issuer: str,
        audience: str,
        client_id: str,
        redirect_uri: str,
        scopes: str,
        leeway_seconds: float = 30,
    ):
        self._http = http
        self.issuer = issuer
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._scopes = scopes
        self._leeway = leeway_seconds
        self._endpoints: Endpoints | None = None
        self._discover = SingleFlight(self._fetch_endpoints)
        self.access_tokens = TokenVerifier(
            issuer=issuer, audience=audience, discover_keys=True, leeway_seconds=leeway_seconds
        )

    async def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = await self._discover()
        return self._endpoints

    async def _fetch_endpoints(self) -> Endpoints:
        document = await discover(self._http, self.issuer)
        if "S256" not in document.get("code_challenge_methods_supported", []):
            raise SignInFailed(f"{self.issuer} does not offer PKCE with S256")
        return Endpoints(
            authorization=str(document["authorization_endpoint"]),
            token=str(document["token_endpoint"]),
            end_session=document.get("end_session_endpoint"),
        )

    async def start(self, return_to: str) -> tuple[SignIn, str]:
        """A new sign-in and the provider's URL to send the browser to."""
        verifier, challenge = pkce_pair()
        sign_in = SignIn(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=verifier,
            return_to=return_to,
        )
        query = {
            "client_id": self._client_id,
            "response_type": "code",
            "redirect_uri": self._redirect_uri,
            "scope": self._scopes,
            "state": sign_in.state,
            "nonce": sign_in.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if "offline_access" in self._scopes.split():
            query["prompt"] = "consent"  # OpenID Connect Core §11: offline_access needs it
        url = f"{(await self.endpoints()).authorization}?{urlencode(query)}"
        return sign_in, url

    async def finish(
        self, sign_in: SignIn, *, code: str, state: str, iss: str | None
    ) -> tuple[Person, Tokens]:
        """Check the callback against the sign-in, redeem the code, verify what comes back."""
        if not secrets.compare_digest(sign_in.state, state):
            raise SignInFailed("the state does not match the sign-in in progress")
        # RFC 9207: the provider names itself in the callback; another one's code is refused.
        if iss is not None and iss != self.issuer:
            raise SignInFailed(f"the callback came from issuer {iss!r}")
        answer = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._redirect_uri,
                "client_id": self._client_id,
                "code_verifier": sign_in.verifier,
            }
        )
        id_token = str(answer.get("id_token") or "")
        claims = await self.verify_id_token(id_token, nonce=sign_in.nonce)
        tokens = self._tokens(answer, id_token=id_token, refresh_token=None)
        principal = await self._access(tokens.access_token)
        person = Person(
            sub=str(claims["sub"]),
            name=str(claims.get("name") or claims["sub"]),
            scopes=principal.scopes,
            regions=principal.regions,
        )
        if person.sub != principal.client_id:
            raise SignInFailed("the ID token and the access token name different people")
        if PII_READ in principal.scopes:
            # With pii:read the registry answers every read in clear and wants a purpose: the
            # pages are read with a token without it, the clear view asks for one of its own.
            tokens = await self.refresh(tokens, scopes=everyday_scopes(person.scopes))
        return person, tokens

    async def refresh(self, tokens: Tokens, *, scopes: frozenset[str] | None = None) -> Tokens:
        """New tokens from the refresh token (raises SignInFailed when there is none or it is
        refused: the person signs in again). With `scopes`, the access token carries no more
        than those (RFC 6749 §6): the everyday token is one without `pii:read`."""
        if not tokens.refresh_token:
            raise SignInFailed("no refresh token")
        request = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": self._client_id,
        }
        if scopes is not None:
            request["scope"] = " ".join(sorted(scopes | OIDC_SCOPES))
        answer = await self._token_request(request)
        renewed = self._tokens(answer, id_token=tokens.id_token, refresh_token=tokens.refresh_token)
        await self._access(renewed.access_token)
        return renewed

    async def clear_view_token(self, tokens: Tokens) -> Tokens:
        """A token with everything the person was granted, `pii:read` included, for one clear
        read: used for that call and dropped (the session keeps the renewed refresh token)."""
        return await self.refresh(tokens)

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """OpenID Connect Core §3.1.3.7: signature by a published key, iss, aud, exp, nonce."""
        keys = self.access_tokens.keys
        assert keys is not None  # discover_keys=True above
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            if not isinstance(kid, str):
                raise SignInFailed("the ID token names no key")
            published = await keys.key(kid)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                published.key,
                algorithms=[published.algorithm],
                audience=self._client_id,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"the ID token is not valid: {exc}") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInFailed("the ID token's nonce is not the sign-in's")
        return claims

    async def end_session_url(self, tokens: Tokens | None, *, after: str) -> str | None:
        """Where to send the browser to end the provider's session too (RP-initiated logout)."""
        end_session = (await self.endpoints()).end_session
        if end_session is None:
            return None
        query = {"client_id": self._client_id, "post_logout_redirect_uri": after}
        if tokens is not None:
            query["id_token_hint"] = tokens.id_token
        return f"{end_session}?{urlencode(query)}"

    async def _token_request(self, data: dict[str, str]) -> dict[str, Any]:
        endpoint = (await self.endpoints()).token
        response = await self._http.post(endpoint, data=data)
        if response.status_code != 200:
            raise SignInFailed(f"the provider refused the token request: {response.text[:300]}")
        answer: dict[str, Any] = response.json()
        if not answer.get("access_token"):
            raise SignInFailed("the provider's answer has no access token")
        return answer

    def _tokens(
        self, answer: dict[str, Any], *, id_token: str, refresh_token: str | None
    ) -> Tokens:
        return Tokens(
            access_token=str(answer["access_token"]),
            access_expires_at=time.time() + float(answer.get("expires_in", 300)),
            id_token=str(answer.get("id_token") or id_token),
            refresh_token=answer.get("refresh_token") or refresh_token,
        )

    async def _access(self, access_token: str) -> Principal:
        try:
            return await self.access_tokens.verify(access_token)
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"the access token is not valid: {exc}") from exc
