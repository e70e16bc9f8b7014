#!/usr/bin/env bash
# Generates the Python stubs for proto/qlorad/v1/qlorad.proto into src/qlorad/v1/ (committed, so
# that installing the package needs no protoc; tests/clients/clients_test.ts regenerates them into
# a scratch folder and fails when they differ). Uses Debian's protoc (3.21) and grpc_python_plugin
# (packages protobuf-compiler, protobuf-compiler-grpc): Debian 12's python3-grpc-tools bundles
# protoc 3.6, which refuses the proto3 `optional` fields of the contract.
#   bash clients/python/generate.sh [OUT]     # default OUT: clients/python/src/qlorad/v1
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(realpath -m "${1:-$here/src/qlorad/v1}")"
plugin="$(command -v grpc_python_plugin || true)"
if ! command -v protoc >/dev/null || [ -z "$plugin" ]; then
  echo "generate.sh: needs protoc and grpc_python_plugin (bash scripts/install_client_toolchains.sh)" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# The proto's package path qlorad/v1 lands inside the package qlorad: the generated
# `from qlorad.v1 import qlorad_pb2` then resolves to these very files.
protoc -I "$root/proto" \
  --python_out="$scratch" --pyi_out="$scratch" \
  --grpc_python_out="$scratch" --plugin=protoc-gen-grpc_python="$plugin" \
  "$root/proto/qlorad/v1/qlorad.proto"
mkdir -p "$out"
for f in qlorad_pb2.py qlorad_pb2.pyi qlorad_pb2_grpc.py; do
  mv "$scratch/qlorad/v1/$f" "$out/$f"
done
