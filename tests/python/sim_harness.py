"""Runs the `callbridge-sim` binary and a callback receiver for the Python tests.

The receiver is a plain `http.server` that checks every callback the way the seed
guide's Flask route does: `X-Signature` present, then `verify_callback_signature` over
the body read as text; 401 otherwise, 200 `{"status": "success"}` when it verifies.
"""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from seed_client import verify_callback_signature

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "python-test-api-key"
CALLBACK_SECRET = "python-test-callback-secret"
ACCOUNT_CODE = "PYTEST01"

SEED_FIELDS = (
    "event_type",
    "accountcode",
    "batch_id",
    "call_id",
    "phone_number",
    "call_status",
    "disposition",
    "duration",
    "start_time",
    "end_time",
    "recording_url",
    "custom_data",
    "server_code",
    "error_message",
)


@functools.cache
def sim_binary():
    """The debug binary, rebuilt first when cargo is at hand (a no-op when up to date),
    so a test never runs a stale simulator."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    binary = target / "debug" / "callbridge-sim"
    if shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--quiet", "-p", "callbridge-sim"],
            cwd=REPO_ROOT,
            check=True,
        )
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing and cargo is not available")
    return binary


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CallbackReceiver:
    """A real HTTP callback endpoint that verifies with the seed's function."""

    def __init__(self, secret=CALLBACK_SECRET):
        self.secret = secret
        self.lock = threading.Lock()
        self.accepted = []  # (raw body bytes, headers) of callbacks answered 200
        self.rejected = []  # raw bodies answered 401
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                signature = self.headers.get("X-Signature")
                # As the guide's route: request.get_data(as_text=True).
                payload = raw.decode("utf-8")
                if signature and verify_callback_signature(
                    payload, signature, receiver.secret
                ):
                    with receiver.lock:
                        receiver.accepted.append((raw, dict(self.headers)))
                    self.answer(200, {"status": "success"})
                else:
                    with receiver.lock:
                        receiver.rejected.append(raw)
                    self.answer(401, {"error": "Invalid signature"})

            def answer(self, status, body):
                encoded = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def callbacks(self):
        """Accepted callbacks as parsed JSON, in arrival order."""
        with self.lock:
            return [json.loads(raw) for raw, _ in self.accepted]


class SimProcess:
    """`callbridge-sim` on a free loopback port, in fast mode unless told otherwise."""

    def __init__(self, callback_url, **env):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SIM_BIND": f"127.0.0.1:{self.port}",
            "SIM_API_KEY": API_KEY,
            "SIM_CALLBACK_URL": callback_url,
            "SIM_CALLBACK_SECRET": CALLBACK_SECRET,
            "SIM_ACCOUNT_CODE": ACCOUNT_CODE,
            "SIM_FAST": "true",
            "SIM_SEED": "11",
            "RUST_LOG": "warn",
            **env,
        }
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [str(sim_binary())],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"callbridge-sim exited: {self.process.stderr.read().decode()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("callbridge-sim did not become healthy")

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """SIGTERM, then the exit code (0 when it shut down cleanly)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/admin/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    def set_knobs(self, **knobs):
        return self.admin("PUT", "knobs", knobs)

    def wait_idle(self):
        idle = self.admin("GET", "wait-idle?timeout_ms=30000")
        assert idle["idle"], f"callbacks still pending: {idle}"

    def ground_truth(self):
        return self.admin("GET", "ground-truth")
