# h5pay-worker: the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
# Where cargo puts what it builds: CI builds outside the clone (CARGO_TARGET_DIR).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/h5pay-worker

.PHONY: all build demo test services lint fmt bench bench-notify chaos chaos-clusters fuzz examples docs-check alerts k8s-check sandbox run run-all walkthrough image deny clean

all: build

build:
	$(CARGO) build --locked

## services: make sure RabbitMQ and Redis answer on localhost (starts or installs them)
services:
	./scripts/ensure-services.sh

## demo: sandbox gateway + worker in one process, one intent per outcome, a table of results
demo: services
	$(CARGO) run --locked --quiet -- demo

## test: every unit and integration test, against the local RabbitMQ and Redis
##       (and headless Chromium for the payment page: installed when missing);
##       the AsyncAPI/OpenAPI documents checked; the alert rules and their
##       unit tests (promtool); the kustomize overlays rendered and validated;
##       the client examples (their toolchains installed when missing); README's
##       "Trying it by hand" run as written (scripts/walkthrough.sh)
# Checks that cannot run on this machine (a tool that cannot be had) are listed
# here as they are skipped, and printed together at the end of `make test`.
test: export H5PAY_SKIPS = $(abspath $(TARGET_DIR))/skipped-checks.txt
test: services
	@mkdir -p $(TARGET_DIR) && rm -f $(TARGET_DIR)/skipped-checks.txt
	./scripts/ensure-browser.sh
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc
	./scripts/check-docs.sh $(BIN)
	./scripts/check-alerts.sh
	./scripts/check-k8s.sh
	./scripts/examples.sh --available $(BIN)
	./scripts/walkthrough.sh $(BIN)
	@./scripts/skipped-summary.sh

## docs-check: docs/asyncapi.yaml and docs/openapi.yaml validated, and the OpenAPI
##             document exercised against a running sandbox and receiver (schemathesis)
docs-check: services
	$(CARGO) build --locked
	./scripts/check-docs.sh $(BIN)

## alerts: promtool check rules and the alert unit tests (deploy/prometheus/)
alerts:
	./scripts/check-alerts.sh

## k8s-check: every kustomize overlay rendered and validated offline (Kubernetes and CRD schemas)
k8s-check:
	./scripts/check-k8s.sh

## examples: the publisher/consumer examples in Python, Node, Go and Java against a
##           running worker (installs each toolchain's packages; see docs/PUBLISHING.md)
examples: services
	$(CARGO) build --locked
	./scripts/examples.sh $(BIN)

## deny: cargo deny (deny.toml): licences, banned and duplicate crates, sources; installs
##       cargo-deny when missing. DENY_CHECKS="advisories licenses bans sources" adds the
##       RustSec advisories where GitHub is reachable (not on the CI machine)
DENY_CHECKS ?= licenses bans sources
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check $(DENY_CHECKS)

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## bench: end-to-end throughput and latency against an I/O-only skeleton, then the
##        notify receiver at 1,000/s and at its maximum (see BENCHMARKS.md)
##        e.g. make bench BENCH_ARGS="--latency-ms 50 --runs 3" NOTIFY_BENCH_ARGS="--rate 2000"
bench: services
	$(CARGO) build --locked --release --bins
	$(CARGO) run --locked --release --quiet --bin h5pay-bench -- $(BENCH_ARGS)
	$(CARGO) run --locked --release --quiet --bin h5pay-bench -- notify $(NOTIFY_BENCH_ARGS)

## bench-notify: only the notify receiver's benchmark
bench-notify: services
	$(CARGO) build --locked --release --bins
	$(CARGO) run --locked --release --quiet --bin h5pay-bench -- notify $(NOTIFY_BENCH_ARGS)

## chaos: the full fault suite (CI runs a short version within `make test`); see RELIABILITY.md
chaos: services
	rm -f target/chaos-report.jsonl
	H5PAY_CHAOS_FULL=1 $(CARGO) test --locked --release --test chaos -- --nocapture
	@echo "figures: target/chaos-report.jsonl"

## chaos-clusters: node failures on real clusters that scripts/clusters.sh starts beside the
##                 local services (a Redis Cluster of 3 masters + 3 replicas, 3 RabbitMQ nodes;
##                 ~20 s and ~520 MiB): the intent queue's leader, the DLQ's node and a Redis
##                 master killed under load (~4 min and the build). Not in `make test`: ~3 min even at its
##                 short scale (`cargo test --test clusters -- --ignored`); see RELIABILITY.md
chaos-clusters: services
	rm -f target/chaos-clusters-report.jsonl
	H5PAY_CHAOS_FULL=1 $(CARGO) test --locked --release --test clusters -- --ignored --nocapture
	@echo "figures: target/chaos-clusters-report.jsonl"

## fuzz: every fuzz target for FUZZ_SECONDS (default 600) each (needs nightly; installs cargo-fuzz)
##       `make test` replays fuzz/seeds and fuzz/regressions; see RELIABILITY.md
fuzz:
	./scripts/fuzz.sh

## run-all: sandbox, worker and notify receiver by hand on config/default.toml,
##          pretty logs, notifies sent to the receiver; Ctrl-C stops all three
run-all: services
	$(CARGO) build --locked
	./scripts/run-all.sh $(BIN)

## walkthrough: runs README's "Trying it by hand" as written, to the paid event
walkthrough: services
	$(CARGO) build --locked
	./scripts/walkthrough.sh $(BIN)

## image: the container image (deploy/Dockerfile) as $(IMAGE):<version> and :latest, with
##        the commit in --version and the OCI labels (version, revision, created) filled
##        in; needs a Docker engine (the CI machine has none: not part of make test)
IMAGE ?= h5pay-worker
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image:
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers (docker info)"; exit 1; }
	docker build -f deploy/Dockerfile \
	  --build-arg H5PAY_COMMIT=$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) \
	  --build-arg H5PAY_VERSION=$(VERSION) \
	  --build-arg H5PAY_CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	  -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

## sandbox / run: the two processes, by hand, on config/default.toml
sandbox:
	$(CARGO) run --locked --quiet -- sandbox

run: services
	$(CARGO) run --locked --quiet -- run

clean:
	$(CARGO) clean
