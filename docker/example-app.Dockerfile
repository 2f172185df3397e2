# syntax=docker/dockerfile:1
# The example Node app (loadtest/node): a small HTTP server wrapped by the real npm package
# sigsci-module-nodejs, whose RPC address comes from SIGSCI_RPC_HOST / SIGSCI_RPC_PORT.
# Build from the repository root:
#   docker build -f docker/example-app.Dockerfile -t sigsci-example-app:0.1.0 .
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY loadtest/node/package.json loadtest/node/package-lock.json ./
# Exactly the locked versions, no dev dependencies; install scripts off (the only one is
# bunyan's optional dtrace-provider, which the module does not need).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY loadtest/node/*.js ./

FROM gcr.io/distroless/nodejs20-debian12:nonroot
WORKDIR /app
COPY --from=build /app /app
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
# checkov:skip=CKV_DOCKER_2: Kubernetes probes GET /healthz; the distroless image has no HTTP client to run a HEALTHCHECK with
# distroless/nodejs runs `node` as its entrypoint.
CMD ["server.js"]
