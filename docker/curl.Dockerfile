# A small HTTP client for in-cluster checks (the seed's `kubectl run curl ... -- curl ...`).
#   docker build -f docker/curl.Dockerfile -t kaito-py/curl:dev .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN command -v curl >/dev/null \
 || (apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
     && rm -rf /var/lib/apt/lists/*)
USER 65532:65532
ENTRYPOINT ["curl"]
