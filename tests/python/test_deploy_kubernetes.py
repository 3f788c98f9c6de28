"""The Kustomize overlays (deploy/overlays/*): each renders, passes strict schema
validation, and holds together — every reference (ConfigMap, Secret key, Service port,
autoscaling target, KEDA authentication) points at something that exists, every pod meets
the security and lifecycle policy, and every binary gets the settings it needs."""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from deploy_support import (
    DEPLOY,
    REPO,
    OVERLAYS,
    REQUIRED_SETTINGS,
    SERVICE_BINARIES,
    bind_variable,
    config_model,
    default_port,
    dockerfile_binaries,
    drain_seconds,
    missing_settings,
    named,
    objects,
    rendered,
    topology_constant,
    workspace_binaries,
)

# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by
# default from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# The broker and database operators' custom resources: test_deploy_clusters.py checks them.
OPERATOR_KINDS = {"RabbitmqCluster", "Cluster"}
EXAMPLE_SECRET = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
SECRET_NAME = EXAMPLE_SECRET["metadata"]["name"]


def pod_specs(overlay: str) -> list[tuple[dict, dict]]:
    """(workload, pod spec) for every Deployment, Job and CronJob."""
    return [
        (
            doc,
            doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if doc["kind"] == "CronJob"
            else doc["spec"]["template"]["spec"],
        )
        for doc in rendered(overlay)
        if doc["kind"] in ("Deployment", "Job", "CronJob")
    ]


def binary_of(container: dict) -> str:
    return container["command"][0]


def workload_running(overlay: str, binary: str) -> dict:
    matches = [
        workload
        for workload, spec in pod_specs(overlay)
        if workload["kind"] == "Deployment"
        and any(binary_of(c) == binary for c in spec["containers"])
    ]
    assert len(matches) == 1, f"{overlay}: {len(matches)} Deployments run {binary}"
    return matches[0]


def secret_keys(overlay: str, name: str) -> set[str]:
    """Keys a Secret provides: the rendered one, or — where the overlay leaves the Secret
    to be created out of band — the keys the example documents."""
    for secret in objects(overlay, "Secret"):
        if secret["metadata"]["name"] == name:
            return set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert name == SECRET_NAME, f"{overlay}: Secret {name!r} is neither rendered nor documented"
    return set(EXAMPLE_SECRET["stringData"])


def container_env(overlay: str, container: dict) -> dict[str, str | None]:
    """Every variable a container gets, with its value when the manifests know it (None
    for a Secret's value); asserts each reference resolves."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= named(overlay, "ConfigMap", source["configMapRef"]["name"])["data"]
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            env |= dict.fromkeys(secret_keys(overlay, name))
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            assert key in secret_keys(overlay, name), f"{overlay}: Secret {name} has no key {key}"
            env[item["name"]] = None
        elif "configMapKeyRef" in ref:
            name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            env[item["name"]] = named(overlay, "ConfigMap", name)["data"][key]
        else:
            env[item["name"]] = item.get("value")
    return env


def container_port(container: dict, port: str | int) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return numbers[0]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_validation(overlay, version):
    docs = rendered(overlay)
    assert docs, f"{overlay} renders nothing"
    errors = []
    for doc in docs:
        if doc["kind"] in KEDA_KINDS | OPERATOR_KINDS:
            continue  # custom resources: checked by the KEDA tests below and test_deploy_clusters.py
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{doc['kind']} ({doc['apiVersion']}) is not a Kubernetes {version} kind")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_a_misspelt_field():
    """The validation above has teeth: a typo in a probe is an error, not a warning."""
    deployment = named("staging", "Deployment", "callbridge-ingress")
    container = dict(deployment["spec"]["template"]["spec"]["containers"][0])
    container["livenessProb"] = container.pop("livenessProbe")
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"],
        "spec": {**deployment["spec"]["template"]["spec"], "containers": [container]},
    }}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_binary_has_one_deployment_and_the_migration_a_job(overlay):
    deployed = {
        binary_of(container)
        for workload, spec in pod_specs(overlay)
        if workload["kind"] == "Deployment"
        for container in spec["containers"]
    }
    # The simulator stands in for the centralized system; it is never deployed.
    assert deployed == set(SERVICE_BINARIES) - {"callbridge-sim"}
    jobs = objects(overlay, "Job")
    assert [job["spec"]["template"]["spec"]["containers"][0]["command"] for job in jobs] == [
        ["callbridge", "migrate", "up"]
    ]
    assert jobs[0]["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retention_runs_daily_one_run_at_a_time(overlay):
    (cron,) = objects(overlay, "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["containers"][0]["command"] == ["callbridge", "retention", "run"]
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    # Two runs at once would walk the same rows.
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_binary_of_the_image(overlay):
    binaries = dockerfile_binaries()
    for workload, spec in pod_specs(overlay):
        for container in spec["containers"]:
            assert binary_of(container) in binaries, (
                f"{workload['metadata']['name']} runs {binary_of(container)!r}, "
                f"not one of the image's binaries {sorted(binaries)}"
            )
            assert container["image"].rsplit("/", 1)[-1].startswith("callbridge:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_binary_gets_the_settings_it_requires_and_only_known_ones(overlay):
    model = config_model()
    for workload, spec in pod_specs(overlay):
        for container in spec["containers"]:
            binary = binary_of(container)
            env = container_env(overlay, container)
            missing = missing_settings(binary, set(env))
            assert not missing, f"{overlay} {workload['metadata']['name']} lacks {missing}"
            # An unknown CALLBRIDGE__… variable stops the binary (deny_unknown_fields); any
            # other unknown name is a typo that silently changes nothing.
            unknown = {
                name for name in env
                if name not in model.known_variables(binary) and not name.startswith("OTEL_")
            }
            assert not unknown, f"{overlay} {workload['metadata']['name']}: unknown {sorted(unknown)}"
            if binary in SERVICE_BINARIES:
                bind = env.get(bind_variable(binary))
                assert bind is None or bind.endswith(f":{default_port(binary)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_values_are_ones_the_binaries_accept(overlay):
    (config,) = objects(overlay, "ConfigMap")
    data = config["data"]
    # Booleans are true or false (any case), nothing else.
    assert data["CALLBACK_VERIFICATION_ENABLED"].lower() in ("true", "false")
    assert data.get("CALLBRIDGE__TELEMETRY__LOG_FORMAT", "auto") in ("auto", "json", "pretty")
    for variable in ("CENTRALIZED_CALLING_BASE_URL", "CENTRALIZED_CALLING_CALLBACK_URL"):
        assert urlparse(data[variable]).scheme == "https", f"{variable} is not https"
    assert urlparse(data["CENTRALIZED_CALLING_CALLBACK_URL"]).path == "/callback"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_traces_go_to_the_jaeger_collector(overlay):
    (config,) = objects(overlay, "ConfigMap")
    endpoint = urlparse(config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname.startswith("jaeger-collector.")
    # Jaeger takes OTLP/gRPC on 4317 and OTLP/HTTP on 4318; the protocol must match.
    protocol = config["data"].get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert endpoint.port == {"grpc": 4317, "http/protobuf": 4318}[protocol]
    for workload, spec in pod_specs(overlay):
        for container in spec["containers"]:
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" in container_env(overlay, container)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_and_bounded(overlay):
    for workload, spec in pod_specs(overlay):
        name = workload["metadata"]["name"]
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, name
        assert pod_security.get("runAsUser", 0) != 0, name
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            security = container.get("securityContext", {})
            assert security.get("readOnlyRootFilesystem") is True, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{name}: {bound}"
            # A read-only root still needs a writable /tmp.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_health_endpoints_on_the_binary_s_own_port(overlay):
    for binary in sorted(set(SERVICE_BINARIES) - {"callbridge-sim"}):
        workload = workload_running(overlay, binary)
        spec = workload["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        port = default_port(binary)
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{binary} {probe}"
            assert container_port(container, http["port"]) == port, f"{binary} {probe}"
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port)
        assert annotations.get("prometheus.io/path") == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_drain(overlay):
    for binary in sorted(set(SERVICE_BINARIES) - {"callbridge-sim"}):
        spec = workload_running(overlay, binary)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed = pre_stop.get("seconds", 0) + drain_seconds(binary, container_env(overlay, container))
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > needed, f"{binary}: grace {grace}s does not outlast {needed}s of drain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_service_and_a_disruption_budget(overlay):
    for binary in sorted(set(SERVICE_BINARIES) - {"callbridge-sim"}):
        workload = workload_running(overlay, binary)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], labels)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        services = [s for s in objects(overlay, "Service") if selects(s["spec"]["selector"], labels)]
        assert len(services) == 1, f"{binary}: {len(services)} Services"
        for port in services[0]["spec"]["ports"]:
            assert container_port(container, port["targetPort"]) == default_port(binary)
        budgets = [
            b for b in objects(overlay, "PodDisruptionBudget")
            if selects(b["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(budgets) == 1, f"{binary}: {len(budgets)} PodDisruptionBudgets"
        # A budget of minAvailable ≥ replicas would block every node drain.
        floor = budgets[0]["spec"].get("minAvailable")
        if floor is not None:
            minimum = min_replicas(overlay, workload)
            assert floor < minimum, f"{binary}: minAvailable {floor} with {minimum} replicas"


def min_replicas(overlay: str, workload: dict) -> int:
    name = workload["metadata"]["name"]
    for hpa in objects(overlay, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return hpa["spec"].get("minReplicas", 1)
    for scaled in objects(overlay, "ScaledObject"):
        if scaled["spec"]["scaleTargetRef"]["name"] == name:
            return scaled["spec"].get("minReplicaCount", 0)
    return workload["spec"].get("replicas", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_is_scaled_by_exactly_one_autoscaler_that_owns_its_replicas(overlay):
    targets = [
        (hpa["spec"]["scaleTargetRef"], "HPA") for hpa in objects(overlay, "HorizontalPodAutoscaler")
    ] + [(so["spec"]["scaleTargetRef"], "KEDA") for so in objects(overlay, "ScaledObject")]
    by_name = {}
    for ref, kind in targets:
        assert ref.get("kind", "Deployment") == "Deployment"
        assert ref["name"] not in by_name, f"{ref['name']} has two autoscalers"
        by_name[ref["name"]] = kind
    expected = {
        "callbridge-ingress": "HPA",
        "callbridge-persister": "KEDA",
        "callbridge-submitter": "KEDA",
    }
    for binary, kind in expected.items():
        workload = workload_running(overlay, binary)
        assert by_name.get(workload["metadata"]["name"]) == kind, binary
        # `replicas` in the manifest would reset the autoscaler's count on every apply.
        assert "replicas" not in workload["spec"], binary
    for hpa in objects(overlay, "HorizontalPodAutoscaler"):
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_callback_is_published_over_tls_and_nothing_else_is(overlay):
    (ingress,) = objects(overlay, "Ingress")
    tls_hosts = {host for entry in ingress["spec"]["tls"] for host in entry["hosts"]}
    assert all(entry.get("secretName") for entry in ingress["spec"]["tls"])
    paths = []
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
        paths += rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/callback", "Exact")]
    backend = paths[0]["backend"]["service"]
    service = named(overlay, "Service", backend["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    workload = workload_running(overlay, "callbridge-ingress")
    assert selects(service["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"])
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container_port(container, port["targetPort"]) == default_port("callbridge-ingress")
    # The centralized system is told to call the host this Ingress serves.
    (config,) = objects(overlay, "ConfigMap")
    assert urlparse(config["data"]["CENTRALIZED_CALLING_CALLBACK_URL"]).hostname in tls_hosts


# --- KEDA -----------------------------------------------------------------------------


def trigger_authentication(overlay: str, trigger: dict) -> dict[str, tuple[str, str]]:
    """parameter -> (secret, key) of the TriggerAuthentication a trigger uses."""
    auth = named(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    return {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_have_their_required_keys(overlay):
    scaled_objects = objects(overlay, "ScaledObject")
    assert len(scaled_objects) == 2
    for scaled in scaled_objects:
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"], scaled["metadata"]["name"]
        for trigger in spec["triggers"]:
            assert trigger["type"] in ("rabbitmq", "postgresql")
            # KEDA rejects non-string metadata values.
            for key, value in trigger["metadata"].items():
                assert isinstance(value, str), f"{trigger['type']}.{key} is {value!r}, not a string"
            assert trigger["authenticationRef"]["name"]
    for auth in objects(overlay, "TriggerAuthentication"):
        assert auth["apiVersion"] == "keda.sh/v1alpha1"
        refs = auth["spec"]["secretTargetRef"]
        assert refs and all({"parameter", "name", "key"} <= set(ref) for ref in refs)
        for ref in refs:
            assert ref["key"] in secret_keys(overlay, ref["name"]), ref


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_persister_scales_on_the_persist_queue_counting_unacked_messages(overlay):
    workload = workload_running(overlay, "callbridge-persister")
    (scaled,) = [
        so for so in objects(overlay, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
    ]
    (trigger,) = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert metadata["queueName"] == topology_constant("PERSIST_QUEUE")
    # Only the management API reports messages held unacked in consumers' prefetch.
    assert metadata["protocol"] == "http"
    assert metadata.get("excludeUnacknowledged", "false") == "false"
    assert metadata["mode"] == "QueueLength"
    # Unacked messages count, so one replica's own prefetch window must stay below the
    # per-replica target or a single busy replica would always ask for a second.
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    prefetch = int(config_model().value(container_env(overlay, container), "persister.prefetch"))
    assert float(metadata["value"]) > prefetch
    auth = trigger_authentication(overlay, trigger)
    assert set(auth) == {"host"}
    secret, key = auth["host"]
    example = EXAMPLE_SECRET["stringData"][key]
    assert urlparse(example).scheme in ("http", "https"), "the host must be the management API"
    assert urlparse(example).port == 15672


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_submitter_scales_on_due_pending_queue_rows(overlay):
    workload = workload_running(overlay, "callbridge-submitter")
    (scaled,) = [
        so for so in objects(overlay, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
    ]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    query = " ".join(trigger["metadata"]["query"].split())
    assert re.search(r"FROM local_call_queue WHERE", query)
    assert float(trigger["metadata"]["targetQueryValue"]) > 0
    # What the query counts is proven against a migrated database in test_deploy_database.
    assert set(trigger_authentication(overlay, trigger)) == {"connection"}
    # Replicas outlive their due rows: someone must reconcile expired leases.
    assert scaled["spec"]["minReplicaCount"] >= 1


# --- secrets ----------------------------------------------------------------------------


def test_example_secret_holds_placeholders_only():
    values = EXAMPLE_SECRET["stringData"]
    assert values and all("CHANGE_ME" in value for value in values.values())
    assert EXAMPLE_SECRET["metadata"]["annotations"]["callbridge.io/example"] == "true"


def test_production_never_applies_the_example_secret():
    assert not objects("production", "Secret")
    # …so the Secret the README tells operators to create carries every key referenced.
    references = {
        ref["secretKeyRef"]["key"]
        for _, spec in pod_specs("production")
        for container in spec["containers"]
        for item in container.get("env", [])
        for ref in [item.get("valueFrom", {})]
        if "secretKeyRef" in ref
    } | {
        ref["key"] for auth in objects("production", "TriggerAuthentication")
        for ref in auth["spec"]["secretTargetRef"]
    }
    readme = (REPO / "README.md").read_text()
    for key in references:
        assert f"--from-literal={key}=" in readme, f"README.md's Deploy section does not tell how to set {key}"


def test_required_settings_are_real_variables():
    """The table of required settings names only variables the sources read."""
    model = config_model()
    for binary, alternatives in REQUIRED_SETTINGS.items():
        assert binary in workspace_binaries()
        for variable in set().union(*alternatives):
            assert variable in model.known_variables(binary), f"{binary}: {variable}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_is_reachable_only_on_its_port_and_never_from_the_public_ingress(overlay):
    console = workload_running(overlay, "callbridge-console")
    labels = console["spec"]["template"]["metadata"]["labels"]
    policies = [
        p for p in objects(overlay, "NetworkPolicy")
        if selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert len(policies) == 1, f"{len(policies)} NetworkPolicies select the console"
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": default_port("callbridge-console")}]
        assert rule["from"], "an empty `from` would admit every source"
    (service,) = [s for s in objects(overlay, "Service") if selects(s["spec"]["selector"], labels)]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    for ingress in objects(overlay, "Ingress"):
        backends = json.dumps(ingress["spec"])
        assert service["metadata"]["name"] not in backends, "the console must not be public"
    # Secure cookies by default: nothing in the cluster turns them off.
    (container,) = console["spec"]["template"]["spec"]["containers"]
    assert container_env(overlay, container).get("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "true") == "true"
