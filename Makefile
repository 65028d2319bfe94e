# h5pay-worker: the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build demo test services lint fmt bench sandbox run clean

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
test: services
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## bench: placeholder until the benchmark lands
bench:
	@echo "make bench: the end-to-end benchmark is not written yet" >&2; exit 1

## sandbox / run: the two processes, by hand, on config/default.toml
sandbox:
	$(CARGO) run --locked --quiet -- sandbox

run: services
	$(CARGO) run --locked --quiet -- run

clean:
	$(CARGO) clean
