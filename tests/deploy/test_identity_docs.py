"""docs/identity.md and the Keycloak realm it explains stay true to the code: every auth setting
and accepted algorithm is documented, and the realm grants the suite's scopes as the suite
reads them (an audience of `bangfu`, `regions` as a JSON array, pii:read only when asked)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bangfu.cli import ALL_SCOPES
from shared.auth import ALGORITHMS
from shared.regions import normalize_prefix
from shared.settings import SuiteSettings
from tests.deploy.test_compose import idp_variables

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = (ROOT / "docs" / "identity.md").read_text()
REALM_FILE = ROOT / "deploy" / "keycloak" / "bangfu-realm.json"
SUITE_SCOPES = set(ALL_SCOPES.split())
SERVICE_CLIENTS = ("svc-verification", "svc-benefits", "svc-notifications")


def realm() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(REALM_FILE.read_text())
    return loaded


def mapper(client: dict[str, Any], kind: str) -> dict[str, str]:
    (found,) = [m for m in client.get("protocolMappers", []) if m["protocolMapper"] == kind]
    config: dict[str, str] = found["config"]
    return config


def test_every_auth_setting_and_the_provider_variables_are_documented() -> None:
    settings = {
        f"BANGFU_{name.upper()}"
        for name in SuiteSettings.model_fields
        if name.startswith("auth_") and name != "auth_public_key_file"  # the development signer's
    }
    assert {"BANGFU_AUTH_ISSUER", "BANGFU_AUTH_JWKS_CACHE_SECONDS"} <= settings
    documented = set(re.findall(r"`(BANGFU_[A-Z_]+)`", IDENTITY))
    assert sorted(settings - documented) == []
    assert sorted(idp_variables() - documented) == []
    assert "`BANGFU_<SERVICE>_CLIENT_ID`, `BANGFU_<SERVICE>_CLIENT_SECRET`" in IDENTITY


def test_the_documented_algorithms_are_the_accepted_ones() -> None:
    (row,) = [line for line in IDENTITY.splitlines() if line.startswith("| `alg` (header)")]
    listed = re.findall(r"`([A-Z][A-Za-z0-9]+)`", row.split("asymmetric only:")[1].split(".")[0])
    assert listed == ALGORITHMS
    assert not [algorithm for algorithm in ALGORITHMS if algorithm.startswith("HS")]


def test_the_realm_has_a_client_scope_and_a_role_for_each_scope_of_the_suite() -> None:
    document = realm()
    scopes = {scope["name"]: scope for scope in document["clientScopes"]}
    assert set(scopes) == SUITE_SCOPES | {"bangfu"}
    for name in SUITE_SCOPES:
        assert scopes[name]["attributes"]["include.in.token.scope"] == "true"
    assert {role["name"] for role in document["roles"]["realm"]} == SUITE_SCOPES
    mappings = {m["clientScope"]: m["roles"] for m in document["scopeMappings"]}
    assert mappings == {name: [name] for name in SUITE_SCOPES}
    audience = mapper(scopes["bangfu"], "oidc-audience-mapper")
    assert audience["included.custom.audience"] == "bangfu"
    assert audience["access.token.claim"] == "true"


def test_every_realm_client_gets_the_audience_and_regions_as_a_json_array() -> None:
    document = realm()
    clients = {client["clientId"]: client for client in document["clients"]}
    assert set(SERVICE_CLIENTS) <= set(clients) and "bangfu-console" in clients
    roles = {user["username"]: set(user["realmRoles"]) for user in document["users"]}
    for client_id, client in clients.items():
        assert "bangfu" in client["defaultClientScopes"], client_id
        granted = set(client["defaultClientScopes"]) | set(client["optionalClientScopes"])
        assert granted - {"bangfu"} <= SUITE_SCOPES, client_id
        if client["publicClient"]:  # people: regions from their (admin-set) attribute
            assert client["attributes"]["pkce.code.challenge.method"] == "S256"
            regions = mapper(client, "oidc-usermodel-attribute-mapper")
            assert (regions["user.attribute"], regions["multivalued"]) == ("regions", "true")
            assert regions["claim.name"] == "regions" and regions["access.token.claim"] == "true"
            continue
        assert client["serviceAccountsEnabled"] is True and client["standardFlowEnabled"] is False
        regions = mapper(client, "oidc-hardcoded-claim-mapper")
        assert (regions["claim.name"], regions["jsonType.label"]) == ("regions", "JSON")
        assert regions["access.token.claim"] == "true"
        prefixes = json.loads(regions["claim.value"])
        assert prefixes and [normalize_prefix(prefix) for prefix in prefixes] == prefixes
        # The service account holds the role of each scope the client may get.
        assert granted - {"bangfu"} <= roles[f"service-account-{client_id}"], client_id


def test_a_service_gets_pii_read_only_in_the_token_it_asks_it_for() -> None:
    """The services ask for `registry:read` and for `registry:read pii:read`: with pii:read a
    default scope, both tokens would carry it."""
    clients = {client["clientId"]: client for client in realm()["clients"]}
    for client_id in SERVICE_CLIENTS:
        client = clients[client_id]
        assert "registry:read" in client["defaultClientScopes"]
        assert "pii:read" not in client["defaultClientScopes"]
        assert client["optionalClientScopes"] == ["pii:read"]


def test_no_realm_secret_is_a_real_one() -> None:
    for client in realm()["clients"]:
        assert client.get("secret", "CHANGE-ME") == "CHANGE-ME"


def test_the_realm_has_the_demo_people_with_their_scopes_as_roles() -> None:
    """The realm's people are the provider's demo people (deploy/idp/clients.json), each with a
    realm role per scope, so the console shows the same roles under either provider."""
    people = json.loads((ROOT / "deploy" / "idp" / "clients.json").read_text())["people"]
    users = {
        user["username"]: user
        for user in realm()["users"]
        if not user.get("serviceAccountClientId")
    }
    assert set(users) == {person["username"] for person in people}
    for person in people:
        user = users[person["username"]]
        assert sorted(user["realmRoles"]) == sorted(person["scopes"]), person["username"]
        assert user["attributes"]["regions"] == person["regions"]
        assert "UPDATE_PASSWORD" in user["requiredActions"]  # no demo password in the realm


def test_the_console_client_has_a_post_logout_redirect_uri_of_its_own_site() -> None:
    (console,) = [c for c in realm()["clients"] if c["clientId"] == "bangfu-console"]
    (callback,) = console["redirectUris"]
    site = callback.removesuffix("/auth/callback")
    assert console["attributes"]["post.logout.redirect.uris"].split("##") == [f"{site}/"]
