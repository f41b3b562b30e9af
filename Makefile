# The commands that matter: `make run` starts the whole stack on this
# machine, `make test` runs every module's tests against real servers.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
MODULES  := ./pkg/... ./services/manager/... ./services/worker/... ./services/notifier/... ./web/... ./tools/... ./examples/custom-worker/...
SERVICES := ./services/manager ./services/worker ./services/notifier
TOOLS    := ./tools/devmongo ./tools/devstack
# One package at a time (-p 1): the integration packages each start servers
# and services, and on two cores they starve each other's deadlines.
TESTFLAGS ?= -p 1 -timeout 20m
FUZZTIME ?= 10s

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: build
build: ## build bin/manager, bin/worker, bin/notifier, bin/devmongo, bin/devstack
	@mkdir -p bin
	$(GO) build -o bin/ $(SERVICES) $(TOOLS)

.PHONY: run
run: build ## run the whole stack locally (beanstalkd, devmongo, manager, workers, notifier)
	bin/devstack

.PHONY: test
test: build ## run every module's tests against real beanstalkd, FerretDB, Chromium and Node (installs what is missing)
	$(GO) run ./tools/needs beanstalkd chromium node
	@mkdir -p artifacts
	DEVMONGO_BIN=$(CURDIR)/bin/devmongo $(GO) test -json -count=1 $(TESTFLAGS) $(MODULES) \
		| tee artifacts/test.json | $(GO) run ./tools/testsummary

.PHONY: bench
bench: build ## measure against raw-client floors: table on stdout, figures in artifacts/bench.json (about 3 min; BENCHFLAGS=-only ingest,...)
	$(GO) build -o bin/ ./tools/loadgen
	bin/loadgen -bin bin -out artifacts/bench.json $(BENCHFLAGS)

.PHONY: fuzz
fuzz: ## run each fuzz target briefly (FUZZTIME=10s)
	@set -e; for pkg in $$($(GO) list $(MODULES)); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
			echo "fuzz $$pkg $$f"; \
			(cd $$dir && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) .); \
		done; \
	done

.PHONY: soak
soak: build ## the soak test at full size: 20,000 jobs, a worker killed and the notifier restarted midway
	SOAK_JOBS=$${SOAK_JOBS:-20000} DEVMONGO_BIN=$(CURDIR)/bin/devmongo $(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./tools/faults/ \
		| grep -v '^\s*time='

.PHONY: smoke
smoke: ## build release binaries as the Dockerfile does and check they serve (deploy/smoke.sh)
	bash deploy/smoke.sh

.PHONY: lint
lint: ## gofmt and go vet in every module
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(MODULES)

.PHONY: clean
clean: ## remove build output, local data and test artifacts
	rm -rf bin data artifacts
