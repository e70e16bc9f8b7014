#!/usr/bin/env bash
# Generates the stubs and builds the orchestrator into clients/go/bin/ with no network: Debian's
# Go sources (golang-google-grpc-dev, golang-google-protobuf-dev and their dependencies, under
# /usr/share/gocode) form a GOPATH, and the build runs in GOPATH mode (GO111MODULE=off), the way
# Debian builds its own Go packages. go.mod is for builds with a module proxy (see README.md).
#   bash clients/go/build.sh [OUTPUT]      # default OUTPUT: clients/go/bin/orchestrator
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
output="$(realpath -m "${1:-$here/bin/orchestrator}")"
bash "$here/generate.sh"
if [ -e /usr/share/gocode/src/github.com/golang/protobuf/proto/table_unmarshal.go ]; then
  # grpc would marshal with that old API and panic on the generated (APIv2) messages.
  echo "build.sh: /usr/share/gocode has github.com/golang/protobuf 1.3; install" \
    "golang-github-golang-protobuf-1-5-dev (bash scripts/install_client_toolchains.sh)" >&2
  exit 1
fi

# GOPATH mode finds this module's packages by import path: link it into a scratch GOPATH.
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/github.com/qlorad/qlorad/clients"
ln -s "$here" "$gopath/src/github.com/qlorad/qlorad/clients/go"

# Go wants a build cache; CI shells may have no HOME.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE=/tmp/qlorad-go-build-cache
fi
cd "$gopath"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOPROXY=off GOFLAGS= \
  go build -o "$output" github.com/qlorad/qlorad/clients/go/cmd/orchestrator
