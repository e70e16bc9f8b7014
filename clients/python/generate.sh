#!/usr/bin/env bash
# Generates the Python stubs for proto/qlorad/v1/qlorad.proto into clients/python/gen/
# (not committed). Uses Debian's protoc (3.21) and grpc_python_plugin (packages
# protobuf-compiler, protobuf-compiler-grpc): Debian 12's python3-grpc-tools bundles protoc 3.6,
# which refuses the proto3 `optional` fields of the contract. The generated code runs on
# Debian's python3-grpcio and python3-protobuf (use /usr/bin/python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
plugin="$(command -v grpc_python_plugin || true)"
if ! command -v protoc >/dev/null || [ -z "$plugin" ]; then
  echo "generate.sh: needs protoc and grpc_python_plugin (bash scripts/install_client_toolchains.sh)" >&2
  exit 1
fi
out="$here/gen"
rm -rf "$out.partial" && mkdir -p "$out.partial"
protoc -I "$root/proto" \
  --python_out="$out.partial" \
  --grpc_python_out="$out.partial" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "$root/proto/qlorad/v1/qlorad.proto"
rm -rf "$out" && mv "$out.partial" "$out"
