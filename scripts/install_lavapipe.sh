#!/usr/bin/env bash
# Mesa's lavapipe (a Vulkan driver on the CPU) into a private prefix, so Dawn's Vulkan backend,
# the one NVIDIA GPUs use, runs on CPU-only machines (CI). Debian 12's own Mesa 22.3.6 lavapipe is
# refused by Dawn; bookworm-backports has Mesa 25.0.7, built against Debian 12's libllvm15.
#
# The backports source is derived from the machine's own configured Debian source (same URI and
# key, suite <codename>-backports); no host name is written here. The packages are unpacked with
# `dpkg -x` into .tools/lavapipe, so the system's GL stays as it is. Prints the environment to
# use (LD_LIBRARY_PATH, VK_ICD_FILENAMES) as shell assignments on stdout; progress on stderr.
#   eval "$(bash scripts/install_lavapipe.sh)"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.tools/lavapipe"
MESA_VERSION="25.0.7-2~bpo12+1"
DRM_VERSION="2.4.123-1~bpo12+1"
libdir="$prefix/usr/lib/x86_64-linux-gnu"
icd="$prefix/lvp_icd.json"

emit() {
  echo "export LD_LIBRARY_PATH=\"$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  echo "export VK_ICD_FILENAMES=\"$icd\""
}

if [ -f "$prefix/.complete-$MESA_VERSION" ]; then
  emit
  exit 0
fi

if [ "$(dpkg --print-architecture 2>/dev/null)" != amd64 ]; then
  echo "install_lavapipe: only amd64 is supported (found $(dpkg --print-architecture))" >&2
  exit 1
fi
# shellcheck disable=SC1091
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
if [ "$codename" != bookworm ]; then
  echo "install_lavapipe: expects Debian 12 (bookworm), found '${codename:-unknown}'" >&2
  exit 1
fi

# The machine's Debian archive: the first source (deb822 or one-line) whose suites include the
# release codename itself, with its Signed-By key.
uri=""
key=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  read -r uri key < <(awk -v cn="$codename" '
    function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " cn " ") && uri != "" && !found) { print uri, key; found = 1 } types = suites = uri = key = "" }
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uri = $1 }
    /^Signed-By:/ { sub(/^Signed-By:[[:space:]]*/, ""); key = $1 }
    END { flush() }' "$f") || true
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  line="$(grep -E "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+$codename[[:space:]]" /etc/apt/sources.list | head -n1 || true)"
  if [ -n "$line" ]; then
    uri="$(echo "$line" | sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/')"
    key="$(echo "$line" | grep -oE 'signed-by=[^] ]+' | cut -d= -f2 || true)"
  fi
fi
if [ -z "$uri" ]; then
  echo "install_lavapipe: no Debian '$codename' source found in /etc/apt" >&2
  exit 1
fi
key="${key:-/usr/share/keyrings/debian-archive-keyring.gpg}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/debs"
cat >"$work/sources.list" <<EOF
deb [signed-by=$key] $uri $codename main
deb [signed-by=$key] $uri $codename-backports main
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
  -o APT::Sandbox::User=root -qq
)
echo "install_lavapipe: Mesa $MESA_VERSION (lavapipe) from $codename-backports into .tools/lavapipe" >&2
apt-get "${apt_opts[@]}" update >&2
(cd "$work/debs" && apt-get "${apt_opts[@]}" download \
  "mesa-vulkan-drivers=$MESA_VERSION" "libdrm2=$DRM_VERSION" "libdrm-amdgpu1=$DRM_VERSION" \
  libvulkan1 libwayland-client0 libx11-xcb1 libxcb-dri3-0 libxcb-present0 libxcb-randr0 \
  libxcb-shm0 libxcb-sync1 libxcb-xfixes0 libxshmfence1 libllvm15 libelf1 libz3-4 >&2)

rm -rf "$prefix"
mkdir -p "$prefix"
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
# The ICD names its library by file name only; point it at the private copy.
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$libdir/libvulkan_lvp.so\"#" \
  "$prefix/usr/share/vulkan/icd.d/lvp_icd.json" >"$icd"
missing="$(LD_LIBRARY_PATH="$libdir" ldd "$libdir/libvulkan_lvp.so" | grep 'not found' || true)"
if [ -n "$missing" ]; then
  echo "install_lavapipe: libvulkan_lvp.so still misses: $missing" >&2
  exit 1
fi
touch "$prefix/.complete-$MESA_VERSION"
emit
