# digits-serving: the verbs of the contract. `make test` and `make serve` do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DATA_DIR ?= ../shared/datasets/mnist

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SERVE_ARGS ?=

.PHONY: install install-train system-deps serve test lint typecheck train evaluate clean proto \
	proto-check

# The service, its client and the test tools; no torch.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@

# The training extra on top (torch==2.13.0, the CPU build, installs from local disk).
install-train: $(VENV)/.installed-train
$(VENV)/.installed-train: $(VENV)/.installed
	$(PIP) install -e '.[dev,train]'
	touch $@

# perf_analyzer (shipped in tritonclient) needs Debian's libb64 to start.
system-deps:
	@ldconfig -p | grep -q 'libb64.so.0d' || { \
	  echo "installing libb64-0d (for perf_analyzer)"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends libb64-0d \
	  || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends libb64-0d; }; }

# The committed models on :8001 (gRPC) and :8002 (metrics); SERVE_ARGS adds flags.
serve: install
	$(PY) -m service --model-store model_store $(SERVE_ARGS)

lint: install
	$(VENV)/bin/ruff check service training tests scripts benchmarks
	$(VENV)/bin/ruff format --check service training tests scripts benchmarks

typecheck: install-train
	$(VENV)/bin/mypy service training scripts

test: install-train system-deps proto-check lint typecheck
	$(PY) -m pytest -q

train: install-train
	$(PY) -m training --model all --out model_store --data-dir $(DATA_DIR)

evaluate: install-train
	$(PY) -m training.evaluate --model convnet
	$(PY) -m training.evaluate --model mlp

# The gRPC code in service/_proto, from protos/ (committed; see scripts/gen_proto.py).
proto: install
	$(PY) scripts/gen_proto.py --out service/_proto

# Fails when service/_proto differs from what protos/ generates now.
proto-check: install
	$(PY) scripts/gen_proto.py --check --out service/_proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache reports
