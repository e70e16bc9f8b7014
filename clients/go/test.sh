#!/usr/bin/env bash
# Runs `go test` on the qlorad package with no network (see gopath.sh); arguments go to go test.
# The live tests need QLORAD_TEST_TARGET and QLORAD_TEST_MODEL (tests/clients/clients_test.ts).
#   bash clients/go/test.sh -v
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/gopath.sh"
go vet github.com/qlorad/qlorad/clients/go/qlorad github.com/qlorad/qlorad/clients/go/cmd/orchestrator
go test "$@" github.com/qlorad/qlorad/clients/go/qlorad
