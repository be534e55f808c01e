#!/usr/bin/env bash
# description: Load the RDMA (InfiniBand/RoCE) user-space access modules now and at each boot
set -euo pipefail

# PRIMUS_ADDON_ROOT prefixes every path and leaves the running system alone (tests use it).
ROOT="${PRIMUS_ADDON_ROOT:-}"

# ensure_file PATH CONTENT: write CONTENT (plus newline) to PATH unless it already holds exactly that.
ensure_file() {
  local path="$1" content="$2"
  if [[ -f "$path" && "$(cat "$path")" == "$content" ]]; then
    echo "unchanged: $path"
    return 0
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" >"$path"
  echo "wrote: $path"
}

# ensure_module NAME: load kernel module NAME; returns 1 when it cannot be loaded here.
ensure_module() {
  local name="$1"
  if [[ -d "$ROOT/sys/module/$name" ]]; then
    echo "unchanged: module $name is loaded"
    return 0
  fi
  if [[ -n "$ROOT" ]] || ! command -v modprobe >/dev/null 2>&1 || ! modinfo "$name" >/dev/null 2>&1; then
    echo "skipped: module $name is not available on this node"
    return 1
  fi
  modprobe "$name" || { echo "error: modprobe $name failed"; exit 1; }
  echo "loaded: module $name"
}

loaded=()
for module in ib_core ib_uverbs ib_umad rdma_cm rdma_ucm; do
  if ensure_module "$module"; then
    loaded+=("$module")
  fi
done
if ((${#loaded[@]} == 0)); then
  echo "done: no RDMA modules on this node; nothing to do"
  exit 0
fi
ensure_file "$ROOT/etc/modules-load.d/primus-rdma.conf" "$(printf '%s\n' "${loaded[@]}")"
echo "done: RDMA modules loaded: ${loaded[*]}"
