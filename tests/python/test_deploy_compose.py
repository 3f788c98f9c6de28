"""docker-compose.yml: Compose itself accepts it, every callbridge container gets the
settings its binary requires on the port the binary listens on, the services are wired
to each other (simulator ⇄ ingress, submitter → simulator, OTLP → Jaeger), and the start
order is enforced by health checks and `depends_on` conditions."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from deploy_support import (
    REPO,
    SERVICE_BINARIES,
    bind_variable,
    compose_binary,
    compose_env,
    compose_model,
    config_model,
    default_port,
    dockerfile_binaries,
    drain_seconds,
    missing_settings,
    run,
)

ONE_SHOT = {"migrate", "campaign"}


def services() -> dict[str, dict]:
    return compose_model()["services"]


def callbridge_services() -> dict[str, dict]:
    """Services running the callbridge image (built from the Dockerfile)."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def command_of(service: dict) -> list[str]:
    return (service.get("entrypoint") or []) + (service.get("command") or [])


def test_compose_accepts_the_file():
    run([compose_binary(), "--profile", "*", "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=REPO, env=compose_env())


def test_callbridge_services_build_the_repository_dockerfile_and_run_its_binaries():
    shipped = dockerfile_binaries()
    built = callbridge_services()
    assert {"migrate", "ingress", "persister", "submitter", "sim"} <= set(built)
    images = set()
    for name, service in built.items():
        assert service["build"]["context"] == str(REPO), name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        images.add(service["image"])
        assert command_of(service)[0] in shipped, f"{name} runs {command_of(service)[0]!r}"
    # One image for every binary: one build, reused by every service.
    assert len(images) == 1


def test_every_callbridge_binary_gets_its_required_settings_and_only_known_ones():
    model = config_model()
    for name, service in callbridge_services().items():
        binary = command_of(service)[0]
        env = service.get("environment", {})
        assert not missing_settings(binary, set(env)), f"{name} lacks {missing_settings(binary, set(env))}"
        unknown = {
            variable for variable in env
            if variable not in model.known_variables(binary) and not variable.startswith("OTEL_")
        }
        assert not unknown, f"{name}: unknown {sorted(unknown)}"
        if model.value(env, "callback.verification_enabled") is not None:
            assert env["CALLBACK_VERIFICATION_ENABLED"].lower() in ("true", "false")


def test_ports_health_checks_and_bind_addresses_agree_with_the_binaries_defaults():
    for name, service in callbridge_services().items():
        binary = command_of(service)[0]
        if binary not in SERVICE_BINARIES:
            continue
        port = default_port(binary)
        env = service["environment"]
        assert env.get(bind_variable(binary), f"0.0.0.0:{port}").endswith(f":{port}"), name
        published = {int(p["target"]) for p in service.get("ports", [])}
        assert published <= {port}, f"{name} publishes {published}, listens on {port}"
        check = " ".join(service["healthcheck"]["test"])
        url = urlparse(re.search(r"http://\S+", check).group(0))
        assert url.port == port and url.path in ("/readyz", "/healthz"), f"{name}: {check}"


def depends(name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in services()[name].get("depends_on", {}).items()}


def test_start_order_is_enforced_by_conditions():
    assert depends("migrate") == {"postgres": "service_healthy"}
    assert depends("campaign") == {"migrate": "service_completed_successfully"}
    for worker in ("persister", "submitter"):
        # The schema exists before a worker touches it (they never migrate themselves).
        assert depends(worker)["migrate"] == "service_completed_successfully"
    assert depends("persister")["rabbitmq"] == "service_healthy"
    assert depends("ingress")["rabbitmq"] == "service_healthy"
    # The simulator calls back as soon as it dispatches: the ingress must be ready, and
    # the submitter only sends once the simulator answers.
    assert depends("sim")["ingress"] == "service_healthy"
    assert depends("submitter")["sim"] == "service_healthy"
    for name in services():
        for dep, condition in depends(name).items():
            target = services()[dep]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dep}'s health, which has no check"
            if condition == "service_completed_successfully":
                assert dep in ONE_SHOT and target.get("restart", "no") == "no", f"{dep} never completes"


def test_services_are_wired_to_each_other():
    svc = services()
    sim, ingress, submitter = (svc[n]["environment"] for n in ("sim", "ingress", "submitter"))
    # The simulator calls back the ingress's /callback, signed with a secret it accepts.
    callback = urlparse(sim["SIM_CALLBACK_URL"])
    assert (callback.hostname, callback.port, callback.path) == (
        "ingress", default_port("callbridge-ingress"), "/callback")
    assert sim["SIM_CALLBACK_SECRET"] in ingress["CALLBACK_SECRET_KEY"].split(",")
    assert ingress["CALLBACK_VERIFICATION_ENABLED"] == "true"
    # The submitter talks to the simulator with the key it was registered with.
    base = urlparse(submitter["CENTRALIZED_CALLING_BASE_URL"])
    assert (base.hostname, base.port) == ("sim", default_port("callbridge-sim"))
    assert submitter["CENTRALIZED_CALLING_API_KEY"] == sim["SIM_API_KEY"]
    assert submitter["CENTRALIZED_CALLING_ACCOUNT_CODE"] == sim["SIM_ACCOUNT_CODE"]
    assert urlparse(submitter["CENTRALIZED_CALLING_CALLBACK_URL"]) == callback
    # Databases and brokers are the compose services, with their credentials.
    postgres = svc["postgres"]["environment"]
    rabbitmq = svc["rabbitmq"]["environment"]
    for name, service in callbridge_services().items():
        env = service["environment"]
        if "CLIENT_CALLING_DB_URL" in env:
            url = urlparse(env["CLIENT_CALLING_DB_URL"])
            assert (url.hostname, url.username, url.password, url.path) == (
                "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"],
                "/" + postgres["POSTGRES_DB"]), name
        if "RABBITMQ_URL" in env:
            url = urlparse(env["RABBITMQ_URL"])
            assert (url.hostname, url.port, url.username, url.password) == (
                "rabbitmq", 5672, rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"]), name


def test_every_callbridge_container_sends_traces_to_jaeger():
    assert "jaeger" in services()["jaeger"]["image"]
    for name, service in callbridge_services().items():
        env = service["environment"]
        endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        assert endpoint.hostname == "jaeger", name
        assert endpoint.port == {"grpc": 4317, "http/protobuf": 4318}[protocol], name
        assert env["OTEL_SERVICE_NAME"].startswith("callbridge"), name
        assert "jaeger" in depends(name) or name in ONE_SHOT | {"cli", "sim"}, name


def test_long_running_callbridge_containers_are_read_only():
    for name, service in callbridge_services().items():
        if name in ONE_SHOT or "tools" in service.get("profiles", []):
            continue
        assert service.get("read_only") is True, name
        assert any(t.startswith("/tmp") for t in service.get("tmpfs", [])), name


def test_stop_grace_outlasts_each_service_s_drain():
    for name, service in callbridge_services().items():
        binary = command_of(service)[0]
        if binary not in SERVICE_BINARIES or binary == "callbridge-sim":
            continue
        grace = service.get("stop_grace_period", "10s")
        seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
        assert seconds > drain_seconds(binary, service["environment"]), f"{name}: {grace}"
