#!/usr/bin/env bash
# Entry point for a fresh machine: installs what qlorad needs, then runs a deno task.
#   bash scripts/qlorad.sh demo    # the end-to-end demo on the bundled tiny model
#   bash scripts/qlorad.sh test    # the whole test suite
# Installs Deno from the npm package `deno` (pinned below) into .tools/, and Mesa's
# EGL/GL drivers from apt only when Dawn finds no GPU adapter.
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

if ! deno run -A scripts/probe_gpu.ts >/dev/null 2>&1; then
  echo "qlorad: no GPU adapter found; installing Mesa (EGL + llvmpipe) from apt" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 >&2
  deno run -A scripts/probe_gpu.ts >&2
fi

task="${1:-demo}"
shift || true
# The test suite builds and runs the Python and Go client examples against a live server.
if [ "$task" = test ]; then bash scripts/install_client_toolchains.sh >&2; fi
exec deno task "$task" "$@"
