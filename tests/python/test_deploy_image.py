"""The Dockerfile, checked statically (no Docker engine here): hadolint passes, the image
ships exactly the workspace's product binaries, builder and runtime share a Debian release and
the workspace's Rust version, dependencies build in their own cached layer, the runtime
user is the non-root uid the Kubernetes manifests expect, and .dockerignore keeps out
nothing the build reads."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from deploy_support import (
    DOCKERFILE,
    NOT_SHIPPED,
    OVERLAYS,
    REPO,
    SERVICE_BINARIES,
    cargo_metadata,
    default_port,
    dockerfile_binaries,
    final_stage,
    rendered,
    run,
    stages,
    tool,
    workspace_binaries,
)


def test_hadolint_passes():
    run([tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)])


def bin_flags(step: str) -> set[str]:
    """The binaries a builder step's `--bin` flags select."""
    _, builder = stages()["builder"]
    (arguments,) = [a for i, a in builder if i == "RUN" and step in a]
    return set(re.findall(r"--bin\s+(\S+)", arguments))


def test_image_ships_exactly_the_workspace_product_binaries():
    product = set(workspace_binaries()) - set(NOT_SHIPPED)
    assert dockerfile_binaries() == product
    # Dependencies are cooked for, and the build compiles, exactly what is shipped.
    assert bin_flags("cargo chef cook") == product
    assert bin_flags("cargo build") == product


def test_builder_and_runtime_share_the_debian_release_and_the_workspace_rust():
    builder_image, _ = stages()["chef"]
    runtime_image, _ = final_stage()
    rust = re.fullmatch(r"rust:(\d+\.\d+)(?:\.\d+)?(?:-slim)?-(\w+)", builder_image)
    debian = re.fullmatch(r"debian:(\w+)-slim", runtime_image)
    assert rust, f"builder {builder_image} is not an official Debian-based rust image"
    assert debian, f"runtime {runtime_image} is not Debian slim"
    # The binaries link against the builder's glibc: the runtime must be the same release.
    assert rust.group(2) == debian.group(1)
    versions = {p.get("rust_version") for p in cargo_metadata()["packages"]}
    assert versions == {rust.group(1)}, f"workspace rust-version {versions} vs image {rust.group(1)}"
    assert stages()["builder"][0] == "chef" and stages()["planner"][0] == "chef"


def test_dependencies_build_in_a_layer_of_their_own():
    """Only the recipe (manifests + lock file) is in the build context when dependencies
    compile; the sources arrive after, so editing them does not rebuild dependencies."""
    _, builder = stages()["builder"]
    cook = next(i for i, (ins, a) in enumerate(builder) if ins == "RUN" and "cargo chef cook" in a)
    copy_all = next(i for i, (ins, a) in enumerate(builder) if ins == "COPY" and a == ". .")
    assert cook < copy_all
    copies_before = [a for ins, a in builder[:cook] if ins == "COPY"]
    assert copies_before == ["--from=planner /src/recipe.json recipe.json"]
    cook_flags, build_flags = builder[cook][1].split(), next(
        a for ins, a in builder if ins == "RUN" and "cargo build" in a).split()
    # The cooked dependencies are reused only when built with the same profile.
    assert "--release" in cook_flags and "--release" in build_flags
    assert "--locked" in cook_flags and "--locked" in build_flags
    _, planner = stages()["planner"]
    assert any(ins == "RUN" and "cargo chef prepare" in a for ins, a in planner)


def test_runtime_runs_as_the_non_root_uid_the_manifests_expect():
    _, runtime = final_stage()
    users = [a for ins, a in runtime if ins == "USER"]
    assert users, "the runtime stage never drops root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric so runAsNonRoot can verify it"
    created = " ".join(a for ins, a in runtime if ins == "RUN")
    assert f"--uid {uid}" in created and f"--gid {gid or uid}" in created
    for overlay in OVERLAYS:
        for doc in rendered(overlay):
            if doc["kind"] in ("Deployment", "Job"):
                security = doc["spec"]["template"]["spec"]["securityContext"]
                assert security["runAsUser"] == int(uid), doc["metadata"]["name"]


def test_runtime_has_what_health_checks_and_tls_need_and_exposes_every_port():
    _, runtime = final_stage()
    installs = " ".join(a for ins, a in runtime if ins == "RUN")
    assert re.search(r"apt-get install .*\bca-certificates\b", installs)  # rustls' roots
    assert re.search(r"apt-get install .*\bcurl\b", installs)  # compose health checks
    exposed = {int(p) for ins, a in runtime if ins == "EXPOSE" for p in a.split()}
    assert exposed == {default_port(b) for b in SERVICE_BINARIES}


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the repository) out of the build context:
    a pattern matches the path or one of its parent directories; `**/` matches any depth;
    a later `!pattern` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.split("/")[-1], pattern[3:])
            ):
                result = not negate
    return result


def compile_time_inputs() -> set[str]:
    """Files and directories the crates read while compiling (include_str!, include_bytes!,
    sqlx::migrate!), relative to the repository."""
    inputs = set()
    for source in (REPO / "crates").glob("*/src/**/*.rs"):
        text = source.read_text()
        for macro, relative in re.findall(r'\b(include_str|include_bytes|migrate)!\(\s*"([^"]+)"', text):
            # include_*! resolve relative to the file, sqlx::migrate! to the crate's root.
            crate = REPO / "crates" / source.relative_to(REPO / "crates").parts[0]
            base = source.parent if macro.startswith("include") else crate
            inputs.add(str((base / relative).resolve().relative_to(REPO)))
    return inputs


def test_dockerignore_keeps_out_build_output_but_nothing_the_build_reads():
    for path in ("target/debug/callbridge", ".git/HEAD", "deploy/base/kustomization.yaml"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"
    needed = {"Cargo.toml", "Cargo.lock"}
    for package in cargo_metadata()["packages"]:
        needed.add(str(Path(package["manifest_path"]).relative_to(REPO)))
        needed |= {str(Path(t["src_path"]).relative_to(REPO)) for t in package["targets"]}
    needed |= compile_time_inputs()
    assert "migrations" in needed, "the migrations are embedded at compile time (sqlx::migrate!)"
    kept_out = sorted(path for path in needed if ignored(path))
    assert not kept_out, f".dockerignore excludes what the build reads: {kept_out}"
