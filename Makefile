# readmit: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.lock)
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := true
export BENTOML_DO_NOT_TRACK := true
export WHYLOGS_NO_ANALYTICS := 1
# XGBoost/OpenMP threads spin while idle by default: on 2 shared cores that is ~6x slower.
export OMP_WAIT_POLICY := PASSIVE
# Prefect's temporary local API migrates its database on first start: >20 s on 2 busy cores.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet -p $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet -p $(BIN)/python --no-deps -e .
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install the locked dependencies and readmit

.PHONY: lock
lock: ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

.PHONY: run
run: install ## The main job on embedded defaults: train, serve, replay with drift, retrain, promote
	$(BIN)/readmit run

.PHONY: system
system: ## Debian packages the tests and the stack need (idempotent; fast when all are present)
	@bash deployments/local/install.sh

.PHONY: test
test: install system ## Run the whole test suite (installs what it needs first)
	$(BIN)/pytest -q

.PHONY: lint
lint: install ## ruff lint + format check, mypy on src/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src/readmit src/readmit_cli.py

# The scanners of `make audit` live in their own venv, pinned with hashes (deployments/audit/).
AUDIT_TOOLS := $(VENV)/audit-tools
AUDIT_LOCK := deployments/audit/tools.lock

$(AUDIT_TOOLS)/.installed: $(AUDIT_LOCK) $(VENV)/.installed
	@test -x $(AUDIT_TOOLS)/bin/python || $(BIN)/uv venv --quiet -p $(BIN)/python $(AUDIT_TOOLS)
	$(BIN)/uv pip install --quiet -p $(AUDIT_TOOLS)/bin/python --require-hashes -r $(AUDIT_LOCK)
	@touch $@

.PHONY: lock-audit
lock-audit: install ## Re-resolve the scanners' lock (deployments/audit/tools.lock) from tools.in
	$(BIN)/uv pip compile deployments/audit/tools.in -p 3.11 --generate-hashes -o $(AUDIT_LOCK)

.PHONY: audit
audit: install $(AUDIT_TOOLS)/.installed ## Supply chain: SBOM, bandit, secrets, pip-audit vs deployments/audit/findings.toml; AUDIT_ARGS=--require-vulnerability-scan
	$(BIN)/python -m readmit.ops.audit_checks --tools $(AUDIT_TOOLS)/bin $(AUDIT_ARGS)

.PHONY: bench-training
bench-training: install ## Benchmark: whole training flow on the full data
	$(BIN)/python benchmarks/training.py

.PHONY: bench-scaleout
bench-scaleout: install ## Benchmark: same XGBoost candidates in-process vs on a Dask LocalCluster
	$(BIN)/python benchmarks/scaleout.py

.PHONY: bench-serving
bench-serving: install ## Benchmark: in-process limit, the bento over HTTP, FastAPI baseline, 60 s load
	$(BIN)/python benchmarks/serving.py

.PHONY: bench-drift
bench-drift: install ## Benchmark: false alarms, detection per scenario and strength, monitoring cost
	$(BIN)/python benchmarks/drift.py

.PHONY: bench-operations
bench-operations: install ## Benchmark: cold make up, training local vs S3, inbox to retraining run
	$(BIN)/python benchmarks/operations.py

.PHONY: bench-quality
bench-quality: install ## Benchmark: model quality on the patient-disjoint holdout (no Prefect)
	$(BIN)/python benchmarks/model_quality.py

.PHONY: up
up: install ## Start the local stack on 127.0.0.1 (Prefect server+worker, S3, Prometheus); UP_ARGS="--db postgres --artifacts s3"
	$(BIN)/python deployments/local/services.py up $(UP_ARGS)

.PHONY: down
down: install ## Stop the local stack (DOWN_ARGS=--purge also deletes .run/ data)
	$(BIN)/python deployments/local/services.py down $(DOWN_ARGS)

.PHONY: status
status: install ## What runs where, with the UI URLs
	$(BIN)/python deployments/local/services.py status

.PHONY: deploy
deploy: install ## Apply prefect.yaml to the running Prefect server (prefect deploy --all)
	$(BIN)/python deployments/local/services.py deploy

.PHONY: clean
clean: ## Remove local artifacts and the model store (keeps .venv)
	rm -rf artifacts .bentoml .pytest_cache
