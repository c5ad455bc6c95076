# eryx build entry points. `make test` is what CI and the README run.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO            ?= go
CACHE_DIR     ?= $(or $(ERYX_CACHE_DIR),$(HOME)/.cache/eryx)
GOLANGCI_VER  ?= v2.15.0
GOTESTFLAGS   ?=
BIN           := bin

# The CPython build is slow and changes rarely: cache it outside the tree,
# keyed by the recipe, so a clean clone on the same machine reuses it.
# The pins (runtime/build/debian-pins) are part of the keys: a new Debian
# version is a new build.
CPY_KEY   := $(shell { cat runtime/build/build-cpython.sh runtime/build/debian-apt.sh runtime/build/patches/cpython-*.patch; grep '^source' runtime/build/debian-pins; } | sha256sum | cut -c1-16)
CPY_DIR   := $(CACHE_DIR)/cpython-$(CPY_KEY)
PYLIB_KEY := $(shell { cat runtime/build/fetch-pylibs.sh runtime/build/debian-apt.sh; grep '^binary' runtime/build/debian-pins; } | sha256sum | cut -c1-16)
PYLIB_DIR := $(CACHE_DIR)/pylibs-$(PYLIB_KEY)
DIST      := runtime/assets/dist
WASM      := $(DIST)/eryx.wasm
STDLIB    := $(DIST)/python311.zip
GUEST_PY  := $(wildcard runtime/guest/*.py)

.PHONY: runtime build test test-numpy test-race lint bench soak chaos demo chart-lint clean deps

## runtime: build the CPython wasm module and the stdlib archive (cached)
runtime: $(WASM) $(STDLIB)

# flock: concurrent builds (two checkouts, parallel test runs) share the cache.
$(CPY_DIR)/.done: runtime/build/build-cpython.sh runtime/build/debian-apt.sh runtime/build/debian-pins $(wildcard runtime/build/patches/cpython-*.patch) | deps
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/.cpython.lock $(MAKE) --no-print-directory cpython-locked

.PHONY: cpython-locked
cpython-locked:
	@if [ ! -f $(CPY_DIR)/.done ]; then \
	  echo "==> building CPython for wasm32-wasi into $(CPY_DIR) (first time: about two minutes)"; \
	  rm -rf $(CPY_DIR).tmp $(CACHE_DIR)/work-$(CPY_KEY); \
	  ERYX_BUILD_WORK=$(CACHE_DIR)/work-$(CPY_KEY) runtime/build/build-cpython.sh $(CPY_DIR).tmp && \
	  rm -rf $(CPY_DIR) && mv $(CPY_DIR).tmp $(CPY_DIR) && rm -rf $(CACHE_DIR)/work-$(CPY_KEY) && \
	  touch $(CPY_DIR)/.done; \
	fi

$(WASM): $(CPY_DIR)/.done runtime/guest/eryx.c runtime/guest/sqlite_vfs.c runtime/guest/wasi_errno.c runtime/build/link.sh
	@echo "==> linking $@"
	runtime/build/link.sh $(CPY_DIR) $@

$(PYLIB_DIR)/.done: runtime/build/fetch-pylibs.sh runtime/build/debian-apt.sh runtime/build/debian-pins
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/.pylibs.lock sh -c '[ -f $@ ] || { \
	  echo "==> fetching pure-Python libraries into $(PYLIB_DIR)" && rm -rf $(PYLIB_DIR).tmp && \
	  runtime/build/fetch-pylibs.sh $(PYLIB_DIR).tmp && rm -rf $(PYLIB_DIR) && \
	  mv $(PYLIB_DIR).tmp $(PYLIB_DIR) && touch $@; }'

$(STDLIB): $(CPY_DIR)/.done $(PYLIB_DIR)/.done $(GUEST_PY) runtime/build/pack-stdlib.py
	@echo "==> packing the stdlib into $@"
	/usr/bin/python3.11 runtime/build/pack-stdlib.py $(CPY_DIR) $(PYLIB_DIR) runtime/guest $@

## runtime-check-updates: warn when Debian serves newer versions of the
## pinned sources and packages (runtime/build/debian-pins); never fails
.PHONY: runtime-check-updates
runtime-check-updates:
	runtime/build/check-updates.sh

# CPython's regression tests (not in the image), for make test-stdlib and
# the fast subset in make test.
TS_KEY := $(shell { cat runtime/build/fetch-testsuite.sh runtime/build/debian-apt.sh; grep -E '^(test|binary) +libpython3.11' runtime/build/debian-pins; } | sha256sum | cut -c1-16)
TS_DIR := $(CACHE_DIR)/testsuite-$(TS_KEY)

$(TS_DIR)/.done: runtime/build/fetch-testsuite.sh runtime/build/debian-apt.sh runtime/build/debian-pins
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/.testsuite.lock sh -c '[ -f $@ ] || { \
	  echo "==> fetching the CPython test suite into $(TS_DIR)" && rm -rf $(TS_DIR).tmp && \
	  runtime/build/fetch-testsuite.sh $(TS_DIR).tmp && rm -rf $(TS_DIR) && \
	  mv $(TS_DIR).tmp $(TS_DIR) && touch $@; }'

.PHONY: testsuite test-stdlib
testsuite: $(TS_DIR)/.done

## test-stdlib: CPython's regression tests in sandboxes and natively, same
## run; per-module table and the share of natively passing tests that pass
test-stdlib: runtime testsuite
	ERYX_STDLIB_TESTSUITE=$(TS_DIR) ERYX_STDLIB_TESTS=all $(GO) test -count=1 -timeout 120m -run '^TestCPythonRegressionTests$$' -v ./runtime/stdlibtest/

# ---- numpy (issue #12) -------------------------------------------------------
# A second runtime image, eryx-numpy.wasm: the same interpreter with numpy's
# extension modules linked in as built-ins and numpy pre-imported, plus
# numpy.zip (its Python part as .pyc). ERYX_NUMPY=0 builds only the minimal
# image; with ERYX_NUMPY=1 (the default) a failing numpy build fails
# `make runtime`. ERYX_NUMPY_SOURCE: see runtime/build/build-numpy.sh.
ERYX_NUMPY ?= 1
NPY_KEY   := $(shell (cat runtime/build/build-numpy.sh runtime/build/patches/numpy-*.patch; echo $(CPY_KEY)) | sha256sum | cut -c1-16)
NPY_DIR   := $(CACHE_DIR)/numpy-$(NPY_KEY)
WASM_NPY  := $(DIST)/eryx-numpy.wasm
NPY_ZIP   := $(DIST)/numpy.zip
# numpy's own tests and pytest (Debian's), mounted as packages by the tests;
# outside dist/ so that they are not embedded into the binaries.
NPY_TESTS := runtime/assets/numpytest
TLIB_KEY  := $(shell (cat runtime/build/fetch-testlibs.sh; echo $(CPY_KEY)) | sha256sum | cut -c1-16)
TLIB_DIR  := $(CACHE_DIR)/testlibs-$(TLIB_KEY)

ifeq ($(ERYX_NUMPY),1)
runtime: $(WASM_NPY) $(NPY_ZIP) $(NPY_TESTS)/.done
endif

$(NPY_DIR)/.done: runtime/build/build-numpy.sh $(wildcard runtime/build/patches/numpy-*.patch) $(CPY_DIR)/.done
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/.numpy.lock $(MAKE) --no-print-directory numpy-locked

.PHONY: numpy-locked
numpy-locked:
	@if [ ! -f $(NPY_DIR)/.done ]; then \
	  echo "==> building numpy for wasm32-wasi into $(NPY_DIR) (first time: about five minutes)"; \
	  rm -rf $(NPY_DIR).tmp $(CACHE_DIR)/work-numpy-$(NPY_KEY); \
	  ERYX_CACHE_DIR=$(CACHE_DIR) ERYX_BUILD_WORK=$(CACHE_DIR)/work-numpy-$(NPY_KEY) runtime/build/build-numpy.sh $(CPY_DIR) $(NPY_DIR).tmp && \
	  rm -rf $(NPY_DIR) && mv $(NPY_DIR).tmp $(NPY_DIR) && rm -rf $(CACHE_DIR)/work-numpy-$(NPY_KEY) && \
	  touch $(NPY_DIR)/.done; \
	fi

$(WASM_NPY): $(CPY_DIR)/.done $(NPY_DIR)/.done runtime/guest/eryx.c runtime/build/link.sh runtime/build/gen-inittab.py
	@echo "==> linking $@ (with numpy)"
	runtime/build/link.sh $(CPY_DIR) $@ $(NPY_DIR)

$(NPY_ZIP): $(NPY_DIR)/.done runtime/build/pack-numpy.py runtime/build/pack-stdlib.py
	@echo "==> packing numpy into $@"
	/usr/bin/python3.11 runtime/build/pack-numpy.py $(NPY_DIR)/site $@

$(TLIB_DIR)/.done: runtime/build/fetch-testlibs.sh $(CPY_DIR)/.done
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/.testlibs.lock sh -c '[ -f $@ ] || { \
	  echo "==> fetching pytest for the numpy tests into $(TLIB_DIR)" && rm -rf $(TLIB_DIR).tmp && \
	  runtime/build/fetch-testlibs.sh $(CPY_DIR) $(TLIB_DIR).tmp && rm -rf $(TLIB_DIR) && \
	  mv $(TLIB_DIR).tmp $(TLIB_DIR) && touch $@; }'

$(NPY_TESTS)/.done: $(NPY_DIR)/.done $(TLIB_DIR)/.done
	@rm -rf $(NPY_TESTS) && mkdir -p $(NPY_TESTS)
	ln -s $(NPY_DIR)/tests $(NPY_TESTS)/tests
	ln -s $(TLIB_DIR)/site $(NPY_TESTS)/pylibs
	@touch $@

## test-numpy: numpy's own test suite, natively (Debian's python3-numpy) and
## in the sandbox, printed as one table per module
test-numpy: runtime
	ERYX_NUMPY_FULL=1 $(GO) test -count=1 -timeout 60m -run '^TestNumpyOwnSuite$$' -v ./runtime/sandbox/

## build: the binaries, into ./bin
build: runtime
	$(GO) build -o $(BIN)/ ./cmd/...

## test: everything CI checks
test: runtime testsuite
	$(GO) vet -stdmethods=false ./...
	ERYX_STDLIB_TESTSUITE=$(TS_DIR) $(GO) test $(GOTESTFLAGS) ./...

test-race: runtime
	$(GO) test -race $(GOTESTFLAGS) ./...

## lint: gofmt, go vet and golangci-lint
lint: runtime
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet -stdmethods=false ./...
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VER) run ./...

## bench: the benchmarks: go test -bench (runtime, callbacks, sessions), then
## the platform's end-to-end table (eryx-bench: submit -> result over NATS)
bench: runtime
	$(GO) test -run '^$$' -bench . -benchtime 20x ./runtime/... ./callbacks/... ./kvstate/...
	$(GO) run ./cmd/eryx-bench

## chart-lint: helm lint and helm template of charts/eryx (Helm from the Go
## module proxy), then the chart tests: strict decode into Kubernetes types
HELM ?= $(GO) run helm.sh/helm/v3/cmd/helm@v3.22.0
chart-lint:
	$(HELM) lint --strict charts/eryx
	$(HELM) lint --strict charts/eryx --set nats.enabled=true,nats.auth.mode=token,nats.auth.token=lint,serviceMonitor.enabled=true,networkPolicy.enabled=true
	$(HELM) template eryx charts/eryx >/dev/null
	$(HELM) template eryx charts/eryx --namespace eryx --kube-version 1.31.0 >/dev/null
	! $(HELM) template eryx charts/eryx --kube-version 1.26.0 >/dev/null 2>&1
	$(GO) test -count=1 -timeout 300s ./charts/...

## soak: issue #10's attacks with ordinary jobs against one worker under a
## memory cap, for a few minutes; prints worker peak RSS, outcomes, latency
SOAK_ROUNDS ?= 15
soak: runtime
	ERYX_SOAK_ROUNDS=$(SOAK_ROUNDS) $(GO) test -count=1 -timeout 60m -run '^TestHostileLoad$$' -v ./e2e/

## chaos: issue #13's chaos run: a 3-node JetStream cluster (R3), three
## eryx-worker processes and a callback service under SIGKILLs, rolling
## SIGTERMs, NATS node and callback restarts; fails on any lost, doubled or
## dead-lettered job or a wrong session counter. `make test` runs a shorter
## one (300 jobs, ~40 s) without session jobs (see e2e/chaos_test.go).
CHAOS_JOBS ?= 2000
CHAOS_RATE ?= 20
chaos: runtime
	ERYX_CHAOS_JOBS=$(CHAOS_JOBS) ERYX_CHAOS_RATE=$(CHAOS_RATE) ERYX_CHAOS_SESSIONS=1 $(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./e2e/

## demo: the README's first command: a worker on embedded NATS runs the demo jobs
demo: build
	scripts/demo.sh

## clean: remove build outputs in the tree (the CPython cache stays)
clean:
	rm -rf $(BIN) $(WASM) $(STDLIB) $(WASM_NPY) $(NPY_ZIP) $(NPY_TESTS)

## deps: install the system toolchain (Debian/Ubuntu, needs root or sudo)
deps:
	.ci/install-deps
