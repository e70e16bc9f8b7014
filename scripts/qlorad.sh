#!/usr/bin/env bash
# Entry point for a fresh machine: installs what qlorad needs, then runs a deno task.
#   bash scripts/qlorad.sh demo    # the end-to-end demo on the bundled tiny model
#   bash scripts/qlorad.sh test    # the whole test suite
# Installs Deno from the npm package `deno` (pinned below) into .tools/. When Dawn finds no real
# GPU, the CPU adapters: Mesa 25's lavapipe (Vulkan, the backend NVIDIA GPUs use) unpacked into
# .tools/lavapipe, which becomes the default adapter for every task run from here, and Mesa's
# EGL/llvmpipe from apt, the OpenGL ES fallback (QLORAD_GPU_BACKEND=opengles).
set -euo pipefail
DENO_VERSION=2.9.6
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

deno="$root/.tools/node_modules/.bin/deno"
if [ ! -x "$deno" ] || [ "$("$deno" --version | head -n1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  echo "qlorad: installing deno@$DENO_VERSION from npm into .tools/" >&2
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools "deno@$DENO_VERSION" >&2
fi
export PATH="$root/.tools/node_modules/.bin:$PATH"

# Headless EGL for Dawn's OpenGL ES fallback; Mesa wants a writable runtime dir.
export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/qlorad-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

deno install --quiet --frozen >&2

probe() { deno run -A scripts/probe_gpu.ts "$@"; }
if ! probe --hardware >/dev/null 2>&1; then
  if ! QLORAD_GPU_BACKEND=opengles probe >/dev/null 2>&1; then
    # libegl-dev: Dawn opens EGL by its unversioned name, libEGL.so, which only it provides.
    echo "qlorad: no GPU adapter found; installing Mesa (EGL + llvmpipe) from apt" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libegl-dev >&2
  fi
  # Vulkan on the CPU; the exports reach every deno task (and the processes tests start).
  saved_ld_path="${LD_LIBRARY_PATH-}"
  if lavapipe_env="$(bash scripts/install_lavapipe.sh)" && eval "$lavapipe_env" &&
    QLORAD_GPU_BACKEND=vulkan probe >/dev/null 2>&1; then
    export QLORAD_GPU_BACKEND="${QLORAD_GPU_BACKEND:-vulkan}"
  else
    echo "qlorad: lavapipe (Vulkan on the CPU) is not usable here; using OpenGL ES" >&2
    export LD_LIBRARY_PATH="$saved_ld_path"
    unset VK_ICD_FILENAMES
    export QLORAD_GPU_BACKEND="${QLORAD_GPU_BACKEND:-opengles}"
  fi
  probe >&2
fi

task="${1:-demo}"
shift || true
# The test suite builds and runs the Python and Go client examples against a live server.
if [ "$task" = test ]; then bash scripts/install_client_toolchains.sh >&2; fi
exec deno task "$task" "$@"
