#!/usr/bin/env bash
# Installs from apt what the client tests (tests/clients/) and the Redis job store's tests
# (tests/service/job_store_redis_test.ts: redis-server) need: Python gRPC for the Python
# example, Go with Debian's packaged gRPC sources for the Go example (built offline), and protoc
# with its Python and Go plugins. Does nothing when all are installed; runs `apt-get update`
# only when something is missing.
#   bash scripts/install_client_toolchains.sh
set -euo pipefail
packages=(
  python3-grpcio python3-protobuf                  # /usr/bin/python3 runs the Python example
  python3-venv python3-pip python3-setuptools python3-wheel  # pip install ./clients/python offline
  protobuf-compiler protobuf-compiler-grpc         # protoc, grpc_python_plugin
  protoc-gen-go protoc-gen-go-grpc                 # protoc plugins for Go
  golang-go golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev            # grpc-go must not get the 1.3 API (see clients/go)
  redis-server                                     # the Redis job store's tests start their own
)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "install_client_toolchains: no apt-get; install these yourself: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
echo "qlorad: installing client toolchains from apt: ${missing[*]}" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >&2
