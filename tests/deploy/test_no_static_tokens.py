"""No static bearer token in any deployment configuration: every token comes from the identity
provider (client credentials, renewed), so nothing in compose or Kubernetes names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, render

ROOT = Path(__file__).resolve().parents[2]
# A variable or key named like a token (BANGFU_VERIFICATION_REGISTRY_TOKEN, REGISTRY_PII_TOKEN,
# ACCESS_TOKEN …); BANGFU_IDP_ACCESS_TOKEN_TTL, a lifetime, is not one.
_TOKEN_NAME = re.compile(r"\b[A-Z][A-Z0-9_]*_TOKEN\b")
_CONFIG_SUFFIXES = (".yml", ".yaml", ".conf", ".env", ".json", ".properties")


def config_files() -> list[Path]:
    """Every configuration file a deployment reads: compose, .env files, everything under
    deploy/ but the provider's installed packages and lockfile."""
    deploy = [
        path
        for path in (ROOT / "deploy").rglob("*")
        if path.is_file()
        and "node_modules" not in path.parts
        and path.name != "package-lock.json"
        and (path.suffix in _CONFIG_SUFFIXES or path.name.startswith("Dockerfile"))
    ]
    return [ROOT / "docker-compose.yml", *ROOT.glob(".env*"), *deploy]


def token_settings(text: str) -> list[str]:
    return _TOKEN_NAME.findall(text)


def test_the_scan_covers_compose_kubernetes_nats_and_the_provider() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in config_files()}
    for expected in (
        "docker-compose.yml",
        "deploy/k8s/base/config.yaml",
        "deploy/k8s/base/idp.yaml",
        "deploy/k8s/overlays/staging/sandbox.yaml",
        "deploy/nats/production.conf",
        "deploy/idp/Dockerfile",
    ):
        assert expected in scanned


def test_the_scan_finds_a_static_token() -> None:
    removed = (
        "  BANGFU_VERIFICATION_REGISTRY_TOKEN: CHANGE-ME\n"
        "  BANGFU_VERIFICATION_REGISTRY_PII_TOKEN: CHANGE-ME\n"
        "            - name: BANGFU_BENEFITS_REGISTRY_TOKEN\n"
        "      REGISTRY_PII_TOKEN=eyJhbGciOi\n"
    )
    assert token_settings(removed) == [
        "BANGFU_VERIFICATION_REGISTRY_TOKEN",
        "BANGFU_VERIFICATION_REGISTRY_PII_TOKEN",
        "BANGFU_BENEFITS_REGISTRY_TOKEN",
        "REGISTRY_PII_TOKEN",
    ]
    assert token_settings("BANGFU_IDP_ACCESS_TOKEN_TTL: 600\nBANGFU_TOKENS: x") == []


def test_no_configuration_file_names_a_static_token() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): names
        for path in config_files()
        if (names := token_settings(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_rendered_manifest_gives_a_process_a_static_token(overlay: str) -> None:
    """Rendered too: an overlay's patch or a generator could add one the files do not show."""
    names: list[str] = []
    for document in render(K8S / "overlays" / overlay):
        names += [*document.get("data", {}), *document.get("stringData", {})]
        if document["kind"] in ("Deployment", "StatefulSet", "Job"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                names += [item["name"] for item in container.get("env", [])]
    assert names and [name for name in names if token_settings(name)] == []
