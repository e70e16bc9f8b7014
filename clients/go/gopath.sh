# Sourced by build.sh and test.sh: the offline GOPATH build of this module. Debian ships Go
# libraries as source under /usr/share/gocode (golang-google-grpc-dev,
# golang-google-protobuf-dev and their dependencies), which is a GOPATH tree; builds run in GOPATH
# mode (GO111MODULE=off), the way Debian builds its own Go packages, with this module linked into
# a scratch GOPATH under its import path. Leaves the shell in that GOPATH's root; removes it on exit.
if [ -e /usr/share/gocode/src/github.com/golang/protobuf/proto/table_unmarshal.go ]; then
  # grpc would marshal with that old API and panic on the generated (APIv2) messages.
  echo "clients/go: /usr/share/gocode has github.com/golang/protobuf 1.3; install" \
    "golang-github-golang-protobuf-1-5-dev (bash scripts/install_client_toolchains.sh)" >&2
  exit 1
fi
qlorad_go_module="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
qlorad_gopath="$(mktemp -d)"
trap 'rm -rf "$qlorad_gopath"' EXIT
mkdir -p "$qlorad_gopath/src/github.com/qlorad/qlorad/clients"
ln -s "$qlorad_go_module" "$qlorad_gopath/src/github.com/qlorad/qlorad/clients/go"
# Go wants a build cache; CI shells may have no HOME.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE=/tmp/qlorad-go-build-cache
fi
export GO111MODULE=off GOPATH="$qlorad_gopath:/usr/share/gocode" GOPROXY=off GOFLAGS=
cd "$qlorad_gopath"
