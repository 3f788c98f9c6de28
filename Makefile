# callbridge — developer entry points. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: services build test test-rust test-python lint fmt run migrate bench clean-test-resources

services: ## make sure Postgres and RabbitMQ (with management API) are running, and Chromium for the console's browser test
	@scripts/ensure-services.sh
	@scripts/ensure-browser.sh

build:
	$(CARGO) build --workspace --bins

test: services ## everything CI runs: services, all tests, lint
	@$(MAKE) --no-print-directory test-rust
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory lint

test-rust:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

test-python:
	@scripts/python-tests.sh

# The fuzz targets are a workspace of their own (cargo-fuzz), so the workspace commands
# above do not see them: checked here, so an API change cannot break them unnoticed until
# `make fuzz`. Nothing is linked, so libFuzzer's C++ is not built (the path is never read).
# Last, no dependency declared but unused (cargo-machete, installed by the script if absent).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	CUSTOM_LIBFUZZER_PATH=/nonexistent/libfuzzer.a CARGO_TARGET_DIR=$(CURDIR)/target \
	  $(CARGO) clippy --manifest-path fuzz/Cargo.toml --bins -- -D warnings
	scripts/check-unused-deps.sh

fmt:
	$(CARGO) fmt --all

migrate: services build
	target/debug/callbridge migrate up

run: ## the whole loop locally: services, migrations, the 3 services + simulator, a demo campaign; Ctrl-C stops it
	@scripts/run-local.sh

.PHONY: test-deploy
test-deploy: services ## deployment checks only: Dockerfile, compose, Kustomize + KEDA, alert rules
	@scripts/check-deploy.sh

bench: services ## benchmark on the local services (release build, ~10 min); writes bench/results/latest.{md,json}
	$(CARGO) build --release --bins -p callbridge-bench -p callbridge-ingress -p callbridge-persister \
	  -p callbridge-submitter -p callbridge-sim -p callbridge-cli
	target/release/callbridge-bench --out bench/results $(BENCH_ARGS)

.PHONY: fuzz
fuzz: ## cargo-fuzz: build every target in fuzz/, run each FUZZ_SECONDS (60) s; fails on any crash
	@scripts/fuzz.sh

.PHONY: chaos
CHAOS_SECONDS ?= 300
chaos: services ## fault-injection run (kills, cuts, private Postgres/RabbitMQ restarts; root; CHAOS_SECONDS=300); writes chaos/results/latest.md
	$(CARGO) build --bins -p callbridge-cli -p callbridge-ingress -p callbridge-persister \
	  -p callbridge-submitter -p callbridge-sim -p callbridge-chaos
	target/debug/callbridge-chaos --variant long --duration $(CHAOS_SECONDS) --out chaos/results/latest.md

.PHONY: chaos-cluster
chaos-cluster: services ## chaos run on a 3-node RabbitMQ cluster: persist leader killed, a node cut off, rolling restarts (root; CHAOS_SECONDS=300); writes chaos/results/cluster.md
	$(CARGO) build --bins -p callbridge-cli -p callbridge-ingress -p callbridge-persister \
	  -p callbridge-submitter -p callbridge-sim -p callbridge-chaos
	target/debug/callbridge-chaos --variant long --rabbitmq-nodes 3 --duration $(CHAOS_SECONDS) \
	  --out chaos/results/cluster.md
