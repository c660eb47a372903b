# The one entry point: every workflow step and every README command is a target here.
# `make` alone lists the targets.

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
# uv from PATH, else bootstrapped from PyPI into .tools/ (the version pinned here).
UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# Python caches compiled modules in the venv. Where the environment says not to (some CI and
# container images set PYTHONDONTWRITEBYTECODE), every process would compile scikit-learn,
# SciPy and pandas again: seconds per command, minutes over a pipeline or the test suite.
unexport PYTHONDONTWRITEBYTECODE
# scikit-learn's and XGBoost's OpenMP threads spin while they wait for work. When other
# processes share the cores (a DVC stage beside the tests, two jobs on one runner), the spinning
# starves them: a 5 s fit took 110 s with three at once on 2 cores; sleeping waiters keep it at 5-8.
export OMP_WAIT_POLICY ?= PASSIVE
PYTEST_ARGS ?=
UV_SYNC_ARGS ?=
# Modules that run before (or without) the project environment use the runner's python3.
STDLIB_PYTHON ?= python3
BASE ?= main
# CML is in maintenance mode; 0.20.6 (2024) is its last release.
CML_VERSION := 0.20.6
# System packages (buildah, kubectl, promtool): root installs them, any other user through
# passwordless sudo (GitHub-hosted runners run jobs as `runner`, which has it).
SUDO := $(if $(filter 0,$(shell id -u)),,$(if $(shell sudo -n true 2>/dev/null && echo yes),sudo -n))
CAN_APT := $(if $(shell command -v apt-get),$(if $(filter 0,$(shell id -u)),yes,$(SUDO)))
APT_INSTALL = $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: help
## Show this help.
help:
	@awk '/^## /{doc=substr($$0,4)} /^[a-z][a-z0-9-]*:/{if(doc){sub(":.*","",$$1); printf "  make %-16s %s\n",$$1,doc; doc=""}}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.PHONY: setup
## Install the locked environment (uv sync --locked, plus UV_SYNC_ARGS) and the git hooks.
setup: | $(UV)
	$(UV) sync --locked $(UV_SYNC_ARGS)
	@# No git hooks in CI: a runner's pushes (GTO tags) must not run `dvc push`.
	@if [ -d .git ] && [ -z "$${CI:-}" ] && command -v pre-commit >/dev/null; then pre-commit install >/dev/null; fi

# DVC remote credentials come from the environment: S3 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
# Azure AZURE_STORAGE_CONNECTION_STRING, both read as they are. GCS (google-auth) reads a key
# *file* named by GOOGLE_APPLICATION_CREDENTIALS: the workflows pass the key itself (secret
# DVC_READ_/DVC_WRITE_GCP_CREDENTIALS) as GOOGLE_APPLICATION_CREDENTIALS_DATA, which
# `cloud-credentials` writes to an owner-only file outside the checkout.
ifneq ($(strip $(GOOGLE_APPLICATION_CREDENTIALS_DATA)),)
export GOOGLE_APPLICATION_CREDENTIALS := $(or $(RUNNER_TEMP),$(CURDIR)/build)/dvc-gcp-credentials.json
endif

.PHONY: cloud-credentials
## Write GOOGLE_APPLICATION_CREDENTIALS_DATA (a GCS key, from a secret) to the file DVC reads.
cloud-credentials:
	@if [ -n "$${GOOGLE_APPLICATION_CREDENTIALS_DATA:-}" ]; then umask 077; \
	  mkdir -p "$$(dirname "$$GOOGLE_APPLICATION_CREDENTIALS")"; \
	  printf '%s' "$$GOOGLE_APPLICATION_CREDENTIALS_DATA" > "$$GOOGLE_APPLICATION_CREDENTIALS"; fi

.PHONY: data
## Pull the data (dvc pull data.dvc); seeds the bundled local remote on first use.
data: setup cloud-credentials
	python -m gitml data

.PHONY: data-access
## Can this run read the DVC remote? (a fork's pull request gets no secrets); step outputs.
data-access:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml data-access

.PHONY: run
## Install, pull the data and run the pipeline (dvc repro).
run: data
	dvc repro

.PHONY: lint
## Check formatting, lint, types, YAML and DVC status (pre-commit on all files; changes nothing).
lint: setup
	pre-commit run --all-files

.PHONY: format
## Rewrite files with the formatter and the linter's safe fixes.
format: setup
	ruff format src tests benchmarks
	ruff check --fix src tests benchmarks

# The workflow harness (tests/workflows: the real workflows run with act), the loop demo and the
# second dataset's fresh clone run beside the rest of the suite (marker `beside`), in two
# processes: they mostly wait on their jobs' installs, servers and image builds, and each works
# on clones of its own. HARNESS_FIRST holds the longest module (the release) with the loop demo
# and the retrain workflow, the second process the rest, so that all three end near each other
# (fresh clone on the 2-core machine, 2026-12-05: the suite 18:04, these 17:01 and 14:35).
# WORKFLOW_TESTS= leaves them all out. (More processes made the whole run longer, 30 min
# against 21: the cores are busy.)
WORKFLOW_TESTS ?= -m beside
HARNESS_FIRST ?= tests/workflows/test_release.py tests/e2e/test_loop_demo.py \
  tests/workflows/test_retrain_workflow.py

.PHONY: test
## Install, pull the data, and run the whole suite: lint, unit, slow end-to-end, workflow harness.
test: data lint k8s-tools monitor-tools cluster-tools
	@mkdir -p build
	@harness=""; if [ -n "$(WORKFLOW_TESTS)" ]; then \
	  pytest -p no:cacheprovider --durations=0 $(WORKFLOW_TESTS) $(HARNESS_FIRST) \
	    > build/workflow-tests-1.log 2>&1 & harness="$$!"; \
	  pytest -p no:cacheprovider --durations=0 $(WORKFLOW_TESTS) $(addprefix --ignore=,$(HARNESS_FIRST)) \
	    > build/workflow-tests-2.log 2>&1 & harness="$$harness $$!"; \
	  echo "workflow harness running beside the suite (pids $$harness, logs build/workflow-tests-*.log)"; fi; \
	status=0; pytest -m "not beside" --durations=15 $(PYTEST_ARGS) || status=$$?; \
	for pid in $$harness; do wait $$pid || status=$$((status ? status : $$?)); done; \
	if [ -n "$$harness" ]; then for log in build/workflow-tests-1.log build/workflow-tests-2.log; do \
	  echo "--- workflow harness ($$log) ---"; cat $$log; done; fi; \
	exit $$status

# What a pull request waits for (pr.yml): lint and the fast suite, unless the change touches
# what the heavy suites exercise (gitml.pull_requests.suites lists those paths); then all of
# `make test`. PR_BASE is what the change is judged against: pr.yml passes the merge commit's
# first parent; locally, BASE (main).
PR_BASE ?= $(BASE)

.PHONY: test-pr
## The pull request's check: lint and the fast suite, or all of `make test` if the change needs it.
# (Only make runs in the recipe: a line that calls $(MAKE) runs even under `make -n`.)
test-pr: data
	@if [ "$$(PYTHONPATH=src $(STDLIB_PYTHON) -m gitml suites --base '$(PR_BASE)')" = all ]; then \
	  $(MAKE) --no-print-directory test; else $(MAKE) --no-print-directory lint test-fast; fi

.PHONY: test-fast
## Only the fast unit tests (installs kubectl and promtool, which some of them run).
test-fast: setup k8s-tools monitor-tools
	pytest -m "not slow" $(PYTEST_ARGS)

# Each test in a process of its own finds what it leans on from earlier tests (a fixture, a
# global, a port); random order finds the rest (pytest --random-order, pytest-random-order).
ALONE_JOBS ?= 2
.PHONY: test-alone
## Run each fast unit test alone, in its own pytest process (ALONE_JOBS at a time); name failures.
test-alone: data
	@pytest --collect-only -q -m "not slow" $(PYTEST_ARGS) | grep '::' \
	  | xargs -d '\n' -P $(ALONE_JOBS) -I{} sh -c \
	    'pytest -q -p no:cacheprovider "$$1" > /dev/null 2>&1 || { echo "fails alone: $$1"; exit 1; }' \
	    _ {} && echo "every fast test passes alone"

# DVC asks a question when an unchanged stage's output is in no cache ("Missing cache for
# directory ... continue?"); without a terminal it takes "no" and rebuilds the stage. CI targets
# pipe its output so that holds wherever they run (act gives steps a terminal nobody answers).
NO_PROMPT := | cat

# The stages train-ci reproduces, with their upstream; empty: all. A pull request needs only
# what its report reads (TRAIN_STAGES=evaluate): packaging is the release's job.
TRAIN_STAGES ?=
.PHONY: train-ci
## CI training: pull data and main's outputs/run-cache from the DVC remote, reproduce the rest.
train-ci: data
	@# No --allow-missing: an output the remote lacks (a fresh fork's bundled remote holds only
	@# the data) is rebuilt, not a "missing cache files" failure.
	dvc repro --pull $(TRAIN_STAGES) $(NO_PROMPT)

.PHONY: report
## Write reports/pr/report.md (+ figures) comparing the workspace with BASE (default: main).
report: setup
	python -m gitml report --base "$(BASE)"

.PHONY: publish-outputs
## Push data, pipeline outputs and the run-cache to the DVC remote (trusted runs on main only).
publish-outputs: setup cloud-credentials
	dvc push --run-cache

.PHONY: pick-runner
## Choose the pull request's training runner (prints GitHub step outputs).
pick-runner:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml runner

.PHONY: install-cml
## Install the CML CLI from npm, unless this version is already on PATH.
install-cml:
	@if [ "$$(cml --version 2>/dev/null)" = "$(CML_VERSION)" ]; then echo "cml $(CML_VERSION) is installed"; \
	else $(SUDO) npm install --global --ignore-scripts "@dvcorg/cml@$(CML_VERSION)"; fi

.PHONY: cloud-runner
## Launch a one-job cloud GPU runner with CML (needs REPO_TOKEN and cloud credentials).
cloud-runner:
	cml runner launch --cloud="$(CML_CLOUD)" \
	  --cloud-region="$(or $(CML_CLOUD_REGION),us-west)" \
	  --cloud-type="$(or $(CML_CLOUD_TYPE),g4dn.xlarge)" \
	  $(if $(CML_CLOUD_GPU),--cloud-gpu="$(CML_CLOUD_GPU)") \
	  --labels=cml-gpu --single --idle-timeout=600

.PHONY: comment
## Post REPORT_DIR/report.md on its pull request with CML (the pr-comment workflow).
comment:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml comment

IMAGE ?= localhost/gitml-serving:latest
IMAGE_CONTEXT := build/image
# The model's name is its entry under `artifacts:` in dvc.yaml, the one place it is written
# (gitml.config.model_name reads it too). Renaming the model is renaming that key.
MODEL_NAME := $(shell awk '/^artifacts:/ {found = 1; next} found && /^  [a-z0-9]/ {sub(/:.*/, ""); print $$1; exit}' dvc.yaml)
# The model version: the one registered at HEAD (a re-run of a release, or a later merge
# registered meanwhile, must not take another commit's), else the latest GTO version (git
# tags), else the commit. The venv's gto by path: $(shell) does not see the PATH exported above
# (make < 4.4), and `git describe` would answer with a tag name (NAME@v0.0.1).
HEAD_VERSION = $(shell git tag --points-at HEAD --list '$(MODEL_NAME)@v*' --sort=-version:refname 2>/dev/null | head -n 1 | sed 's/^.*@//')
MODEL_VERSION ?= $(or $(HEAD_VERSION),$(shell $(VENV)/bin/gto show $(MODEL_NAME)@latest --version 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unversioned))
ENV ?= staging
# The local environments' ports (gitml.release.deploy reads the same variables).
STAGING_PORT := $(or $(GITML_STAGING_PORT),8081)
PRODUCTION_PORT := $(or $(GITML_PRODUCTION_PORT),8082)
# On GitHub a deploy job passes the environments' URLs (variables STAGING_URL, PRODUCTION_URL;
# `make deploy-preflight` refuses a missing one); locally, the local target's loopback ports.
ENV_URL = $(if $(filter production,$(ENV)),$(PRODUCTION_URL),$(if $(filter staging,$(ENV)),$(STAGING_URL)))
SMOKE_URL ?= $(or $(ENV_URL),http://127.0.0.1:$(if $(filter production,$(ENV)),$(PRODUCTION_PORT),$(STAGING_PORT)))
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: package
## Run the pipeline up to the MLEM-packaged model (dvc repro package).
package: data
	dvc repro package

.PHONY: image-context
## Prepare build/image/: hashed serving wheels, the project wheel and the MLEM model.
image-context: package
	rm -rf $(IMAGE_CONTEXT)/dist $(IMAGE_CONTEXT)/model
	mkdir -p $(IMAGE_CONTEXT)/wheels
	$(UV) export --locked --no-default-groups --no-dev --no-emit-project --quiet \
	  -o $(IMAGE_CONTEXT)/requirements.txt
	python -m pip download --quiet --only-binary=:all: --no-deps --no-index \
	  --find-links $(IMAGE_CONTEXT)/wheels -r $(IMAGE_CONTEXT)/requirements.txt \
	  -d $(IMAGE_CONTEXT)/wheels 2>/dev/null \
	|| python -m pip download --quiet --only-binary=:all: --no-deps \
	  -r $(IMAGE_CONTEXT)/requirements.txt -d $(IMAGE_CONTEXT)/wheels
	$(UV) build --quiet --wheel -o $(IMAGE_CONTEXT)/dist .
	cp -r artifacts/mlem $(IMAGE_CONTEXT)/model

.PHONY: image-tools
## Docker if it works; else install buildah and debootstrap when missing (Debian, as root).
image-tools:
	@docker info >/dev/null 2>&1 || { command -v buildah && command -v debootstrap; } >/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) buildah debootstrap >/dev/null; \
	  else echo "make image needs buildah and debootstrap: install them (apt-get install buildah debootstrap)"; exit 1; fi; }

.PHONY: image
## Build the serving image from the Dockerfile (docker, or buildah where there is no daemon).
image: image-tools image-context
	python -m gitml image build --context $(IMAGE_CONTEXT) --tag $(IMAGE) \
	  --model-version "$(MODEL_VERSION)" --git-commit "$(GIT_COMMIT)"

.PHONY: audit
## pip-audit the serving dependencies (strict; justified ignores in .pip-audit-ignore).
audit: setup
	mkdir -p build/audit
	$(UV) export --locked --no-default-groups --no-dev --no-emit-project --quiet \
	  -o build/audit/requirements.txt
	python -m gitml audit --requirements build/audit/requirements.txt

# PUSH=true: also push the tag to origin (CI: with GITHUB_TOKEN, retrying when a concurrent
# run took the same version number). Without a git identity, tags are made as GitHub's bot.
PUSH ?=

.PHONY: register
## Register the model at HEAD as the next GTO version (a git tag NAME@vX.Y.Z); PUSH=true pushes it.
register: setup
	python -m gitml registry register --name $(MODEL_NAME) $(if $(VERSION),--version $(VERSION)) \
	  $(if $(filter true,$(PUSH)),--push)

.PHONY: assign
## Record in git that VERSION (default: latest) is in ENV (a GTO stage tag); PUSH=true pushes it.
assign: setup
	python -m gitml registry assign --name $(MODEL_NAME) --stage $(ENV) \
	  --version "$(or $(VERSION),$(MODEL_VERSION))" $(if $(filter true,$(PUSH)),--push)

# GATE_OVERRIDE="why" (or a `Gate-Override: why` trailer in HEAD's commit message) releases a
# refused model; `register` writes the reason into the version's tag (REGISTER_MESSAGE).
# GATE_ADVISORY=true reports the verdict without failing (the pull-request report).
export GATE_OVERRIDE REGISTER_MESSAGE
GATE_ADVISORY ?=

.PHONY: gate
## The trained model vs the one GTO has in production (fetched with dvc get), on the test split;
## exits 1 when it is worse beyond params' gate.tolerance. GATE_OVERRIDE="why" releases it anyway.
gate: data
	dvc repro evaluate $(NO_PROMPT)
	python -m gitml gate --name $(MODEL_NAME) $(if $(filter true,$(GATE_ADVISORY)),--advisory)

.PHONY: deploy
## Deploy the packaged model to ENV (staging|production) on the local target (loopback ports).
deploy: package
	python -m gitml deploy deploy --env $(ENV) --version "$(or $(VERSION),$(MODEL_VERSION))"

.PHONY: smoke
## Smoke-check ENV (or SMOKE_URL): health, version, golden predictions, latency.
smoke: setup
	@# the shared secret that marks the checks synthetic: the environment's, else the local deploy's
	GITML_SYNTHETIC_TOKEN="$${GITML_SYNTHETIC_TOKEN:-$$(cat "$${GITML_DEPLOY_DIR:-.deploy}/synthetic-token" 2>/dev/null)}" \
	python -m gitml smoke --url "$(SMOKE_URL)" $(if $(VERSION),--version $(VERSION))

.PHONY: promote
## Deploy staging's exact release to production (local target).
promote: setup
	python -m gitml deploy promote

.PHONY: rollback
## Return ENV (default production) to its previous release (local target).
rollback: ENV = production
rollback: setup
	python -m gitml deploy rollback --env $(ENV)

.PHONY: status
## Show what each local environment serves.
status: setup
	python -m gitml deploy status

.PHONY: release-version
## Print the model version (GTO) and the registry image name as GitHub step outputs.
release-version: setup
	python -m gitml registry release-info --name $(MODEL_NAME) --version "$(MODEL_VERSION)"

.PHONY: release-from-tag
# Refused for production when the version never passed staging and the tag gives no reason.
## From a GTO stage tag (TAG=NAME#production#N): its stage, version and image digest.
release-from-tag: setup
	python -m gitml registry from-tag --name $(MODEL_NAME) --tag "$(TAG)"
	python -m gitml promotion check --name $(MODEL_NAME) --tag "$(TAG)"

.PHONY: stage-passed
## Record that VERSION (image IMAGE_REF) passed ENV's checks and serves there (a GTO stage tag).
stage-passed: setup
	python -m gitml promotion record --name $(MODEL_NAME) --stage $(ENV) --version "$(VERSION)" \
	  --image "$(IMAGE_REF)" $(if $(filter true,$(PUSH)),--push)

.PHONY: deploy-preflight
## Before a deploy job changes anything: are the cluster secret and the smoke URL of ENV set?
deploy-preflight:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml preflight --env $(ENV)

.PHONY: kubeconfig
## Write KUBECONFIG_DATA (a secret) to the kubeconfig file kubectl reads.
kubeconfig:
	@umask 077; mkdir -p "$$HOME/.kube"; printf '%s' "$${KUBECONFIG_DATA:?set the secret KUBECONFIG (passed as KUBECONFIG_DATA)}" > "$$HOME/.kube/config"

.PHONY: k8s-deploy
# Blue/green (gitml.release.k8s): the candidate starts beside the live version, is smoke-checked
# on its preview Service, and only then takes traffic. ROLLOUT_TIMEOUT (default 10m): how long
# it may take to become ready.
## Deploy IMAGE_REF (name@sha256:...) and VERSION to the Kubernetes ENV, blue/green.
k8s-deploy: setup k8s-tools
	python -m gitml k8s apply --env $(ENV) --image "$(IMAGE_REF)" --version "$(VERSION)"

.PHONY: k8s-rollback
## Return the Kubernetes ENV to PREVIOUS_IMAGE/PREVIOUS_VERSION (k8s-deploy's step outputs).
k8s-rollback: setup k8s-tools
	python -m gitml k8s rollback --env $(ENV) --image "$(PREVIOUS_IMAGE)" \
	  --version "$(PREVIOUS_VERSION)"

.PHONY: golden
## The golden cases of the packaged model at HEAD (pulled from the DVC remote, else rebuilt).
golden: data
	dvc repro --pull package $(NO_PROMPT)

.PHONY: k8s-tools
## kubectl, whose built-in kustomize renders deploy/k8s (apt's kubernetes-client when missing).
k8s-tools:
	@command -v kubectl >/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) kubernetes-client >/dev/null; \
	  else echo "kubectl is missing: install it (Debian: apt-get install kubernetes-client)" >&2; exit 1; fi; }

.PHONY: k8s-render
## Render the Kubernetes manifests of ENV (staging|production) with kustomize.
k8s-render: k8s-tools
	kubectl kustomize deploy/k8s/overlays/$(ENV)

.PHONY: cluster-tools
## podman, runc and docker-registry: the local cluster and registry (Debian's, when missing).
cluster-tools: k8s-tools image-tools
	@{ command -v podman && command -v runc && command -v docker-registry; } >/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) podman runc docker-registry >/dev/null; \
	  else echo "install podman, runc and docker-registry (Debian: apt-get install podman runc docker-registry)" >&2; exit 1; fi; }

# The local cluster's loopback ports (0: spare ones, printed): GITML_CLUSTER_PORTS="staging=8091
# production=8092" fixes each environment's live Service.
LOCAL_SERVICE_PORTS = $(foreach pair,$(GITML_CLUSTER_PORTS),--service-port gitml-$(subst =,/gitml-serving=,$(pair)))

.PHONY: local-cluster
## Run a registry and a Kubernetes-like cluster (podman) on this machine until Ctrl-C.
local-cluster: setup cluster-tools
	python -m gitml cluster serve $(LOCAL_SERVICE_PORTS)

.PHONY: local-release
## Rehearse the release on a local registry and cluster: the image pushed, staging, production.
local-release: image cluster-tools
	python -m gitml cluster rehearse --version "$(MODEL_VERSION)" $(LOCAL_SERVICE_PORTS)

PREDICTION_LOGS ?= .deploy/predictions/$(ENV)
ACTUALS ?= .deploy/actuals/$(ENV)
MONITOR_DIR ?= reports/monitor

.PHONY: replay
## Stream the production split (held out of training) to local ENV as HTTP traffic; deploys it if down.
replay: package
	python -m gitml deploy deploy --env $(ENV) --version "$(MODEL_VERSION)" --if-down
	python -m gitml replay --url $(SMOKE_URL) --actuals $(ACTUALS)

.PHONY: calibrate
## The monitor's limits for the current model (dvc repro calibrate: docs/guide/monitoring.md).
calibrate: data
	dvc repro --pull calibrate $(NO_PROMPT)

.PHONY: monitor
## Drift and quality of ENV's recent predictions vs training (evidently, calibrated limits); make exits 2 on an alarm or an unjudgeable log.
monitor: calibrate
	python -m gitml monitor --logs $(PREDICTION_LOGS) --actuals $(ACTUALS) --out $(MONITOR_DIR) \
	  --env $(ENV)

.PHONY: feedback
## Add ENV's labelled predictions (SINCE/UNTIL: event times) to data/ as a new DVC version, pushed.
feedback: data
	python -m gitml feedback --logs $(PREDICTION_LOGS) --actuals $(ACTUALS) \
	  $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)")

# The retraining branch's pull request: RETRAIN_TOKEN (App or fine-grained PAT) makes GitHub
# run its checks; GITHUB_TOKEN alone opens it without (README: "Retraining").
RETRAIN_PR ?= true

.PHONY: retrain-pr
## Branch retrain/ENV-<time>: ENV's new labelled rows as a data version, retrained; push, open a PR.
retrain-pr: data
	python -m gitml retrain --env $(ENV) --logs $(PREDICTION_LOGS) --actuals $(ACTUALS) --base $(BASE) \
	  $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)") \
	  $(if $(filter true,$(RETRAIN_PR)),--push --pull-request,--no-push --no-pull-request)

.PHONY: retrain-trigger
## Start the retrain workflow when MONITOR_DIR/summary.json has a quality alarm (GITHUB_TOKEN).
retrain-trigger:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml trigger --env "$(ENV)" --reports $(MONITOR_DIR)

.PHONY: fetch-logs
## Copy ENV's prediction log from PREDICTION_LOGS_URL (and ACTUALS_URL); unset: says so, exit 0.
fetch-logs: setup cloud-credentials
	python -m gitml fetch-logs --env $(ENV) --logs $(PREDICTION_LOGS) --actuals $(ACTUALS)

.PHONY: monitor-issue
## Open, update or close ENV's monitoring issue from MONITOR_DIR/summary.json (GITHUB_TOKEN).
monitor-issue:
	PYTHONPATH=src $(STDLIB_PYTHON) -m gitml notify --env "$(ENV)" --reports $(MONITOR_DIR)

.PHONY: monitor-tools
## promtool and a Pushgateway, for the alerting tests (Debian's packages when missing).
monitor-tools:
	@{ command -v promtool && command -v prometheus-pushgateway; } >/dev/null || { \
	  if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) prometheus prometheus-pushgateway >/dev/null; \
	  else echo "install promtool and the Pushgateway (Debian: apt-get install prometheus prometheus-pushgateway)" >&2; exit 1; fi; }

.PHONY: bench
## Print pipeline timings: cold `make run` in a fresh clone, no-op `dvc repro`, training.
bench: setup
	python -m benchmarks.pipeline

.PHONY: bench-tests
## Print how long the checks take on a fresh clone: WHAT=pr (an experiment's PR), all (make test), both.
bench-tests: setup
	python -m benchmarks.test_times $(or $(WHAT),pr)

.PHONY: bench-serving
## Serving speed and memory: wrk and an open loop, attacks, the batch CLI, the image, MLEM's server and the bare stack side by side (GITML_BENCH_BASELINE=<ref>: before/after).
bench-serving: package
	@command -v wrk >/dev/null || { if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) wrk >/dev/null; \
	  else echo "bench-serving needs wrk: apt-get install wrk"; exit 1; fi; }
	python -m benchmarks.serving

.PHONY: loop-demo
## The loop in a scratch clone: v1 serves, replay, alarm, retrain branch, gate, v2 promoted, watched.
loop-demo: data
	python -m benchmarks.loop_demo

.PHONY: bench-monitor
## The alarm on three datasets: false-alarm and detection rates of injected faults, per window.
bench-monitor: calibrate
	python -m benchmarks.monitor_windows

.PHONY: clean
## Remove pipeline outputs and caches (keeps data and the environment).
clean:
	rm -rf artifacts/data/*.parquet artifacts/model artifacts/mlem build .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

.PHONY: mutation
## Mutation testing (mutmut) of the core modules with the fast tests: score per module, survivors.
mutation: data k8s-tools
	rm -rf mutants
	python -m benchmarks.mutation

.PHONY: docs
## Build the documentation site into build/site (mkdocs build --strict: a broken link fails).
docs: setup
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir build/site

.PHONY: docs-serve
## Serve the documentation site on 127.0.0.1:DOCS_PORT (default 8000), rebuilt on each edit.
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 mkdocs serve --dev-addr 127.0.0.1:$(or $(DOCS_PORT),8000)

.PHONY: docs-pictures
## Remake docs/img from real runs in a scratch clone: a PR report, the monitor's (chromium).
docs-pictures: data
	@command -v chromium >/dev/null || { if [ -n "$(CAN_APT)" ]; then $(APT_INSTALL) chromium >/dev/null; \
	  else echo "docs-pictures needs chromium: apt-get install chromium"; exit 1; fi; }
	python -m benchmarks.docs_pictures
