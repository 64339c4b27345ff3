# mqfleet — entry points (kubebuilder-style). `make up` and `make test` are the two
# a newcomer needs; everything installs what it is missing by itself.

CARGO  ?= cargo
PHASE  := hack/phase.sh
TESTBED = target/debug/mq-testbed
export MQFLEET_TESTBED_DIR ?= $(CURDIR)/.testbed

.PHONY: all deps build images images-load up env down status test unit e2e lint fmt clippy crds deploy bench fuzz clean distclean

all: build

## deps: apt packages (incl. umoci, skopeo, docker-registry), Kubernetes v1.20.2 control plane binaries and helm (cached in ~/.cache/mqfleet)
deps:
	@$(PHASE) deps-k8s bash tests/scripts/install-k8s.sh
	@$(PHASE) deps-helm bash tests/scripts/install-helm.sh
	@$(PHASE) deps-validate bash tests/scripts/install-kubernetes-validate.sh
	@$(PHASE) deps-image-tools bash tests/scripts/install-image-tools.sh

## build: every binary of the workspace
build:
	$(CARGO) build --workspace --bins

## images: OCI images of mq-operator, mq-broker, mq-console under target/images/ (daemonless,
## umoci; see images/README.md). PROFILE=debug|release (default debug), TAG (default: version)
PROFILE ?= debug
images:
	@bash tests/scripts/install-image-tools.sh
	$(CARGO) build $(if $(filter release,$(PROFILE)),--release) -p mq-operator -p mq-broker -p mq-console --bins
	PROFILE=$(PROFILE) bash images/build.sh

## images-load: make images, then load them into the testbed's image store (up or not), so
## Pods of mqfleet/<binary>:<version> run them (mqfleet/<binary>:dev runs the workspace build)
images-load: images
	$(CARGO) build -p mq-testbed --bins
	@for b in mq-operator mq-broker mq-console; do $(TESTBED) image load target/images/$$b || exit 1; done

## up: a local platform on this machine: the testbed (control plane on loopback, 3 nodes
## running Pods as processes), `helm install` of charts/mqfleet (images mqfleet/<binary>:dev
## run the binaries built here), a Ready quickstart instance, and what to paste next
up:
	@export MQFLEET_UP_START=$$(date +%s%3N) && $(MAKE) --no-print-directory deps build && bash hack/up.sh

## env: the export lines for the running platform (eval "$$(make -s env)")
env:
	@bash hack/up.sh --env

## down: stop exactly what `make up` started
down:
	@if [ -x $(TESTBED) ]; then $(TESTBED) down; else echo "nothing to stop (no $(TESTBED))"; fi

## status: what `make up` runs
status:
	$(TESTBED) status

## test: what CI runs — install, fmt, clippy, unit tests, end-to-end suites (each phase timed).
## The tests run with the package selection they were built with (`--workspace`): cargo
## unifies features over the selected packages, so `-p mq-testbed` or `--exclude` would
## build tokio, hyper, kube and every test binary again with other features (~4.5 min).
## Packages run in name order: mq-broker, mq-console, mq-operator, then mq-testbed's
## end-to-end suites; doc tests last.
test: deps
	@$(PHASE) fmt $(CARGO) fmt --all -- --check
	@$(PHASE) clippy $(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(PHASE) build-bins $(CARGO) build --workspace --bins
	@$(PHASE) build-tests $(CARGO) test --workspace --no-run
	@$(PHASE) tests $(CARGO) test --workspace

## unit: the unit and broker-process tests only (no testbed); e2e: the testbed suites only
## (each builds what its selection needs; `make test` runs both from one build)
unit:
	$(CARGO) test --workspace --exclude mq-testbed
e2e: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test -p mq-testbed

## lint: fmt and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ from the Rust types, and the chart's copy (tests fail when they differ)
crds:
	$(CARGO) run -q -p mq-operator -- crds --out-dir crds
	rm -f charts/mqfleet/files/crds/*.yaml
	cp crds/*.yaml charts/mqfleet/files/crds/

## deploy: render deploy/ (what the testbed suites apply) from charts/mqfleet with its
## testbed values (a test fails when they differ)
deploy: deps
	bash hack/render-deploy.sh deploy

## bench: broker throughput/latency (release build; a standalone broker child per run, ~2 min on 2 cores),
## then the operator on a fresh testbed (apply→Ready, 1,000 topics→Ready, idle RSS/CPU/writes),
## then the console on a fresh testbed (signed listInPage req/s and p99 with 1,000 topics, create→serving)
BENCH_BIN  = target/release/mq-broker
BENCH_ARGS ?= --standalone --duration-secs 15 --paced-secs 8 --overload-secs 8
bench: deps
	$(CARGO) build --release -p mq-broker
	@echo "== async flush =="
	@$(BENCH_BIN) bench $(BENCH_ARGS) --flush async
	@echo "== sync flush =="
	@$(BENCH_BIN) bench $(BENCH_ARGS) --flush sync
	@echo "== load shedding: 512 sends in flight against a 5 ms SYSTEM_BUSY bound =="
	@$(BENCH_BIN) bench --standalone --duration-secs 0 --overload-secs 8 --max-send-wait-ms 5
	@echo "== scheduled messages: 1,000,000 pending 1 h ahead (sends/s, RSS), 200,000 due at once (deliveries/s) =="
	@$(BENCH_BIN) bench --standalone --scheduled 1000000 --scheduled-due 200000 --size 256
	@echo "== operator on the testbed (release images) =="
	$(CARGO) build --release -p mq-testbed -p mq-operator -p mq-broker -p mq-console --bins
	@target/release/mq-operator-bench --topics 1000 --idle-secs 300
	@echo "== console on the testbed (release images): signed listInPage with 1,000 topics, create → serving =="
	@target/release/mq-console-bench --topics 1000 --secs 15

## fuzz: every cargo-fuzz target of fuzz/ (frame, header, batch, stored_message, fastjson,
## acl; the startup files consume_queue, index, checkpoint, timer_store, state_json) for
## FUZZ_SECONDS each (default 180), on the pinned stable toolchain (--sanitizer
## none); prints runs and time per target and fails on a crash (input in fuzz/artifacts/).
## FUZZ_TARGETS picks targets. Not part of `make test`, which replays fuzz/corpus/ instead.
FUZZ_SECONDS ?= 180
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash hack/fuzz.sh

## clean: stop the testbed and remove its data (not the build)
clean: down
	rm -rf "$(MQFLEET_TESTBED_DIR)"

## distclean: clean, and remove the build too
distclean: clean
	$(CARGO) clean
