# Comfy Gateway. `make run` serves on :8000; `make test` runs every test; `make bench` measures.
SHELL := /bin/bash
SWIFT ?= swift
BIN_PATH = $(shell $(SWIFT) build --show-bin-path)

.PHONY: run test bench build deps clean

deps:
	@scripts/install-deps.sh system

build: deps
	$(SWIFT) build

run: build
	scripts/run-gateway.sh "$(BIN_PATH)/FCGIApp"

# One build for everything (the tests start the built FCGIApp binary), then the tests.
test:
	@scripts/install-deps.sh test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

bench:
	@scripts/install-deps.sh bench
	$(SWIFT) build -c release
	scripts/bench.sh "$$($(SWIFT) build -c release --show-bin-path)/FCGIApp"

clean:
	rm -rf .build .run
