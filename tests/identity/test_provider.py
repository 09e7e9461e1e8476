"""The provider itself, over HTTP: discovery, JWKS, client credentials, code + PKCE, rotation.

Every token is verified with PyJWT against the keys the provider publishes, as a service would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest

from bangfu.idp import IdpUnavailable, ensure_installed, read_registrations
from shared.regions import FILING_PROVINCES
from tests.identity.conftest import RunningIdp

CONSOLE = "bangfu-console"
CALLBACK = "http://127.0.0.1:8105/auth/callback"


def verified(idp: RunningIdp, token: str) -> dict[str, Any]:
    """The token's claims once its signature, issuer, audience and expiry check out."""
    key = jwt.PyJWKClient(f"{idp.issuer}/jwks", cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience="bangfu", issuer=idp.issuer
    )
    return claims


def token_response(idp: RunningIdp, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(
        idp.token_endpoint, data={"grant_type": "client_credentials", **data}, **kwargs
    )


class TestDiscovery:
    def test_discovery_names_the_issuer_and_its_endpoints(self, idp: RunningIdp) -> None:
        config = httpx.get(f"{idp.issuer}/.well-known/openid-configuration").json()
        assert config["issuer"] == idp.issuer
        assert config["jwks_uri"] == f"{idp.issuer}/jwks"
        assert config["token_endpoint"] == f"{idp.issuer}/token"
        assert {"client_credentials", "authorization_code"} <= set(config["grant_types_supported"])
        assert config["code_challenge_methods_supported"] == ["S256"]
        assert config["response_types_supported"] == ["code"]

    def test_behind_a_proxy_the_endpoints_take_its_forwarded_scheme_and_host(
        self,
        idp: RunningIdp,
        idp_factory: Callable[..., RunningIdp],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """BANGFU_IDP_PROXY=true (Kubernetes' Ingress ends TLS): discovery names the https
        endpoints browsers and pods reach; without it a client's X-Forwarded-* change nothing."""
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "idp.county.test"}
        discovery = "/.well-known/openid-configuration"
        direct = httpx.get(f"{idp.issuer}{discovery}", headers=forwarded).json()
        assert direct["token_endpoint"] == f"{idp.issuer}/token"

        monkeypatch.setenv("BANGFU_IDP_PROXY", "true")
        proxied = idp_factory()
        config = httpx.get(f"{proxied.issuer}{discovery}", headers=forwarded).json()

        assert config["token_endpoint"] == "https://idp.county.test/token"
        assert config["authorization_endpoint"] == "https://idp.county.test/auth"
        assert config["jwks_uri"] == "https://idp.county.test/jwks"

    def test_the_jwks_publishes_public_es256_keys_only(self, idp: RunningIdp) -> None:
        (key,) = idp.jwks()["keys"]
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
        assert key["use"] == "sig" and key["kid"]
        assert "d" not in key  # the private part stays in the keys file
        assert idp.keys_file.stat().st_mode & 0o077 == 0


class TestClientCredentials:
    def test_a_department_token_carries_the_registered_scopes_and_regions(
        self, idp: RunningIdp
    ) -> None:
        token = idp.client_token("dept-4113")
        claims = verified(idp, token)
        assert claims["iss"] == idp.issuer
        assert claims["aud"] == "bangfu"
        assert claims["sub"] == claims["client_id"] == "dept-4113"
        assert claims["scope"] == "registry:read registry:write"
        assert claims["regions"] == ["4113"]
        assert claims["exp"] - claims["iat"] == 600
        assert claims["jti"]
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256"
        assert header["kid"] in idp.kids()

    def test_the_secret_may_come_in_the_body_as_well(self, idp: RunningIdp) -> None:
        response = token_response(
            idp, {"client_id": "dept-4101", "client_secret": "dev-only-dept-4101-secret"}
        )
        assert response.status_code == 200, response.text
        assert verified(idp, response.json()["access_token"])["regions"] == ["4101"]

    def test_a_service_client_reads_every_province_with_pii(self, idp: RunningIdp) -> None:
        claims = verified(idp, idp.client_token("svc-notifications"))
        assert claims["scope"] == "registry:read pii:read"
        assert claims["regions"] == sorted(FILING_PROVINCES)

    def test_a_scope_asked_for_narrows_the_token(self, idp: RunningIdp) -> None:
        response = token_response(idp, {"scope": "registry:read"}, auth=self._dept(idp))
        assert response.json()["scope"] == "registry:read"
        assert verified(idp, response.json()["access_token"])["scope"] == "registry:read"

    def test_a_scope_the_client_was_not_registered_with_is_dropped(self, idp: RunningIdp) -> None:
        response = token_response(
            idp, {"scope": "registry:read pii:read review:county"}, auth=self._dept(idp)
        )
        assert response.status_code == 200, response.text
        assert verified(idp, response.json()["access_token"])["scope"] == "registry:read"

    @pytest.mark.parametrize("scope", ["nonsense:scope", "registry:admin", "pii:read"])
    def test_an_unknown_or_foreign_scope_alone_gives_no_scope_never_all(
        self, idp: RunningIdp, scope: str
    ) -> None:
        response = token_response(idp, {"scope": scope}, auth=self._dept(idp))
        assert response.status_code == 200, response.text
        assert "scope" not in response.json()
        claims = verified(idp, response.json()["access_token"])
        assert "scope" not in claims
        assert claims["regions"] == ["4113"]

    def test_regions_cannot_be_asked_for(self, idp: RunningIdp) -> None:
        response = token_response(
            idp, {"regions": "41", "resource": "urn:bangfu:api"}, auth=self._dept(idp)
        )
        assert verified(idp, response.json()["access_token"])["regions"] == ["4113"]

    def test_another_resource_is_refused(self, idp: RunningIdp) -> None:
        response = token_response(
            idp, {"resource": "https://elsewhere.example/"}, auth=self._dept(idp)
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_target"

    @pytest.mark.parametrize(
        ("client_id", "secret"),
        [("dept-4113", "dev-only-dept-4101-secret"), ("dept-9999", "dev-only-dept-4113-secret")],
    )
    def test_a_wrong_secret_or_unknown_client_is_refused(
        self, idp: RunningIdp, client_id: str, secret: str
    ) -> None:
        response = token_response(idp, {}, auth=(client_id, secret))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert "access_token" not in response.json()
        assert secret not in idp.log.read_text()

    def test_the_log_says_why_a_token_was_refused(self, idp: RunningIdp) -> None:
        token_response(idp, {}, auth=("dept-4113", "not-the-secret-of-dept-4113"))
        assert "token refused: client=dept-4113 invalid_client: invalid secret provided" in (
            idp.log.read_text()
        )

    def test_the_console_cannot_use_client_credentials(self, idp: RunningIdp) -> None:
        response = token_response(idp, {"client_id": CONSOLE})
        assert response.status_code in (400, 401)
        assert "access_token" not in response.json()

    @staticmethod
    def _dept(idp: RunningIdp) -> tuple[str, str]:
        secret = idp.registrations.clients["dept-4113"].secret
        assert secret
        return ("dept-4113", secret)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _follow_to_callback(client: httpx.Client, response: httpx.Response) -> dict[str, list[str]]:
    """Follow the provider's redirects until it sends the browser to the console's callback."""
    while response.status_code in (302, 303):
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(CALLBACK):
            return parse_qs(urlsplit(location).query)
        response = client.get(location)
    raise AssertionError(f"no redirect to the callback: {response.status_code} {response.text}")


def _sign_in(
    browser: httpx.Client,
    idp: RunningIdp,
    username: str,
    password: str,
    scope: str,
    **extra: str,
) -> tuple[httpx.Response, str]:
    """Start the console's login and fill its form: the answer to the form, the PKCE verifier."""
    verifier, challenge = _pkce()
    start = browser.get(
        f"{idp.issuer}/auth",
        params={
            "client_id": CONSOLE,
            "response_type": "code",
            "redirect_uri": CALLBACK,
            "scope": scope,
            "state": "s-123",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        },
    )
    assert start.status_code == 303, start.text
    form = browser.get(urljoin(f"{idp.issuer}/", start.headers["location"]))
    assert form.status_code == 200
    match = re.search(r'action="([^"]+)"', form.text)
    assert match, form.text
    answer = browser.post(
        urljoin(f"{idp.issuer}/", match.group(1)), data={"username": username, "password": password}
    )
    return answer, verifier


class TestAuthorizationCode:
    def test_a_person_signs_in_and_gets_their_scopes_and_regions(self, idp: RunningIdp) -> None:
        person = idp.registrations.people["shequ-411302"]
        assert person.secret
        # The console asks for more than a community worker has: the token gets only theirs.
        with httpx.Client(follow_redirects=False) as browser:
            answer, verifier = _sign_in(
                browser,
                idp,
                "shequ-411302",
                person.secret,
                "openid registry:read registry:write review:community review:county pii:read",
            )
            callback = _follow_to_callback(browser, answer)
            assert callback["state"] == ["s-123"]
            assert callback["iss"] == [idp.issuer]
            response = browser.post(
                idp.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": callback["code"][0],
                    "redirect_uri": CALLBACK,
                    "client_id": CONSOLE,
                    "code_verifier": verifier,
                },
            )
        assert response.status_code == 200, response.text
        claims = verified(idp, response.json()["access_token"])
        assert claims["sub"] == "shequ-411302"
        assert claims["client_id"] == CONSOLE
        assert claims["scope"] == "registry:read registry:write review:community"
        assert claims["regions"] == ["411302"]
        id_token = jwt.decode(
            response.json()["id_token"],
            jwt.PyJWKClient(f"{idp.issuer}/jwks").get_signing_key_from_jwt(
                response.json()["id_token"]
            ),
            algorithms=["ES256"],
            audience=CONSOLE,
            issuer=idp.issuer,
        )
        assert id_token["sub"] == "shequ-411302"

    def test_a_refresh_token_renews_the_persons_token(self, idp: RunningIdp) -> None:
        person = idp.registrations.people["jiedao-411302"]
        assert person.secret
        with httpx.Client(follow_redirects=False) as browser:
            # offline_access needs prompt=consent (OpenID Connect Core §11): no page, answered.
            answer, verifier = _sign_in(
                browser,
                idp,
                "jiedao-411302",
                person.secret,
                "openid offline_access registry:read review:street",
                prompt="consent",
            )
            callback = _follow_to_callback(browser, answer)
            first = browser.post(
                idp.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": callback["code"][0],
                    "redirect_uri": CALLBACK,
                    "client_id": CONSOLE,
                    "code_verifier": verifier,
                },
            ).json()
            renewed = browser.post(
                idp.token_endpoint,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": first["refresh_token"],
                    "client_id": CONSOLE,
                },
            )
        assert renewed.status_code == 200, renewed.text
        claims = verified(idp, renewed.json()["access_token"])
        assert claims["sub"] == "jiedao-411302"
        assert claims["scope"] == "registry:read review:street"
        assert claims["regions"] == ["411302"]
        assert renewed.json()["access_token"] != first["access_token"]

    def test_the_code_is_refused_without_the_right_verifier(self, idp: RunningIdp) -> None:
        person = idp.registrations.people["jiekunban-411302"]
        assert person.secret
        with httpx.Client(follow_redirects=False) as browser:
            answer, _ = _sign_in(browser, idp, "jiekunban-411302", person.secret, "registry:read")
            callback = _follow_to_callback(browser, answer)
            response = browser.post(
                idp.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": callback["code"][0],
                    "redirect_uri": CALLBACK,
                    "client_id": CONSOLE,
                    "code_verifier": secrets.token_urlsafe(48),
                },
            )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"

    def test_a_wrong_password_shows_the_form_again(self, idp: RunningIdp) -> None:
        with httpx.Client(follow_redirects=False) as browser:
            answer, _ = _sign_in(browser, idp, "shequ-411302", "dev-only-jiedao", "registry:read")
            assert answer.status_code == 401
            assert "Wrong username or password" in answer.text
            assert "location" not in answer.headers

    def test_pkce_is_required(self, idp: RunningIdp) -> None:
        response = httpx.get(
            f"{idp.issuer}/auth",
            params={
                "client_id": CONSOLE,
                "response_type": "code",
                "redirect_uri": CALLBACK,
                "scope": "registry:read",
            },
        )
        assert response.status_code == 303
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["error"] == ["invalid_request"]
        assert "code" not in query


class TestKeyRotation:
    def test_rotate_signs_with_a_new_kid_and_keeps_the_old_one_until_retired(
        self, idp_factory: Callable[..., RunningIdp]
    ) -> None:
        idp = idp_factory()
        old_token = idp.client_token("dept-4113")
        (old_kid,) = idp.kids()

        idp.rotate()
        idp.reload()  # SIGHUP: no restart
        new_token = idp.client_token("dept-4113")
        new_kid = jwt.get_unverified_header(new_token)["kid"]
        assert new_kid != old_kid
        assert idp.kids() == [new_kid, old_kid]
        assert verified(idp, old_token)["sub"] == "dept-4113"  # still valid until it expires
        assert verified(idp, new_token)["sub"] == "dept-4113"

        idp.retire()
        idp.restart()  # a restart reads the keys file as well
        assert idp.kids() == [new_kid]
        assert jwt.get_unverified_header(idp.client_token("dept-4113"))["kid"] == new_kid
        with pytest.raises(jwt.PyJWKClientError):
            verified(idp, old_token)

    def test_a_broken_keys_file_on_reload_keeps_the_running_keys(
        self, idp_factory: Callable[..., RunningIdp]
    ) -> None:
        idp = idp_factory()
        kids = idp.kids()
        idp.keys_file.write_text('{"keys": []}')
        idp.reload(expect="reload failed")
        assert idp.kids() == kids
        assert verified(idp, idp.client_token("dept-4113"))["regions"] == ["4113"]


def test_the_clients_file_is_read_again_on_sighup(
    idp_factory: Callable[..., RunningIdp],
) -> None:
    idp = idp_factory()
    document = json.loads(idp.clients_file.read_text())
    document["clients"] = [
        {
            "client_id": "dept-4201",
            "client_secret": "dev-only-dept-4201-secret",
            "scopes": ["registry:read"],
            "regions": ["4201"],
        }
    ]
    idp.clients_file.write_text(json.dumps(document))
    idp.reload()
    claims = verified(idp, idp.token("dept-4201", "dev-only-dept-4201-secret"))
    assert (claims["scope"], claims["regions"]) == ("registry:read", ["4201"])
    refused = token_response(idp, {}, auth=("dept-4113", "dev-only-dept-4113-secret"))
    assert refused.status_code == 401  # gone from the file, gone from the provider


def test_the_demo_file_has_a_person_for_every_console_role() -> None:
    people = read_registrations().people.values()
    assert {person.role for person in people} == {"社区", "街道", "县解困办", "帮扶责任人"}
    scopes = {person.role: set(person.scopes) for person in people}
    assert "review:community" in scopes["社区"] and "review:street" not in scopes["社区"]
    assert "review:street" in scopes["街道"] and "review:county" not in scopes["街道"]
    assert "review:county" in scopes["县解困办"]
    # Helpers file and change households and open the 明白卡 (benefits:read); they review nothing.
    assert scopes["帮扶责任人"] == {"registry:read", "registry:write", "benefits:read"}


@pytest.mark.parametrize("missing", ["node", "npm"])
def test_without_node_or_npm_the_error_names_what_to_install(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with only the other tool on it.
    present = "npm" if missing == "node" else "node"
    found = shutil.which(present)
    if found is None:
        pytest.skip(f"{present} is not installed")
    (tmp_path / present).symlink_to(found)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(IdpUnavailable, match=f"`{missing}` is not on PATH.*Node.js 20"):
        ensure_installed()
