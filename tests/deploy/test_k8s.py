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


def published_hosts(documents: list[dict[str, Any]]) -> dict[str, str]:
    """Service name -> the host the Ingresses route to it, each over TLS to the Service's port."""
    services = by_kind(documents, "Service")
    hosts: dict[str, str] = {}
    for ingress in by_kind(documents, "Ingress").values():
        assert "defaultBackend" not in ingress["spec"]
        covered = {
            host for tls in ingress["spec"]["tls"] if tls["secretName"] for host in tls["hosts"]
        }
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in covered, f"{rule['host']} is not served over TLS"
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                (port,) = services[backend["name"]]["spec"]["ports"]
                assert backend["port"] in ({"name": port["name"]}, {"number": port["port"]})
                assert hosts.setdefault(backend["name"], rule["host"]) == rule["host"]
    return hosts


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
    assert issuer == settings["BANGFU_AUTH_ISSUER"]
    # The issuer is the provider's public name: the Ingress's host for the provider's Service.
    assert issuer == f"https://{published_hosts(manifests)['idp']}"
    # TLS ends at the Ingress: discovery must name https endpoints all the same.
    assert environment["BANGFU_IDP_PROXY"] == "true"
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


def test_browsers_reach_only_the_console_and_the_provider_and_only_over_tls(
    manifests: list[dict[str, Any]],
) -> None:
    """The Ingress routes one host to the console's Service and one to the provider's, both
    covered by its TLS Secret; every Service stays inside the cluster (ClusterIP)."""
    hosts = published_hosts(manifests)
    assert sorted(hosts) == ["console", "idp"]
    assert hosts["console"] != hosts["idp"]
    (ingress,) = by_kind(manifests, "Ingress").values()
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] == "bangfu-tls" and sorted(tls["hosts"]) == sorted(hosts.values())
    for name, service in by_kind(manifests, "Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name


def test_the_console_and_every_process_use_the_public_https_names(
    manifests: list[dict[str, Any]],
) -> None:
    """Browsers must see the console at its public URL (https: Secure, __Host- cookies) and the
    provider at the issuer; the pods check tokens against that same issuer."""
    hosts = published_hosts(manifests)
    (container,) = by_kind(manifests, "Deployment")["console"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["BANGFU_CONSOLE_PUBLIC_URL"] == f"https://{hosts['console']}"
    settings = by_kind(manifests, "ConfigMap")["bangfu-config"]["data"]
    assert settings["BANGFU_AUTH_ISSUER"] == f"https://{hosts['idp']}"
    for document in manifests:
        if document["kind"] in ("Deployment", "Job"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                named = {item["name"] for item in container.get("env", [])}
                assert not named & {"BANGFU_AUTH_ISSUER", "BANGFU_AUTH_JWKS_URL"}, document


def test_the_checks_catch_a_service_published_or_a_host_without_tls(
    manifests: list[dict[str, Any]],
) -> None:
    published = copy.deepcopy(manifests)
    (ingress,) = by_kind(published, "Ingress").values()
    rule = copy.deepcopy(ingress["spec"]["rules"][0])
    rule["http"]["paths"][0]["backend"]["service"] = {"name": "registry", "port": {"number": 8101}}
    ingress["spec"]["rules"].append(rule)
    assert sorted(published_hosts(published)) == ["console", "idp", "registry"]
    rule["host"] = "registry.example.gov.cn"
    with pytest.raises(AssertionError, match="not served over TLS"):
        published_hosts(published)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_publishes_the_hosts_of_its_public_yaml(overlay: str) -> None:
    public = yaml.safe_load((K8S / "overlays" / overlay / "public.yaml").read_text())["data"]
    assert published_hosts(render(K8S / "overlays" / overlay)) == {
        "console": public["console-host"],
        "idp": public["idp-host"],
    }


def test_an_overlay_sets_the_public_names_in_one_place(tmp_path: Path) -> None:
    """components/public copies the overlay's two host names to the Ingress, the console's
    public URL and both issuers; nothing keeps the base's placeholders."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "base", tmp_path), "public.yaml"],
                "components": [os.path.relpath(K8S / "components" / "public", tmp_path)],
            }
        )
    )
    public = yaml.safe_load((K8S / "overlays" / "production" / "public.yaml").read_text())
    public["data"] = {"console-host": "console.county.test", "idp-host": "login.county.test"}
    (tmp_path / "public.yaml").write_text(yaml.safe_dump(public))

    documents = render(tmp_path)

    assert published_hosts(documents) == {
        "console": "console.county.test",
        "idp": "login.county.test",
    }
    idp = by_kind(documents, "Deployment")["idp"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "BANGFU_IDP_ISSUER", "value": "https://login.county.test"} in idp["env"]
    assert "bangfu-public" not in by_kind(documents, "ConfigMap")  # local to the build
    rendered = yaml.safe_dump_all(documents)
    assert "bangfu.example.gov.cn" not in rendered
    test_the_console_and_every_process_use_the_public_https_names(documents)
