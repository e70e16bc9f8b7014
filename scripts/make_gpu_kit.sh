#!/usr/bin/env bash
# Builds tmp/gpu_kit: what `deno task gpu-check` needs on an offline GPU machine (the lent
# machines reach no registry), to travel with the working tree (`carry: ["tmp/gpu_kit"]`; the
# tree and the kit must stay under 64 MiB together). scripts/gpu_check_remote.sh unpacks it there.
#   deno.xz               this machine's Deno binary
#   node_modules.tar.xz   node_modules, with only the linux-x64 build of webgpu's Dawn
#   gl/*.deb              the Vulkan / EGL / GL loaders (libvulkan1 ...), unpacked to / there
#   gdb/*.deb             gdb-minimal (Debian's gdb without Python) and the libraries it needs,
#                         unpacked into a private prefix there (not /): stacks of a hung test
#   gdb.sh                runs that gdb with its private libraries
#   commit                the commit the kit was made at (`git describe`-like, +dirty if so)
# Needs apt-get with this machine's package lists (Debian 12 amd64, like the lent machines' x86-64).
#   bash scripts/make_gpu_kit.sh        prints the kit's size at the end
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kit="$root/tmp/gpu_kit"
limit=$((64 * 1024 * 1024))

deno_bin="$root/.tools/node_modules/deno/deno"
[ -x "$deno_bin" ] || { echo "make_gpu_kit: no Deno at $deno_bin (run the bootstrap first)" >&2; exit 1; }
[ -d "$root/node_modules" ] || { echo "make_gpu_kit: no node_modules (run deno install)" >&2; exit 1; }

rm -rf "$kit"
mkdir -p "$kit/gl" "$kit/gdb"

echo "make_gpu_kit: deno" >&2
xz -T0 -c "$deno_bin" >"$kit/deno.xz"

echo "make_gpu_kit: node_modules (webgpu for linux-x64 only)" >&2
excludes=()
for dist in "$root"/node_modules/.deno/webgpu@*/node_modules/webgpu/dist; do
  rel="${dist#"$root"/}"
  for platform in "$dist"/*/; do
    name="$(basename "$platform")"
    [ "$name" = linux-x64 ] || excludes+=("--exclude=$rel/$name")
  done
done
(cd "$root" && tar "${excludes[@]}" -cf - node_modules | xz -T0 >"$kit/node_modules.tar.xz")

echo "make_gpu_kit: GL and Vulkan loaders" >&2
(cd "$kit/gl" && apt-get download -q libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >&2)

# gdb-minimal's run-time libraries: its Depends, followed through library packages only (the
# install-time ones, debconf and the like, are not needed to run it), less libc6 and libgcc-s1,
# which must be the system's own (a private libc does not mix with the system's loader).
echo "make_gpu_kit: gdb-minimal and its libraries" >&2
declare -A seen=()
queue=(gdb-minimal)
pkgs=()
while [ "${#queue[@]}" -gt 0 ]; do
  p="${queue[0]}"
  queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  case "$p" in
    libc6 | libgcc-s1 | gcc-*-base | *-common) continue ;;
  esac
  pkgs+=("$p")
  while read -r dep; do
    case "$dep" in
      lib* | zlib1g) queue+=("$dep") ;;
    esac
  done < <(apt-cache depends --important "$p" 2>/dev/null |
    awk '$1 == "Depends:" || $1 == "PreDepends:" { gsub(/[<>]/, "", $2); print $2 }')
done
(cd "$kit/gdb" && apt-get download -q "${pkgs[@]}" >&2)

cat >"$kit/gdb.sh" <<'WRAP'
#!/bin/sh
# gdb-minimal from the kit, with its libraries from the kit's private prefix (gdb_root, made by
# scripts/gpu_check_remote.sh), the system's libc.
d="$(cd "$(dirname "$0")" && pwd)/gdb_root"
LD_LIBRARY_PATH="$d/usr/lib/x86_64-linux-gnu:$d/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  exec "$d/usr/bin/gdb" --data-directory="$d/usr/share/gdb" "$@"
WRAP
chmod +x "$kit/gdb.sh"

commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+dirty"
fi
echo "$commit" >"$kit/commit"

kit_bytes="$(du -sb "$kit" | cut -f1)"
tree_bytes="$(cd "$root" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)"
echo "make_gpu_kit: $kit: $((kit_bytes / 1024 / 1024)) MiB ($kit_bytes bytes); with the tracked tree" \
  "$(((kit_bytes + tree_bytes) / 1024 / 1024)) MiB of the 64 MiB a run may carry" >&2
du -b "$kit"/* "$kit"/gl/*.deb "$kit"/gdb/*.deb 2>/dev/null | sort -n | tail -n 8 >&2
if [ $((kit_bytes + tree_bytes)) -gt "$limit" ]; then
  echo "make_gpu_kit: too large: the kit and the tree exceed 64 MiB" >&2
  exit 1
fi
