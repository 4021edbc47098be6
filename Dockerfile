# syntax=docker/dockerfile:1
#
# The memif-cni image: the CNI plugin (memif-cni), the node agent (memifd)
# and the operator's CLI (memifctl), one image for all three.
# manifests/daemonset.yaml runs it as memifd and, in an init container,
# copies memif-cni onto the host's /opt/cni/bin.
#
#   docker build -t ghcr.io/memif-cni/memif-cni:0.1.0 .
#
# BuildKit is needed (the default builder of current Docker) for the cache
# mounts below, which keep the cargo registry and target directory between
# builds. .dockerignore keeps target/ and .git out of the context.

# --- Stage 1: build the three release binaries -------------------------------
# Debian bookworm, like the runtime stage: the binaries link against the same
# glibc. The crate needs Rust 1.85 or newer (rust-version in Cargo.toml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The commit --version prints (the build context has no .git):
#   docker build --build-arg COMMIT=$(git rev-parse --short=12 HEAD) ...
ARG COMMIT=unknown
ENV MEMIF_CNI_COMMIT=$COMMIT
# --locked: build exactly what Cargo.lock says. The target directory is a
# cache mount, so the binaries are copied out of it to /out for stage 2.
# TLS (kube's client) is rustls with ring: no OpenSSL at build or run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin memif-cni --bin memifd --bin memifctl \
    && install -D -m 0755 -t /out \
       target/release/memif-cni target/release/memifd target/release/memifctl

# --- Stage 2: the runtime image ----------------------------------------------
FROM debian:bookworm-slim
# iproute2: `ip` and `ss` for troubleshooting inside the container (for
# instance `ip netns exec` or `ss -xlp` to see a pod's memif listener).
# ca-certificates: the Kubernetes API's CA usually comes from the service
# account, but a kubeconfig may point at a publicly signed endpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The release profile keeps line tables (debug = 1), so backtraces and
# profiles name source lines; the binaries are not stripped on purpose.
COPY --from=build /out/ /usr/local/bin/
# memifd needs root (and, from the DaemonSet, a privileged container): it
# enters pod network namespaces and creates TUN devices. The plugin
# installer writes to a root-owned host directory. memifctl client needs
# nothing and may run as any user (manifests/pods.yaml runs it as nobody).
USER root
# The node agent by default. The others replace the entrypoint: `command:`
# in Kubernetes, `docker run --entrypoint memifctl IMAGE show memif`.
ENTRYPOINT ["memifd"]
