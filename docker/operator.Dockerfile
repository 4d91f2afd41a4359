# The operator image: kaito-operator (workspace + machine controllers) and, in the same image,
# the admission webhook (python -m kaito.webhook serve), as charts/kaito runs them.
#   docker build -f docker/operator.Dockerfile -t kaito-py/operator:0.1.0 .
# Not built in CI here (no Docker engine); the same package is what hack/test installs.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# non-root, as the chart's securityContext expects (runAsNonRoot, read-only root filesystem)
USER 65532:65532
ENTRYPOINT ["kaito-operator"]
