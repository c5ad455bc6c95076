# syntax=docker/dockerfile:1
#
# eryx worker image.
#
#   docker build -t eryx .
#   docker run --rm -e ERYX_NATS_URL=nats://nats:4222 -p 9090:9090 eryx
#   docker run --rm -e ERYX_EMBEDDED_LISTEN=0.0.0.0:4222 -p 4222:4222 -v eryx:/var/lib/eryx eryx
#
# The build stage runs exactly what CI runs on Debian bookworm:
# .ci/install-deps, then `make runtime build`. Nothing here builds any other
# way, so an image built from a commit that passed CI builds the same bytes.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src

# The system toolchain (clang/lld 16, wasi-libc, python3.11) in its own
# layer, rebuilt only when the package list changes.
COPY .ci/install-deps .ci/install-deps
RUN .ci/install-deps && rm -rf /var/lib/apt/lists/*

# Go modules, re-downloaded only when go.mod/go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .
# ERYX_NUMPY=0 leaves the numpy runtime image out (docs/runtime.md#numpy).
ARG ERYX_NUMPY=1
# The CPython wasm build takes minutes; the Makefile caches it under
# ERYX_CACHE_DIR keyed by its recipe, and the cache mount keeps that across
# image builds. The runtime assets are embedded in the binaries.
RUN --mount=type=cache,target=/root/.cache/eryx \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/go/pkg/mod \
    make runtime build ERYX_NUMPY=$ERYX_NUMPY \
 && mkdir -p /out/data

# distroless/base rather than distroless/static: `make build` is the CI
# build, with cgo on (Go's default when gcc is present), so the binaries
# link glibc, which base has and static lacks. Changing the build flags here
# would make the image differ from what CI tested. No shell, no package
# manager; the nonroot variant runs as UID/GID 65532.
FROM gcr.io/distroless/base-debian12:nonroot

COPY --from=build /src/bin/eryx-worker /src/bin/eryx-submit /src/bin/eryx-auth /src/bin/eryx-admin /usr/local/bin/
# The worker's data/cache directory: a volume (an emptyDir on Kubernetes,
# where the root filesystem is mounted read-only), owned by the runtime user.
COPY --from=build --chown=65532:65532 /out/data /var/lib/eryx

# The compiled-runtime cache must be writable too: the default, under
# $HOME, is not when the root filesystem is read-only.
ENV ERYX_DATA_DIR=/var/lib/eryx \
    ERYX_CACHE_DIR=/var/lib/eryx/cache \
    ERYX_METRICS_LISTEN=:9090
VOLUME ["/var/lib/eryx"]
USER 65532:65532
# 9090: health (/livez, /readyz) and Prometheus /metrics. 4222: the embedded
# NATS server, used when ERYX_NATS_URL is unset; set
# ERYX_EMBEDDED_LISTEN=0.0.0.0:4222 to reach it from outside the container.
EXPOSE 9090 4222

ENTRYPOINT ["/usr/local/bin/eryx-worker"]
