# qlorad: QLoRA fine-tuning over gRPC, WGSL on WebGPU (Dawn) inside Deno.
#   docker build -t qlorad .
#   docker run --gpus all -p 50051:50051 -v qlorad-data:/data qlorad
# See docs/DEPLOY.md. Both stages start from one Debian 12 base (BASE_IMAGE), pinned to an exact
# version; pin it further to a digest (image@sha256:...) in a registry you control for
# byte-reproducible builds. scripts/test_image.sh builds that base itself from Debian's packages
# and passes it here, so the image builds and runs with no container registry at all.

# Must equal DENO_VERSION in scripts/qlorad.sh (tests/deploy/manifests_test.ts checks it).
ARG DENO_VERSION=2.9.6
# Any Debian 12 image with apt and working sources (slim or minbase).
ARG BASE_IMAGE=debian:12.11-slim

# ---------------------------------------------------------------------------------------------
# Build stage: Node and npm from Debian only to install Deno from npm (the only registry the
# project relies on), then Deno vendors the npm dependencies and caches the module graph, so the
# runtime image starts without reaching any registry.
FROM ${BASE_IMAGE} AS build
ARG DENO_VERSION
# Unset unless given: a CA bundle (a path visible to RUN) for reaching the npm registry through a
# TLS-intercepting proxy; scripts/test_image.sh mounts the host's. Build arguments live only in
# this stage, never in the runtime image.
ARG NODE_EXTRA_CA_CERTS
ARG DENO_CERT
ENV DENO_DIR=/opt/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The npm package `deno` pulls the native binary for this platform (@deno/linux-x64-glibc or
# @deno/linux-arm64-glibc); copy that binary out and check its version.
RUN npm install --no-audit --no-fund --prefix /opt/deno-npm "deno@${DENO_VERSION}" \
 && cp /opt/deno-npm/node_modules/@deno/linux-*-glibc/deno /usr/local/bin/deno \
 && deno --version | head -n1 | grep -qx "deno ${DENO_VERSION} .*"

WORKDIR /app
# Dependencies first, so this layer is rebuilt only when the lock changes. --frozen fails the
# build if deno.lock does not match deno.json. npm `webgpu` ships prebuilt dawn.node binaries,
# so no native build happens here.
COPY deno.json deno.lock ./
RUN deno install --frozen

COPY src ./src
COPY shaders ./shaders
COPY proto ./proto
COPY scripts ./scripts
# Resolve and cache every module the entry points import (the server and the health probe).
RUN deno cache --frozen src/cli/main.ts scripts/health_probe.ts

# Trim: dawn.node for other operating systems (~90 MiB), and the extracted package copies in
# DENO_DIR's npm cache that duplicate node_modules (Deno still needs the registry metadata kept
# there). The last command proves the whole graph still loads with no network (--cached-only).
RUN rm -rf node_modules/.deno/webgpu@*/node_modules/webgpu/dist/win32-* \
           node_modules/.deno/webgpu@*/node_modules/webgpu/dist/darwin-* \
 && find "$DENO_DIR/npm" -mindepth 3 -maxdepth 4 -type d -name '[0-9]*' -prune -exec rm -rf {} + \
 && deno run --cached-only -A src/cli/main.ts help >/dev/null

# ---------------------------------------------------------------------------------------------
# Runtime stage: Debian 12, the same distribution the project is developed and tested on.
FROM ${BASE_IMAGE} AS runtime

# libvulkan1: the Vulkan loader that Dawn's Vulkan backend opens; on a GPU node the NVIDIA
#   container toolkit mounts the driver's ICD (libGLX_nvidia + its json) next to it.
# libegl1 libegl-mesa0 libgl1-mesa-dri libgles2: EGL and Mesa's llvmpipe, the CPU fallback that
#   Dawn's OpenGL ES backend uses on nodes without a GPU (QLORAD_GPU_BACKEND=opengles).
# ca-certificates: TLS to an OpenTelemetry collector.
# libEGL.so: Dawn opens EGL by that unversioned name, which only libegl-dev (headers, X11 dev
#   packages) would provide; a link to libegl1's libEGL.so.1 is all it needs (without it the
#   OpenGL ES adapter is "no adapter": scripts/test_image.sh found this by running the image).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && for egl in /usr/lib/*-linux-gnu/libEGL.so.1; do ln -s libEGL.so.1 "${egl%.1}"; done \
 && ls /usr/lib/*-linux-gnu/libEGL.so

# The NVIDIA Vulkan ICD manifest. Recent NVIDIA container toolkits mount the driver's own copy
# over this path; with older ones this file is what lets the loader find libGLX_nvidia.so.0
# (mounted when NVIDIA_DRIVER_CAPABILITIES includes graphics). On a node without the driver the
# loader skips it.
RUN mkdir -p /etc/vulkan/icd.d \
 && printf '%s\n' '{"file_format_version": "1.0.0",' \
      '"ICD": {"library_path": "libGLX_nvidia.so.0", "api_version": "1.3.0"}}' \
      > /etc/vulkan/icd.d/nvidia_icd.json

# A non-root user with a fixed numeric uid (Kubernetes' runAsNonRoot can only verify a number);
# it owns the data directory and nothing else: the app and Deno's cache stay read-only.
RUN groupadd --gid 10001 qlorad \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/qlorad \
      --shell /usr/sbin/nologin qlorad \
 && mkdir -p /data /tmp/xdg \
 && chown 10001:10001 /data /tmp/xdg \
 && chmod 700 /tmp/xdg

COPY --from=build /usr/local/bin/deno /usr/local/bin/deno
COPY --from=build /opt/deno-dir /opt/deno-dir
COPY --from=build /app /app

# NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES: read by the NVIDIA container toolkit.
#   `graphics` is what mounts the Vulkan driver (compute alone gives only CUDA libraries);
#   `utility` gives nvidia-smi for debugging.
# EGL_PLATFORM=surfaceless: headless EGL for the llvmpipe fallback (no X11/Wayland display).
# XDG_RUNTIME_DIR, XDG_CACHE_HOME: where Mesa looks for a runtime dir and keeps its shader
#   cache; /tmp is writable even with a read-only root filesystem (Kubernetes mounts an
#   emptyDir there).
# DENO_DIR: the module cache filled in the build stage. DENO_NO_UPDATE_CHECK: no network call
#   on start. QLORAD_PORT: the port the health probe asks (keep it equal to --port below).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    EGL_PLATFORM=surfaceless \
    XDG_RUNTIME_DIR=/tmp/xdg \
    XDG_CACHE_HOME=/tmp \
    DENO_DIR=/opt/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    QLORAD_PORT=50051

WORKDIR /app
USER 10001:10001
EXPOSE 50051

# grpc.health.v1.Health/Check on localhost; healthy only on SERVING (the server turns
# NOT_SERVING as it starts shutting down). --cached-only: the probe never fetches modules.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--allow-net", "--allow-read", "--allow-env", \
       "--allow-sys", "scripts/health_probe.ts"]

# --cached-only: start from the cache baked in above, never from a registry (clusters are often
# offline). --expose-gc: the trainer frees GPU-backed objects between steps. SIGTERM (docker
# stop, pod deletion) stops the server gracefully: a running training job writes a checkpoint.
ENTRYPOINT ["deno", "run", "--cached-only", "-A", "--v8-flags=--expose-gc", "src/cli/main.ts"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50051", "--data-dir", "/data"]
