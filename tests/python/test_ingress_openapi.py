"""schemathesis against a running `callbridge-ingress`: requests generated from
`openapi/ingress.yaml` — the documented examples, the boundaries of every rule (coverage)
and random valid and invalid bodies (fuzzing) — and every check schemathesis has
(`--checks all`): a body the document calls valid must be accepted, an invalid one refused,
every answer must match its documented status, headers and schema, and a method the
document does not declare must get 405. Any finding fails the test.

Signature verification is off in the ingress under test (the generated bodies are not
signed); the account code is configured, so `accountcode` is optional as documented. The
seed is fixed so `make test` is reproducible; set CALLBRIDGE_SCHEMATHESIS_SEED to explore
others."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import requests

from deploy_support import REPO, tool

MANAGEMENT = os.environ.get("CALLBRIDGE_TEST_RABBITMQ_API", "http://127.0.0.1:15672/api")
AUTH = ("guest", "guest")
SEED = os.environ.get("CALLBRIDGE_SCHEMATHESIS_SEED", "20261204")


def ingress_binary():
    """The debug binary, rebuilt first (a no-op when up to date)."""
    subprocess.run(["cargo", "build", "--quiet", "-p", "callbridge-ingress"], cwd=REPO, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return os.path.join(target, "debug", "callbridge-ingress")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url, process):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the ingress at {url} did not become ready within 60 s")


def test_schemathesis_finds_nothing_the_document_and_the_ingress_disagree_on(tmp_path):
    vhost = f"cbtest-openapi-{uuid.uuid4().hex}"
    requests.put(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{MANAGEMENT}/permissions/{vhost}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=AUTH,
        timeout=10,
    ).raise_for_status()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ["PATH"],
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "INGRESS_BIND": f"127.0.0.1:{port}",
        "CALLBACK_VERIFICATION_ENABLED": "false",
        "CENTRALIZED_CALLING_ACCOUNT_CODE": "OPENAPI01",
        "RUST_LOG": "warn",
    }
    ingress = subprocess.Popen(
        [ingress_binary()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_ready(url, ingress)
        result = subprocess.run(
            [
                tool("st"), "run", str(REPO / "openapi" / "ingress.yaml"),
                "--url", url,
                "--checks", "all",
                "--seed", SEED,
                "--max-examples", "200",
                "--generation-database", "none",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
        assert "No issues found" in result.stdout, result.stdout[-8000:]
    finally:
        ingress.send_signal(signal.SIGTERM)
        ingress.wait(timeout=30)
        requests.delete(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10)
