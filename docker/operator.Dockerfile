# The operator image: kaito-operator (workspace + machine controllers) and, in the same image,
# the admission webhook (python -m kaito.webhook serve), as charts/kaito runs them.
#   docker build -f docker/operator.Dockerfile -t kaito-py/operator:0.1.0 .
# hack/images builds it here without a Docker engine, from wheels built on the host
# (--build-context wheels=DIR holding kaito_py-*.whl and its dependencies).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The wheels to install from: empty unless the build supplies a context named "wheels".
FROM scratch AS wheels

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=bind,from=wheels,target=/wheels \
    python3 -m venv /opt/venv \
 && if ls /wheels/kaito_py-*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links /wheels kaito-py; \
    else \
      /opt/venv/bin/pip install .; \
    fi

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
RUN kaito-operator --help >/dev/null
# non-root, as the chart's securityContext expects (runAsNonRoot, read-only root filesystem)
USER 65532:65532
ENTRYPOINT ["kaito-operator"]
