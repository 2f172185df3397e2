# syntax=docker/dockerfile:1
# The example Node app (loadtest/node): a small HTTP server wrapped by the real npm package
# sigsci-module-nodejs, whose RPC address comes from SIGSCI_RPC_HOST / SIGSCI_RPC_PORT.
# Build from the repository root:
#   docker build -f docker/example-app.Dockerfile -t sigsci-example-app:$TAG .
# Multi-platform and pushed: as in docker/proxy.Dockerfile, with this file and name.
# Node 22, an LTS release (maintained until April 2027), in both stages.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY loadtest/node/package.json loadtest/node/package-lock.json ./
# Exactly the locked versions, no dev dependencies; install scripts off (the only one is
# bunyan's optional dtrace-provider, which the module does not need).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY loadtest/node/*.js ./

FROM gcr.io/distroless/nodejs22-debian12:nonroot
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sigsci-example-app" \
      org.opencontainers.image.description="Example Node app wrapped by sigsci-module-nodejs, its RPCs sent to sigsci-proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/nodejs22-debian12:nonroot"
WORKDIR /app
COPY --from=build /app /app
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
# checkov:skip=CKV_DOCKER_2: Kubernetes probes GET /healthz; the distroless image has no HTTP client to run a HEALTHCHECK with
# distroless/nodejs runs `node` as its entrypoint.
CMD ["server.js"]
