"""A client-credentials token from an identity provider, for `bangfu token --client`.

The token endpoint is the one the issuer's OpenID discovery names (as the services find it,
`shared.tokens.discover`, which also checks that the provider states that issuer). Every way of
not getting the token asked for ends in `TokenNotIssued`, with a message for a person.
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from shared.tokens import discover


class TokenNotIssued(Exception):
    """The provider cannot be reached, refused the client, or granted less than was asked."""


async def fetch_client_token(
    issuer: str, client_id: str, secret: str, scope: str | None = None, *, timeout: float = 10
) -> str:
    """The access token the provider issues to this client (client_secret_basic). Without
    `scope` the provider grants its default (every scope of the client, for the shipped one);
    with it, the token must carry every scope asked for."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            configuration = await discover(http, issuer)
            endpoint = configuration.get("token_endpoint")
            if not isinstance(endpoint, str):
                raise TokenNotIssued(f"the discovery document of {issuer} names no token_endpoint")
            data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
            response = await http.post(endpoint, data=data, auth=(client_id, secret))
        except httpx.HTTPStatusError as exc:
            raise TokenNotIssued(
                f"{issuer} answered {exc.response.status_code} for its OpenID discovery document: "
                "is this the identity provider's issuer URL?"
            ) from exc
        except httpx.HTTPError as exc:
            raise TokenNotIssued(
                f"the identity provider at {issuer} does not answer ({type(exc).__name__}: {exc})"
            ) from exc
        except ValueError as exc:  # no JSON, or another issuer stated
            raise TokenNotIssued(
                f"{exc}: give the issuer its tokens carry (--issuer), as the services have it"
            ) from exc
    body = _json(response)
    if response.status_code != 200:
        error = body.get("error", f"HTTP {response.status_code}")
        described = f" ({body['error_description']})" if body.get("error_description") else ""
        hint = " — a wrong secret or an unknown client" if error == "invalid_client" else ""
        raise TokenNotIssued(
            f"the identity provider refused client {client_id}: {error}{described}{hint}"
        )
    token = body.get("access_token")
    if not isinstance(token, str):
        raise TokenNotIssued("the identity provider answered without an access_token")
    if scope:
        granted = set(_granted_scopes(token, body))
        missing = [word for word in scope.split() if word not in granted]
        if missing:
            raise TokenNotIssued(
                f"client {client_id} is not allowed {' '.join(missing)}: the token would carry "
                f"only '{' '.join(sorted(granted))}'"
            )
    return token


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _granted_scopes(token: str, body: dict[str, Any]) -> list[str]:
    """The scopes the services will read: the JWT's `scope` claim (absent: none), else, for a
    token that is no JWT, what the token response says."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        return str(body.get("scope", "")).split()
    scope = claims.get("scope", "")
    return scope.split() if isinstance(scope, str) else []
