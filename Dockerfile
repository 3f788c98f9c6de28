# syntax=docker/dockerfile:1
#
# One image holding every callbridge binary; a container picks its binary with
# its command, e.g. `docker run --rm callbridge:local callbridge-ingress`.
#
#   docker build -t callbridge:local .
#
# Stages: chef (toolchain + cargo-chef) → planner (dependency recipe) → builder (deps in
# their own cached layer, then the workspace) → runtime (Debian slim, non-root).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# cargo-chef turns the workspace's manifests and lock file into a recipe of its
# dependencies, so a change to our own sources does not rebuild them.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# No database at build time. The code has no compile-time-checked queries (sqlx's `query!`
# macros) and so no `.sqlx` data; SQLX_OFFLINE makes one added later fail here, asking for
# that data, instead of trying to reach a database from the build.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# The product binaries (the six the README lists), named in each step alike so the cooked
# dependencies are the ones the final build needs; the local benchmark harness
# (callbridge-bench) stays out. This layer is rebuilt only when recipe.json changes (a
# manifest or Cargo.lock changed).
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      --bin callbridge --bin callbridge-ingress --bin callbridge-persister \
      --bin callbridge-submitter --bin callbridge-sim --bin callbridge-console
COPY . .
RUN cargo build --release --locked \
      --bin callbridge --bin callbridge-ingress --bin callbridge-persister \
      --bin callbridge-submitter --bin callbridge-sim --bin callbridge-console \
 && mkdir -p /out \
 && cp target/release/callbridge \
       target/release/callbridge-ingress \
       target/release/callbridge-persister \
       target/release/callbridge-submitter \
       target/release/callbridge-sim \
       target/release/callbridge-console \
       /out/

# Same Debian release as the builder, so the binaries find the glibc they were linked
# against. TLS is rustls (no OpenSSL); ca-certificates gives it the system roots, curl
# serves the container health checks (`curl -fsS http://127.0.0.1:<port>/readyz`).
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 callbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin callbridge
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /tmp
ENV RUST_LOG=info
# ingress, simulator, persister (health/metrics), submitter (health/metrics), console
EXPOSE 8080 8090 9101 9102 9103
CMD ["callbridge", "--help"]
