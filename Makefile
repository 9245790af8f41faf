# triton-sidecar: one entry point for tests, the demo and benchmarks.
#
#   make test    every test: Rust unit/integration/process tests, deploy checks, the image, real-Triton e2e
#   make demo    a real Triton, the agent and a load; live gauges, then a graceful scale-down
#
# Each target installs what it needs (Debian packages, a Python venv) on a fresh machine.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: sbom autoscale-venv autoscale-demo autoscale-compare autoscale-coldstart test-autoscale bench fuzz-smoke test test-deps test-rust test-deploy test-image test-e2e build release demo clean venv

# Stages run one after another (timing tests never share the machine with another load), each
# with its duration printed, so CI logs show where the time goes.
test:
	@t_all=$$SECONDS; for s in test-deps test-rust test-deploy test-image test-e2e test-autoscale fuzz-smoke; do \
	  t0=$$SECONDS; echo "=== stage: $$s"; $(MAKE) --no-print-directory $$s; \
	  echo "=== stage: $$s took $$((SECONDS - t0)) s"; done; \
	echo "=== make test took $$((SECONDS - t_all)) s"

## Debian packages the tests call: promtool (prometheus) for `promtool check metrics`.
test-deps:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  echo "installing Debian's prometheus package (promtool)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	fi
	@promtool --version 2>&1 | head -n1

## clippy first, with -D warnings: the [lints] of Cargo.toml (missing_docs, no unwrap/expect
## outside tests) are then enforced, not advisory. tests/floors.rs checks the import floors.
test-rust:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The fuzz targets are a separate crate over the library's API: checked here, so an API
	@# change fails in minutes rather than at the last stage (fuzz-smoke).
	RUSTC_BOOTSTRAP=1 $(CARGO) check --manifest-path fuzz/Cargo.toml
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace

## deploy/ checks 1-3 and 5 (render, schemas, promtool, hadolint, checkov), then check 4:
## every PromQL expression in deploy/ evaluated on a real Prometheus scraping a real Triton + agents.
test-deploy: venv release
	bash tests/deploy/run.sh
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) -m pytest -q -p no:cacheprovider -rs tests/deploy/test_promql_live.py

## docker/Dockerfile built with podman (Debian's podman, buildah, runc; base images stood in for by
## mmdebstrap'ed Debian packages, cached by content), then run: uid 65532 and an OpenShift uid with
## a read-only root and no capabilities, SIGTERM and exec-hook drains, `install`'s copy on Ubuntu
## 22.04 (glibc 2.35); and a broken context that must fail. Needs root. See tests/image/run.sh.
test-image:
	bash tests/image/run.sh

venv:
	bash tests/e2e/setup_venv.sh

## Real Triton: scenarios A/B (test_scenarios.py) and the oracle replay (test_replay.py, which runs
## the `oracle` example: built here, so its build time is not the test's).
test-e2e: venv release
	$(CARGO) build --release --locked --example oracle
	@if [ -f tests/e2e/test_scenarios.py ]; then \
	  TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) -m pytest -q -x tests/e2e; \
	else echo "tests/e2e/test_scenarios.py missing" >&2; exit 1; fi

## libFuzzer on the parser and the derivation, about 60 s each (cargo-fuzz on stable with
## RUSTC_BOOTSTRAP=1; installed when missing). Fails on any crash.
FUZZ_SECONDS ?= 60
fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/smoke.sh

autoscale-venv: venv
	bash tests/autoscale/setup.sh

## Issue 9's comparison, real time: deploy/'s triggers before issue 13 vs raw-Triton PromQL; plot
## and table in target/autoscale/full/ (ARGS=--docs also rewrites docs/autoscaling.md's results).
autoscale-demo: autoscale-venv release
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) tests/autoscale/demo.py --timing full $(ARGS)

## Issue 13's comparison: deploy/'s triggers now, before issue 13, the TRT-LLM tutorial's and
## k8s-onprem's, side by side (same seed) on four scenarios (a spike longer than the scale-down
## window, a slow ramp, the batched model, an unscaled 60 s cold start), after a calibration;
## plots and tables in target/autoscale/compare/ (ARGS=--docs also rewrites docs/autoscaling.md's
## results and docs/autoscaling.png; ARGS="--scenarios spike --sets new,previous" for a part).
autoscale-compare: autoscale-venv release
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) tests/autoscale/compare.py $(ARGS)

## Calibration and proportionality of the capacity gauges (one pod, ~2 min), the shortened loop
## (deploy/'s triggers, scaled timing stated in its output, ~4 min) and the unit tests; 377 s measured.
## Issue 22: scenario (d), a 60 s cold start, on deploy/'s triggers before issue 22 and now, with
## deploy/'s maxReplicaCount 8 (pods capped at the ideal + 2); asserts a desired peak <= ideal + 1
## and 0 failed. Calibration + two runs, one after the other.
autoscale-coldstart: autoscale-venv release
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) tests/autoscale/compare.py --scenarios coldstart --sets before-22,new --lanes 1 --out target/autoscale/coldstart $(ARGS)

test-autoscale: autoscale-venv release
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) -m pytest -q -p no:cacheprovider -rs tests/autoscale

build:
	$(CARGO) build

release:
	$(CARGO) build --release --locked

demo: venv release
	TRITON_SIDECAR_BIN=$(CURDIR)/target/release/triton-sidecar $(PY) tests/e2e/demo.py

## A CycloneDX SBOM of the agent (the crate the image ships: package triton-sidecar, default
## features, the host's target), JSON, in target/sbom/triton-sidecar-<version>.cdx.json. Installs
## cargo-cyclonedx (crates.io, --locked) when missing: a few minutes of compiling on a cold
## machine, so it is not part of `make test`. cargo-cyclonedx writes one BOM beside every
## workspace member's Cargo.toml; only the agent's is kept (tests/fake-nvml is a test double).
SBOM_DIR := target/sbom
SBOM_SPEC ?= 1.5
sbom:
	@command -v cargo-cyclonedx >/dev/null 2>&1 || { echo "installing cargo-cyclonedx"; \
	  $(CARGO) install --locked cargo-cyclonedx; }
	@$(CARGO) cyclonedx --version
	$(CARGO) cyclonedx --manifest-path Cargo.toml --format json --spec-version $(SBOM_SPEC) \
	  --override-filename triton-sidecar-sbom.cdx
	@v=$$($(CARGO) metadata --no-deps --format-version 1 | python3 -c 'import json,sys; \
	  print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="triton-sidecar"))'); \
	  mkdir -p $(SBOM_DIR); mv triton-sidecar-sbom.cdx.json $(SBOM_DIR)/triton-sidecar-$$v.cdx.json; \
	  find . -path ./target -prune -o -name triton-sidecar-sbom.cdx.json -exec rm -f {} +; \
	  python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); m=b["metadata"]["component"]; \
	  print("%s: %s %s, %s %s, %d components" % (sys.argv[1], b["bomFormat"], b["specVersion"], \
	  m["name"], m.get("version"), len(b.get("components") or [])))' $(SBOM_DIR)/triton-sidecar-$$v.cdx.json

clean:
	$(CARGO) clean

## Benchmarks, never part of `make test`: criterion, peers, footprint (~5.5 min), callgrind. ~10 min.
bench:
	$(CARGO) bench --locked --bench parse --bench cycle
	bash benches/peers/run.sh
	bash benches/footprint.sh
	bash benches/profile.sh
