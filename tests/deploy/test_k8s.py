"""deploy/k8s: every overlay renders, passes the Kubernetes schemas strictly, and is locked down."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import ServiceSettings, secret_fields
from tests.deploy.manifests import (
    DISCOVERY,
    K8S,
    OVERLAYS,
    pod_specs,
    render,
    security_findings,
)
from tests.deploy.test_compose import CALLERS, idp_variables, settings_for, variables

SERVICES = ("registry", "verification", "benefits", "notifications")
# Deployments that run something else than the suite's image.
OTHER_PROGRAMS = {"idp"}


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / request.param)


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def validate(documents: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "kubernetes-validate"),
            "--strict",
            "--quiet",
            str(rendered),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_both_overlays_exist() -> None:
    assert OVERLAYS == ["production", "staging"]


def test_overlay_passes_kubernetes_validate_strict(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = validate(manifests, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    broken = copy.deepcopy(manifests)
    deployment = next(d for d in broken if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert validate(broken, tmp_path).returncode == 1


def test_every_container_is_locked_down(manifests: list[dict[str, Any]]) -> None:
    assert security_findings(manifests) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("securityContext", "runAsNonRoot"), False, "runAsNonRoot is not true"),
        (("containers", 0, "securityContext", "readOnlyRootFilesystem"), False, "writable"),
        (("containers", 0, "resources", "limits"), {}, "no cpu limit"),
        (("containers", 0, "livenessProbe", "httpGet", "path"), "/", "livenessProbe"),
    ],
)
def test_the_walker_catches_a_weakened_workload(
    manifests: list[dict[str, Any]], path: tuple[Any, ...], value: Any, expected: str
) -> None:
    weakened = copy.deepcopy(manifests)
    spec = next(s for name, s in pod_specs(weakened) if name == "Deployment/registry")
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    findings = security_findings(weakened)
    assert findings and all("Deployment/registry" in f for f in findings)
    assert any(expected in f for f in findings)


def test_each_service_has_deployment_service_autoscaler_and_budget(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = by_kind(manifests, "Deployment")
    assert sorted(set(deployments) - {"sandbox", "console", *OTHER_PROGRAMS}) == sorted(SERVICES)
    autoscalers = by_kind(manifests, "HorizontalPodAutoscaler")
    budgets = by_kind(manifests, "PodDisruptionBudget")
    for service in SERVICES:
        assert autoscalers[service]["spec"]["scaleTargetRef"]["name"] == service
        assert budgets[service]["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": service
        }
        assert service in by_kind(manifests, "Service")
        (container,) = deployments[service]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [f"services.{service}"]


def test_autoscaled_deployments_leave_replicas_to_their_autoscaler(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = by_kind(manifests, "Deployment")
    for autoscaler in by_kind(manifests, "HorizontalPodAutoscaler").values():
        target = deployments[autoscaler["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"]
        assert autoscaler["spec"]["minReplicas"] >= 1


def test_the_migration_job_runs_bangfu_migrate(manifests: list[dict[str, Any]]) -> None:
    job = by_kind(manifests, "Job")["bangfu-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["bangfu", "migrate"]
    # No service runs migrations itself: no init container anywhere migrates.
    for name, spec in pod_specs(manifests):
        for init in spec.get("initContainers", []):
            assert "migrate" not in init.get("args", []), name


def test_nats_is_a_three_node_jetstream_cluster(manifests: list[dict[str, Any]]) -> None:
    nats = by_kind(manifests, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert by_kind(manifests, "PodDisruptionBudget")["nats"]["spec"]["maxUnavailable"] == 1
    (config,) = [
        d
        for d in manifests
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nats")
    ]
    text = config["data"]["nats.conf"]
    assert "jetstream {" in text
    assert all(f"nats-{i}.nats-headless:6222" in text for i in range(3))
    assert 'include "auth/auth.conf"' in text and "tls {" in text
    settings = by_kind(manifests, "ConfigMap")["bangfu-config"]["data"]
    assert settings["BANGFU_STREAM_REPLICAS"] == "3"


def test_only_database_clients_reach_postgresql(manifests: list[dict[str, Any]]) -> None:
    policy = by_kind(manifests, "NetworkPolicy")["postgresql-from-services-only"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "postgresql"}
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    label = source["podSelector"]["matchLabels"]
    clients = sorted(
        name
        for name, _ in pod_specs(manifests)
        for document in manifests
        if f"{document['kind']}/{document['metadata']['name']}" == name
        and label.items() <= document["spec"]["template"]["metadata"]["labels"].items()
    )
    assert clients == sorted(
        [
            "Job/bangfu-migrate",
            "Deployment/console",  # its sessions table
            *(f"Deployment/{service}" for service in SERVICES),
        ]
    )


def test_every_variable_given_to_a_process_is_one_of_its_settings(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_maps = by_kind(manifests, "ConfigMap")
    secrets = by_kind(manifests, "Secret")
    for document in manifests:
        if document["kind"] not in ("Deployment", "Job"):
            continue
        (container,) = document["spec"]["template"]["spec"]["containers"]
        if document["metadata"]["name"] in OTHER_PROGRAMS:
            continue  # the provider's variables: see the provider's own test
        environment: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                environment |= config_maps[source["configMapRef"]["name"]]["data"]
            else:
                environment |= secrets[source["secretRef"]["name"]]["stringData"]
        environment |= {item["name"]: item["value"] for item in container.get("env", [])}
        classes = settings_for(container["args"])
        known = set().union(*(variables(cls) for cls in classes))
        assert sorted(set(environment) - known) == [], document["metadata"]["name"]
        for key in [key for key in os.environ if key.startswith("BANGFU_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, value.replace("CHANGE-ME", "x"))
        # The values parse; in production that includes the JWKS URL and the service's keys
        # (but not for the migration job, which reads only the database settings).
        migrating = "migrate" in container["args"]
        for cls in classes:
            if migrating and issubclass(cls, ServiceSettings):
                cls.for_migration()
            else:
                cls()


def test_every_secret_with_a_development_default_is_set_from_a_secret(
    manifests: list[dict[str, Any]],
) -> None:
    """A public development default must never reach production unnoticed: each such setting
    is in a Secret (as a placeholder that production refuses until ops replace it)."""
    secrets = by_kind(manifests, "Secret")
    for document in manifests:
        if document["kind"] != "Deployment" or document["metadata"]["name"] in OTHER_PROGRAMS:
            continue
        (container,) = document["spec"]["template"]["spec"]["containers"]
        from_secrets: set[str] = set()
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                from_secrets |= set(secrets[source["secretRef"]["name"]]["stringData"])
        for cls in settings_for(container["args"]):
            prefix = cls.model_config.get("env_prefix", "")
            for field in secret_fields(cls):
                if cls.model_fields[field].get_default(call_default_factory=True) is None:
                    continue
                assert f"{prefix}{field.upper()}" in from_secrets, document["metadata"]["name"]


def test_each_service_keeps_its_audit_checkpoint_on_a_volume_that_outlives_the_pod(
    manifests: list[dict[str, Any]],
) -> None:
    """An emptyDir checkpoint dies with its pod, and with it the proof of the newest records."""
    claims = by_kind(manifests, "PersistentVolumeClaim")
    for service in SERVICES:
        deployment = by_kind(manifests, "Deployment")[service]
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        environment = {item["name"]: item.get("value") for item in container.get("env", [])}
        path = environment[f"BANGFU_{service.upper()}_AUDIT_CHECKPOINT_FILE"]
        (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]
        assert "ReadWriteMany" in claim["spec"]["accessModes"]  # every replica writes it
        assert path.endswith(f"/{service}.json")


def test_each_service_listens_on_the_port_its_probes_and_service_use(
    manifests: list[dict[str, Any]],
) -> None:
    services = by_kind(manifests, "Service")
    for name, deployment in by_kind(manifests, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item["value"] for item in container["env"]}
        (port,) = container["ports"]
        assert int(env[f"BANGFU_{name.upper()}_PORT"]) == port["containerPort"]
        assert env[f"BANGFU_{name.upper()}_HOST"] == "0.0.0.0"
        assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
        (exposed,) = services[name]["spec"]["ports"]
        assert exposed["targetPort"] == port["name"] and exposed["port"] == port["containerPort"]
        if name not in ("sandbox", "idp", "console"):  # they serve no /metrics
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(port["containerPort"])


def test_staging_stands_the_sandbox_in_for_the_departments() -> None:
    for overlay, sandbox, departments in (
        ("staging", True, "http://sandbox:8190"),
        ("production", False, "https://departments.example.gov.cn"),
    ):
        documents = render(K8S / "overlays" / overlay)
        assert ("sandbox" in by_kind(documents, "Deployment")) is sandbox
        (container,) = by_kind(documents, "Deployment")["verification"]["spec"]["template"]["spec"][
            "containers"
        ]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["BANGFU_VERIFICATION_DEPARTMENTS_URL"] == departments


def test_the_identity_provider_runs_beside_the_services_under_the_one_issuer(
    manifests: list[dict[str, Any]],
) -> None:
    """The provider's issuer is the one every process validates against; its clients file and
    signing keys come from a Secret, mounted read-only, never from the image or a ConfigMap."""
    deployment = by_kind(manifests, "Deployment")["idp"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"].rsplit(":", 1)[0].endswith("/bangfu-idp")
    environment = {item["name"]: item["value"] for item in container["env"]}
    assert sorted(set(environment) - idp_variables()) == []
    issuer = environment["BANGFU_IDP_ISSUER"]
    settings = by_kind(manifests, "ConfigMap")["bangfu-config"]["data"]
    assert issuer == settings["BANGFU_AUTH_ISSUER"] == "http://idp:8180"
    # The issuer's host and port are the provider's Service.
    (port,) = by_kind(manifests, "Service")["idp"]["spec"]["ports"]
    assert issuer == f"http://idp:{port['port']}"
    assert "BANGFU_AUTH_JWKS_URL" not in settings  # the JWKS is found through discovery
    assert container["readinessProbe"]["httpGet"]["path"] == DISCOVERY
    # One replica: a person's login must finish in the process that started it.
    assert deployment["spec"]["replicas"] == 1
    mounted = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for variable in ("BANGFU_IDP_CLIENTS", "BANGFU_IDP_KEYS"):
        path = Path(environment[variable])
        mount = mounted[str(path.parent)]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == "bangfu-idp"


def test_each_caller_logs_in_to_the_provider_with_a_client_secret_from_a_secret(
    manifests: list[dict[str, Any]],
) -> None:
    """Client secrets only in Secrets: never in a ConfigMap or a container's plain env."""
    secrets = by_kind(manifests, "Secret")
    for document in manifests:
        if document["kind"] == "ConfigMap":
            assert not [key for key in document["data"] if "SECRET" in key]
        if document["kind"] in ("Deployment", "StatefulSet", "Job"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                assert not [e for e in container.get("env", []) if "SECRET" in e["name"]]
    deployments = by_kind(manifests, "Deployment")
    for service in CALLERS:
        (container,) = deployments[service]["spec"]["template"]["spec"]["containers"]
        from_secrets: dict[str, str] = {}
        for source in container["envFrom"]:
            if "secretRef" in source:
                from_secrets |= secrets[source["secretRef"]["name"]]["stringData"]
        prefix = f"BANGFU_{service.upper()}_"
        assert from_secrets[f"{prefix}CLIENT_ID"] == f"svc-{service}"
        assert from_secrets[f"{prefix}CLIENT_SECRET"] == "CHANGE-ME"


def test_the_console_runs_replicated_on_the_shared_sessions_table(
    manifests: list[dict[str, Any]],
) -> None:
    """Deployment, Service, autoscaler (at least two replicas: sessions are in the database,
    not a pod) and budget; its keys from a Secret; ready only once migrated (/readyz)."""
    deployment = by_kind(manifests, "Deployment")["console"]
    assert "replicas" not in deployment["spec"]
    autoscaler = by_kind(manifests, "HorizontalPodAutoscaler")["console"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "console"
    assert autoscaler["spec"]["maxReplicas"] >= 2
    if deployment["metadata"]["namespace"] == "bangfu":  # production (staging starts at one)
        assert autoscaler["spec"]["minReplicas"] >= 2
    assert by_kind(manifests, "PodDisruptionBudget")["console"]["spec"]["selector"][
        "matchLabels"
    ] == {"app.kubernetes.io/name": "console"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["services.console"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["BANGFU_CONSOLE_REGISTRY_URL"] == "http://registry:8101"
    assert env["BANGFU_CONSOLE_PUBLIC_URL"].startswith("https://")
    secrets = by_kind(manifests, "Secret")
    from_secrets: set[str] = set()
    for source in container["envFrom"]:
        if "secretRef" in source:
            from_secrets |= set(secrets[source["secretRef"]["name"]]["stringData"])
    assert {
        "BANGFU_DATABASE_URL",
        "BANGFU_CONSOLE_ENCRYPTION_KEYS",
        "BANGFU_CONSOLE_BLIND_INDEX_KEY",
    } <= from_secrets
