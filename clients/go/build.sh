#!/usr/bin/env bash
# Builds the example orchestrator into clients/go/bin/ with no network, from the committed stubs
# and Debian's Go sources (see gopath.sh; go.mod is for builds with a module proxy, README.md).
#   bash clients/go/build.sh [OUTPUT]      # default OUTPUT: clients/go/bin/orchestrator
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
output="$(realpath -m "${1:-$here/bin/orchestrator}")"
source "$here/gopath.sh"
go build -o "$output" github.com/qlorad/qlorad/clients/go/cmd/orchestrator
