# The image of a service written for Node.js (runtime = "node" in topology.toml, ADR 39 and 42):
# --build-arg SERVICE=<name>.
#
# deploy/build-images.sh prepares what the build reads, as it does the Python wheels: in
# deploy/.build/<service>/app/ the package as it runs (package.json, dist/ compiled by its own
# `npm run build`, node_modules from `npm ci` of the committed lock, development packages pruned),
# and in deploy/.build/node/ Node itself. So the build needs no network, and the image holds its
# service and its production dependencies: no TypeScript, no linter, no test tool, no compiler.
#
# How the image gets Node 20: Debian 12's own nodejs is 18, and no registry can be reached from
# a build here, so the script copies this machine's node binary (Node 20, a NodeSource build that
# needs only glibc, libstdc++ and libgcc, which every Debian 12 base carries) into the image.
#
# BASE is the Debian 12 image the Python images build on: deploy/base/build-base.sh's
# agora/python-base:3.11-bookworm where no registry can be reached.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE}
COPY deploy/.build/node/node /usr/local/bin/node
# A data directory for a file-backed store; the rest of the root filesystem may be read-only.
RUN node --version && mkdir -p /var/lib/agora && chown 10001:10001 /var/lib/agora

ARG SERVICE
RUN test -n "${SERVICE}" || { echo "SERVICE is not set: --build-arg SERVICE=<name>" >&2; exit 1; }
COPY deploy/.build/${SERVICE}/app/ /opt/agora/

ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="agora-${SERVICE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# Logs are JSON lines on stdout for the engine's log driver; the process reports the image's
# version as the Python ones do.
ENV NODE_ENV=production \
    HOME=/tmp \
    AGORA_LOG_FORMAT=json \
    AGORA_DATA_DIR=/var/lib/agora \
    AGORA_VERSION=${VERSION}

USER 10001:10001
WORKDIR /var/lib/agora
EXPOSE 8080
# The process contract (ADR 39): `serve [--port P] [--replica R]` or `migrate`; without either,
# it prints its usage and exits 2. The young generation's cap is agora_tools.runtimes.NODE_FLAGS's
# (ADR 62).
ENTRYPOINT ["node", "--max-semi-space-size=1", "/opt/agora/dist/src/main.js"]
