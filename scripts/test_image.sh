#!/usr/bin/env bash
# Builds the container image from the Dockerfile and runs it for real, with no container daemon
# and no container registry (CI runs this through tests/deploy/image_test.ts):
#   1. a Debian 12 base from Debian's own packages (mmdebstrap, minbase, the machine's own apt
#      sources), imported into a local buildah store as localhost/qlorad-base;
#   2. the image: `buildah bud` (chroot isolation) with BASE_IMAGE set to that base;
#   3. the server from the image's ENTRYPOINT on the CPU adapter (OpenGL ES on llvmpipe) on a
#      loopback port, /data and /tmp bound to fresh host folders (as the Deployment's volume and
#      emptyDir); the image's own HEALTHCHECK command must report SERVING; the Python client runs
#      Quantize, a short Train and Evaluate against it;
#   4. checks: the server runs as the image's unprivileged user, everything it wrote under /data
#      is that user's, and the root filesystem is byte-for-byte as before (same entries, sizes,
#      mtimes, modes, owners): /data and /tmp are the only places it writes.
# Needs root on Debian 12 (amd64) with apt reachable; installs buildah, mmdebstrap and the Python
# client's packages when missing. The store and the base live in tmp/image/ (ignored), so a
# second run reuses the base and the build's layers. Deno on the host makes the fixture model
# ($DENO, else deno on PATH). Prints the time of each phase and the image's size.
#   bash scripts/test_image.sh
set -euo pipefail
# The host's private lavapipe (scripts/qlorad.sh exports it for the suite) is not the image's.
unset LD_LIBRARY_PATH VK_ICD_FILENAMES
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="$root/tmp/image"
deno="${DENO:-deno}"
image=localhost/qlorad:test
app_uid=10001
# Seconds to wait for the server to listen, and for it to stop after SIGTERM.
start_timeout=300
stop_timeout=120

mkdir -p "$work"
# Everything the script says also goes to tmp/image/last-run.log (the test shows only its end).
exec 2> >(tee "$work/last-run.log" >&2)
started=$SECONDS
phase_started=$SECONDS
log() { echo "test_image: $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}
# Ends a phase: its name and seconds, kept for the closing summary.
timings=()
phase_done() {
  timings+=("$1 $((SECONDS - phase_started)) s")
  log "$1 done in $((SECONDS - phase_started)) s"
  phase_started=$SECONDS
}

[ "$(id -u)" = 0 ] || die "needs root (buildah's chroot isolation and mmdebstrap as root)"
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "expects amd64"
# shellcheck disable=SC1091
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ "$codename" = bookworm ] || die "expects Debian 12 (bookworm), found '${codename:-unknown}'"

# ---------------------------------------------------------------------------------- packages
packages=(buildah mmdebstrap python3-grpcio python3-protobuf)
missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing from apt: ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
phase_done packages

# The overlay driver where the kernel has it (no copy per layer), else vfs (always works).
driver=vfs
if grep -qw overlay /proc/filesystems; then driver=overlay; fi
store=(--storage-driver "$driver" --root "$work/storage-$driver" --runroot "$work/runroot-$driver")
bah() { buildah "${store[@]}" "$@"; }

# -------------------------------------------------------------------------------------- base
# The machine's Debian sources (deb822 or one-line files whose suites name the release), pasted
# into the base as they are: the same archive the machine itself uses, no host name written here.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  if grep -Eq "^[[:space:]]*Suites:.*[[:space:]]$codename([[:space:]]|$)" "$f" ||
    grep -Eq "^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+$codename[[:space:]]" "$f"; then
    sources+=("$f")
  fi
done
[ ${#sources[@]} -gt 0 ] || die "no Debian '$codename' source in /etc/apt"
# As Debian's slim images: no docs, man pages or translations; dpkg without fsync (a build
# container is thrown away on failure anyway).
mmdebstrap_opts=(
  --variant=minbase --quiet
  --dpkgopt=force-unsafe-io
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --aptopt='Acquire::Languages "none"'
)
# The base is rebuilt only when its recipe or the machine's sources change.
base_key="$({ printf '%s\n' "${mmdebstrap_opts[@]}"; cat "${sources[@]}"; } | sha256sum | cut -c1-12)"
base="localhost/qlorad-base:$codename-$base_key"
if bah inspect --type image "$base" >/dev/null 2>&1; then
  log "base $base (cached)"
else
  log "building base $base with mmdebstrap from ${sources[*]}"
  rm -f "$work/base.tar"
  mmdebstrap "${mmdebstrap_opts[@]}" "$codename" "$work/base.tar" "${sources[@]}" >&2
  ctr="$(bah from scratch)"
  bah add --quiet "$ctr" "$work/base.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
  bah commit --quiet "$ctr" "$base" >/dev/null
  bah rm "$ctr" >/dev/null
  rm -f "$work/base.tar"
fi
phase_done base

# ------------------------------------------------------------------------------------- image
# A registry behind a TLS-intercepting proxy: the host's CA bundle, mounted read-only into the
# build's RUN steps and named by the build stage's NODE_EXTRA_CA_CERTS / DENO_CERT arguments.
ca_args=()
host_ca="${NODE_EXTRA_CA_CERTS:-${SSL_CERT_FILE:-}}"
if [ -n "$host_ca" ] && [ -f "$host_ca" ]; then
  ca_args=(-v "$host_ca:/run/host-ca.crt:ro"
    --build-arg NODE_EXTRA_CA_CERTS=/run/host-ca.crt --build-arg DENO_CERT=/run/host-ca.crt)
fi
log "building $image (storage driver $driver)"
# Each build step's line gets the seconds since the build began, to see where the time goes.
# --jobs 2: the two stages' first steps (both apt-get) run side by side.
build_started=$SECONDS
bah bud --isolation chroot --layers --jobs 2 --format docker --pull-never \
  --build-arg BASE_IMAGE="$base" "${ca_args[@]}" -t "$image" -f Dockerfile "$root" 2>&1 |
  while IFS= read -r line; do
    case "$line" in "["*"] STEP "* | *"Using cache"* | *COMMIT*) line="[+$((SECONDS - build_started)) s] $line" ;; esac
    printf '%s\n' "$line"
  done >&2
phase_done image

# The image's own settings, one list item per line.
inspect() { bah inspect --type image --format "$1" "$image"; }
mapfile -t entrypoint < <(inspect '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}')
mapfile -t healthcheck < <(inspect '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}')
image_user="$(inspect '{{.Docker.Config.User}}')"
[ ${#entrypoint[@]} -gt 0 ] || die "the image has no ENTRYPOINT"
[ "${healthcheck[0]:-}" = CMD ] || die "the image has no exec-form HEALTHCHECK (got '${healthcheck[*]}')"
[ "$image_user" = "$app_uid:$app_uid" ] || die "the image's USER is '$image_user', not $app_uid:$app_uid"

# --------------------------------------------------------------------------------------- run
run_dir="$(mktemp -d "$work/run.XXXXXX")"
data="$run_dir/data"
scratch="$run_dir/tmp"
ctr=""
runner=""
mounted=""
# The processes under a pid, children first.
descendants() {
  local child
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}
cleanup() {
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    for p in $(descendants "$runner") "$runner"; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$runner" 2>/dev/null || true
  fi
  if [ -n "$mounted" ]; then bah umount "$ctr" >/dev/null 2>&1 || true; fi
  if [ -n "$ctr" ]; then bah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$run_dir"
}
trap cleanup EXIT

# The data volume: owned by the image's user, as a fresh volume is; the fixture model is root's,
# read-only to the server. /tmp: world-writable with the sticky bit, as an emptyDir.
mkdir -p "$data" "$scratch"
chown "$app_uid:$app_uid" "$data"
chmod 1777 "$scratch"
"$deno" run -A scripts/make_tiny_llama.ts --out "$data/tiny" >/dev/null

ctr="$(bah from --pull-never "$image")"
mnt="$(bah mount "$ctr")"
mounted=1
volumes=(-v "$data:/data" -v "$scratch:/tmp")
# A first run lets buildah create what it mounts into the root filesystem; only then the snapshot.
bah run --isolation chroot "${volumes[@]}" "$ctr" -- true
# Every entry of the root filesystem outside the volumes and the kernel's filesystems. /run's
# own mtime is left out: each `buildah run` adds and removes its entries there (the server's uid
# cannot write there: /run is root's, mode 755, which the snapshot still compares).
snapshot() {
  find "$mnt" -xdev \( -path "$mnt/data" -o -path "$mnt/tmp" -o -path "$mnt/proc" \
    -o -path "$mnt/sys" -o -path "$mnt/dev" \) -prune -o \
    -printf '%P\t%y\t%s\t%T@\t%m\t%U:%G\t%l\n' |
    awk -F '\t' -v OFS='\t' '$1 == "run" { $4 = "-" } { print }' | LC_ALL=C sort
}
snapshot >"$run_dir/rootfs.before"
find "$data" -printf '%P\n' | LC_ALL=C sort >"$run_dir/data.before"
phase_done "fixture and container"

log "starting the server: ${entrypoint[*]} serve (OpenGL ES on llvmpipe)"
# QLORAD_LADDER=prior, as in the test suite: kernel variants from their priors, not timed.
bah run --isolation chroot "${volumes[@]}" -e QLORAD_GPU_BACKEND=opengles \
  -e QLORAD_LADDER="${QLORAD_LADDER:-prior}" "$ctr" -- \
  "${entrypoint[@]}" serve --host 127.0.0.1 --port 0 --data-dir /data \
  >"$run_dir/serve.log" 2>&1 &
runner=$!
show_server_log() { log "--- server output ---" && tail -n 60 "$run_dir/serve.log" >&2 || true; }
port=""
for ((i = 0; i < start_timeout; i++)); do
  port="$(sed -nE 's/^qlorad listening on 127\.0\.0\.1:([0-9]+)$/\1/p' "$run_dir/serve.log" | head -n1)"
  [ -n "$port" ] && break
  kill -0 "$runner" 2>/dev/null || { show_server_log; die "the server exited before listening"; }
  sleep 1
done
[ -n "$port" ] || { show_server_log; die "the server did not listen within $start_timeout s"; }

# The server process: buildah run's descendant that runs src/cli/main.ts.
server=""
for p in $(descendants "$runner"); do
  if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'src/cli/main\.ts serve'; then server=$p; fi
done
[ -n "$server" ] || die "no server process under buildah run (pid $runner)"
uids="$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$server/status")"
gids="$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$server/status")"
want="$app_uid $app_uid $app_uid $app_uid"
[ "$uids" = "$want" ] && [ "$gids" = "$want" ] ||
  die "the server (pid $server) runs as uid '$uids' gid '$gids', not $app_uid"
log "the server listens on 127.0.0.1:$port as uid/gid $app_uid (pid $server)"
phase_done "server start"

# The image's HEALTHCHECK, exactly as a container engine runs it (inside, on QLORAD_PORT).
health="$(bah run --isolation chroot "${volumes[@]}" -e QLORAD_PORT="$port" "$ctr" -- \
  "${healthcheck[@]:1}" 2>&1)" || { show_server_log; die "HEALTHCHECK failed: $health"; }
log "HEALTHCHECK: SERVING (exit 0)${health:+: $health}"

# The Python client: the `qlorad` package straight from its source folder (its stubs are
# committed), run from a copy so the checkout stays as it is.
client="$run_dir/client"
mkdir -p "$client"
cp -r clients/python/src/qlorad clients/python/orchestrator.py "$client/"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$client" /usr/bin/python3 "$client/orchestrator.py" \
  --target "127.0.0.1:$port" --model tiny --data tiny/train.jsonl --eval-data tiny/eval.jsonl \
  --workdir client-run --steps 2 --max-seq-len 32 --lora-r 4 --sample-tokens 0 \
  >"$run_dir/client.log" 2>&1 ||
  { cat "$run_dir/client.log" >&2; show_server_log; die "the Python client failed"; }
sed -n '/^summary:$/,$p' "$run_dir/client.log" >&2
for row in quantize train eval-base eval-adapter; do
  grep -Eq "^  $row +job [^ ]+ SUCCEEDED" "$run_dir/client.log" ||
    { cat "$run_dir/client.log" >&2; die "the client's $row job did not succeed"; }
done
for f in client-run/model-nf4/config.json client-run/adapter/adapter_model.safetensors; do
  [ -f "$data/$f" ] || die "no $f in the data volume"
done
phase_done "health and client jobs"

# A graceful stop, as `docker stop` does it.
kill -TERM "$server"
for ((i = 0; i < stop_timeout; i++)); do kill -0 "$runner" 2>/dev/null || break; sleep 1; done
if kill -0 "$runner" 2>/dev/null; then show_server_log; die "the server did not stop within $stop_timeout s of SIGTERM"; fi
status=0
wait "$runner" || status=$?
runner=""
[ "$status" = 0 ] || { show_server_log; die "the server exited with status $status after SIGTERM"; }

# Where it wrote: nothing in the root filesystem; under /data, only files of the image's user.
snapshot >"$run_dir/rootfs.after"
if ! diff "$run_dir/rootfs.before" "$run_dir/rootfs.after" >"$run_dir/rootfs.diff"; then
  head -n 40 "$run_dir/rootfs.diff" >&2
  die "the root filesystem changed (above: < before, > after)"
fi
find "$data" -printf '%P\n' | LC_ALL=C sort | comm -13 "$run_dir/data.before" - >"$run_dir/data.new"
[ -s "$run_dir/data.new" ] || die "nothing new under /data"
foreign="$(cd "$data" && tr '\n' '\0' <"$run_dir/data.new" | xargs -0 stat -c '%u:%g %n' |
  grep -v "^$app_uid:$app_uid " | head -n 5 || true)"
[ -z "$foreign" ] || die "entries under /data not owned by $app_uid:$app_uid: $foreign"
new_in_data="$(wc -l <"$run_dir/data.new")"
log "root filesystem unchanged; $new_in_data new entries under /data, all $app_uid:$app_uid;" \
  "/tmp got: $(cd "$scratch" && find . -mindepth 1 -maxdepth 1 -printf '%P ')"
# What the image holds, for the record.
log "in the image: $(cd "$mnt" && du -sh --apparent-size app opt/deno-dir usr/local/bin/deno \
  usr/lib/*-linux-gnu | awk '{ printf "%s %s, ", $2, $1 }')"
phase_done "stop and checks"

size="$(bah images --format '{{.Size}}' "$image" | head -n1)"
log "image $image: $size (base $(bah images --format '{{.Size}}' "$base" | head -n1))"
log "PASSED in $((SECONDS - started)) s: ${timings[*]}"
