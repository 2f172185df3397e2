# syntax=docker/dockerfile:1
# The loadtest image: the module emulator (`loadtest drive ...`, manifests/overlays/loadtest)
# and the agent simulator (`loadtest agent ...`, used by manifests/overlays/simulated in place
# of sigsci-agent). Build from the repository root:
#   docker build -f docker/loadtest.Dockerfile -t sigsci-loadtest:$TAG .
# Multi-platform and pushed: as in docker/proxy.Dockerfile, with this file and name.
FROM rust:1.95.0-bookworm AS build
ARG TARGETPLATFORM
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=sigsci-loadtest-target-${TARGETPLATFORM},sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p sigsci-loadtest --bin loadtest \
    && install -D -m 0755 target/release/loadtest /out/loadtest

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sigsci-loadtest" \
      org.opencontainers.image.description="Signal Sciences module emulator and agent simulator, for testing sigsci-proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/loadtest /loadtest
USER 65532:65532
# Simulated agent: RPC, admin and the startup probe.
EXPOSE 9999 9090 2024
# checkov:skip=CKV_DOCKER_2: a Job and a simulated agent probed by Kubernetes (GET /startup on 2024, then tcpSocket on 9999); the image has no client to run a HEALTHCHECK with
ENTRYPOINT ["/loadtest"]
