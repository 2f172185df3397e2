# syntax=docker/dockerfile:1
# The loadtest image: the module emulator (`loadtest drive ...`) and the agent simulator
# (`loadtest agent ...`, used by manifests/overlays/simulated in place of sigsci-agent).
# Build from the repository root:
#   docker build -f docker/loadtest.Dockerfile -t sigsci-loadtest:0.1.0 .
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sigsci-loadtest --bin loadtest \
    && install -D -m 0755 target/release/loadtest /out/loadtest

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/loadtest /loadtest
USER 65532:65532
# Simulated agent: RPC and admin.
EXPOSE 9999 9090
# checkov:skip=CKV_DOCKER_2: a Job and a simulated agent probed by Kubernetes (tcpSocket on 9999); the image has no client to run a HEALTHCHECK with
ENTRYPOINT ["/loadtest"]
