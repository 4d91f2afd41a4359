# A small HTTP client for in-cluster checks (the seed's `kubectl run curl ... -- curl ...`).
#   docker build -f docker/curl.Dockerfile -t kaito-py/curl:dev .
# Like curlimages/curl, which the seed names: arguments that are a command run as one
# (`-- curl -X POST ...`), anything else is curl's (`-- -sS http://...`).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN command -v curl >/dev/null \
 || (apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
     && rm -rf /var/lib/apt/lists/*)
RUN printf '%s\n' '#!/bin/sh' \
      'if [ "$#" -gt 0 ] && command -v "$1" >/dev/null 2>&1; then exec "$@"; fi' \
      'exec curl "$@"' > /usr/local/bin/entrypoint \
 && chmod 0755 /usr/local/bin/entrypoint
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/entrypoint"]
