#!/usr/bin/env bash
# The GPU check on a lent, offline GPU machine, in one call: unpacks the kit that
# scripts/make_gpu_kit.sh built here (tmp/gpu_kit, carried with the tree), then runs
#   deno task gpu-check --out $OUT
# within the call's time (GPU_CHECK_CALL_S, default 480 s: the issue's 8 minutes, unpacking
# included). On the device tool:
#   run(command: "bash scripts/gpu_check_remote.sh", carry: ["tmp/gpu_kit"], timeout_s: 540)
# Extra arguments go to gpu-check (e.g. --only gemm,gemv). Without $OUT it writes gpu-check-out/.
set -uo pipefail
SECONDS=0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K="$root/tmp/gpu_kit"
out="${OUT:-$root/gpu-check-out}"
mkdir -p "$out"
[ -f "$K/deno.xz" ] || { echo "gpu_check_remote: no kit at $K (bash scripts/make_gpu_kit.sh here, then carry tmp/gpu_kit)" >&2; exit 1; }

# Vulkan / EGL loaders into / when the system has none (the README of the lent machines says
# to bring them; unpacked anywhere else they would not be found by Dawn). GPU_CHECK_SKIP_LOADERS=1
# leaves / alone (a dry run on a machine that is not a lent one).
if [ -z "${GPU_CHECK_SKIP_LOADERS:-}" ] && { ! ldconfig -p | grep -q 'libvulkan\.so\.1' ||
  ! ldconfig -p | grep -q 'libEGL\.so\.1'; }; then
  for f in "$K"/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# The NVIDIA driver's ICD, where the loader would not look for it.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES="$icd"
  egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES="$egl"
fi

# gdb into a private prefix (never /: its libraries must not replace the system's).
mkdir -p "$K/gdb_root"
for f in "$K"/gdb/*.deb; do dpkg -x "$f" "$K/gdb_root"; done
if "$K/gdb.sh" --version >/dev/null 2>&1; then
  export QLORAD_GDB="$K/gdb.sh"
else
  echo "gpu_check_remote: the kit's gdb does not run here; stacks from cuda-gdb or /proc only" >&2
fi

# Deno and node_modules.
mkdir -p "$K/bin"
xz -dc "$K/deno.xz" >"$K/bin/deno" && chmod +x "$K/bin/deno"
(cd "$root" && tar -xJf "$K/node_modules.tar.xz")
export PATH="$K/bin:$PATH" DENO_DIR="$K/deno_dir" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
# The tree travels without .git: the commit the kit was made at stands in.
[ -n "${QLORAD_COMMIT:-}" ] || export QLORAD_COMMIT="$(cat "$K/commit") (kit)"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
  >"$out/nvidia-smi.txt" 2>&1 || true
budget=$((${GPU_CHECK_CALL_S:-480} - SECONDS - 30))
echo "gpu_check_remote: kit unpacked in ${SECONDS} s; gpu-check budget ${budget} s" >&2
cd "$root" && deno task gpu-check --out "$out" --budget-s "$budget" "$@"
