# syntax=docker/dockerfile:1
# The sigsci-proxy image. Build from the repository root:
#   docker build -f docker/proxy.Dockerfile -t sigsci-proxy:0.1.0 .
#
# Builder: the workspace's toolchain (rust-version 1.95 in Cargo.toml), pinned by tag; append
# @sha256:<digest> to both FROM lines for byte-reproducible builds.
# Runtime: distroless "cc" (glibc + libgcc, no shell, no package manager), same Debian 12 glibc
# as the builder. The preStop hook runs `/sigsci-proxy drain`, so no shell is needed.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# The whole workspace (.dockerignore keeps target/, .git, .venv and node_modules out): Cargo
# needs every member's manifest and targets to resolve the workspace.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sigsci-proxy --bin sigsci-proxy \
    && install -D -m 0755 target/release/sigsci-proxy /out/sigsci-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sigsci-proxy /sigsci-proxy
# distroless "nonroot": uid/gid 65532, the same numbers the manifests set.
USER 65532:65532
# RPC (modules) and admin (metrics, health; read-only).
EXPOSE 9999 9090
# checkov:skip=CKV_DOCKER_2: health is probed by Kubernetes on /readyz and /healthz (admin port); the image has no HTTP client to run a HEALTHCHECK with
ENTRYPOINT ["/sigsci-proxy"]
