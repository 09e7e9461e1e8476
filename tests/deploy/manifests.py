"""Rendering the Kubernetes overlays and walking their pod specs (shared by the k8s tests)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir())
WORKLOADS = ("Deployment", "StatefulSet", "Job")
HEALTHZ_ONLY = ("StatefulSet/nats", "Deployment/sandbox")
# The identity provider is ready and alive when it answers its discovery document.
DISCOVERY = "/.well-known/openid-configuration"
PROBE_PATHS = {"Deployment/idp": DISCOVERY}


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` (kustomize built into kubectl; offline, nothing is applied)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def pod_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        if document["kind"] in WORKLOADS:
            yield (
                f"{document['kind']}/{document['metadata']['name']}",
                document["spec"]["template"]["spec"],
            )


def security_findings(documents: list[dict[str, Any]]) -> list[str]:
    """Every way a workload falls short of the house's pod rules; empty when none does."""
    findings = []
    for name, spec in pod_specs(documents):
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            findings.append(f"{name}: runAsNonRoot is not true")
        if pod_security.get("runAsUser") == 0:
            findings.append(f"{name}: runAsUser 0")
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                findings.append(f"{where}: root filesystem is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                findings.append(f"{where}: privilege escalation allowed")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                findings.append(f"{where}: capabilities not dropped")
            if security.get("runAsUser") == 0 or security.get("runAsNonRoot") is False:
                findings.append(f"{where}: runs as root")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        findings.append(f"{where}: no {resource} {kind[:-1]}")
            if name.startswith("Job/"):
                continue
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                got = container.get(probe, {}).get("httpGet", {}).get("path", "")
                # NATS and the sandbox have no readiness of their own: /healthz for both.
                wanted = PROBE_PATHS.get(name, "/healthz" if name in HEALTHZ_ONLY else path)
                if not got.startswith(wanted):
                    findings.append(f"{where}: {probe} is not on {wanted}")
    return findings
