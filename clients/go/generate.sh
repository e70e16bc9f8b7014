#!/usr/bin/env bash
# Generates the Go stubs for proto/qlorad/v1/qlorad.proto into clients/go/gen/qloradv1/
# (committed, so that the module builds with no protoc and `go get` works;
# tests/clients/clients_test.ts regenerates them into a scratch folder and fails when they
# differ), with Debian's protoc, protoc-gen-go and protoc-gen-go-grpc.
#   bash clients/go/generate.sh [OUT]     # default OUT: clients/go/gen/qloradv1
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="$(realpath -m "${1:-$here/gen/qloradv1}")"
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  if ! command -v "$tool" >/dev/null; then
    echo "generate.sh: needs $tool (bash scripts/install_client_toolchains.sh)" >&2
    exit 1
  fi
done
module=github.com/qlorad/qlorad/clients/go
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
protoc -I "$root/proto" \
  --go_out="$out" --go_opt=module="$module" \
  --go-grpc_out="$out" --go-grpc_opt=module="$module" \
  "$root/proto/qlorad/v1/qlorad.proto"
mkdir -p "$dest"
mv "$out"/gen/qloradv1/*.go "$dest/"
