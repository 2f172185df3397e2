# syntax=docker/dockerfile:1
# The sigsci-proxy image. Build from the repository root (TAG=$(scripts/image-tag): the
# release's version, or version-git.<commit> between releases), for one platform:
#   docker build -f docker/proxy.Dockerfile --build-arg VERSION="$TAG" -t sigsci-proxy:$TAG .
# or for amd64 and arm64 at once, pushed to your registry (manifests/README.md, step 1):
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/proxy.Dockerfile \
#     --build-arg VERSION="$TAG" --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t "$REGISTRY/sigsci-proxy:$TAG" --push .
#
# Builder: the workspace's toolchain (rust-version 1.95 in Cargo.toml), pinned by tag; append
# @sha256:<digest> to both FROM lines for byte-reproducible builds. Each platform builds
# natively (under QEMU emulation when it is not the build machine's own: slow, but needs no
# cross toolchain); the target cache is kept per platform.
# Runtime: distroless "cc" (glibc + libgcc, no shell, no package manager), same Debian 12 glibc
# as the builder. The preStop hook runs `/sigsci-proxy drain`, so no shell is needed.
FROM rust:1.95.0-bookworm AS build
ARG TARGETPLATFORM
WORKDIR /src
# The whole workspace (.dockerignore keeps target/, .git, .venv and node_modules out): Cargo
# needs every member's manifest and targets to resolve the workspace.
COPY . .
# Stripped of symbols and debug info (the unstripped binary was 53 MB; not measured since,
# as no image is built here). Set here, not in Cargo.toml, so local release builds keep their
# symbols for profiling.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=sigsci-proxy-target-${TARGETPLATFORM},sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p sigsci-proxy --bin sigsci-proxy \
    && install -D -m 0755 target/release/sigsci-proxy /out/sigsci-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sigsci-proxy" \
      org.opencontainers.image.description="MessagePack-RPC proxy that balances Signal Sciences modules' RPCs over a pool of sigsci-agent pods" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/sigsci-proxy /sigsci-proxy
# distroless "nonroot": uid/gid 65532, the same numbers the manifests set.
USER 65532:65532
# RPC (modules) and admin (metrics, health; read-only).
EXPOSE 9999 9090
# checkov:skip=CKV_DOCKER_2: health is probed by Kubernetes on /readyz and /healthz (admin port); the image has no HTTP client to run a HEALTHCHECK with
ENTRYPOINT ["/sigsci-proxy"]
