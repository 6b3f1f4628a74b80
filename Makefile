# Comfy Gateway. `make run` serves on :8000; `make test` runs every test; `make bench` measures.
SHELL := /bin/bash
SWIFT ?= swift
BIN_PATH = $(shell $(SWIFT) build --show-bin-path)
RELEASE_BIN_PATH = $(shell $(SWIFT) build -c release --show-bin-path)

.PHONY: run run-debug test bench build deps clean keys fuzz

deps:
	@scripts/install-deps.sh system

build: deps
	$(SWIFT) build -c release

# The release build, supervised: nginx and the app, restarted if it dies; Ctrl-C or SIGTERM drains both.
run: build
	"$(RELEASE_BIN_PATH)/FCGIApp" run

# The same with the debug build, for a quicker edit-and-run loop.
run-debug: deps
	$(SWIFT) build
	"$(BIN_PATH)/FCGIApp" run

# API keys on the same STATE_DIR, also while the gateway runs:
#   make keys ARGS="create NAME [--max-running N] [--max-queued N] [--rate N/min]" | ARGS=list | ARGS="revoke NAME"
keys: build
	"$(RELEASE_BIN_PATH)/FCGIApp" keys $(ARGS)

# One build for everything (the tests start the built FCGIApp binary), then the tests, one
# suite after another (in parallel the end-to-end suites starve each other on two cores), then
# a short run of each fuzz target.
test:
	@scripts/install-deps.sh test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel
	scripts/fuzz.sh 5

# The parsers' libFuzzer targets, five minutes each (make test runs them for seconds).
fuzz:
	scripts/fuzz.sh 300

bench:
	@scripts/install-deps.sh bench
	$(SWIFT) build -c release
	scripts/bench.sh "$(RELEASE_BIN_PATH)/FCGIApp"
	scripts/bench-cluster.sh "$(RELEASE_BIN_PATH)/FCGIApp"

clean:
	rm -rf .build .run
