#!/usr/bin/env bash
# description: Load the amdgpu kernel driver now and at each boot
# gpu-chip: amd
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

if ensure_module amdgpu; then
  ensure_file "$ROOT/etc/modules-load.d/primus-amdgpu.conf" "amdgpu"
  echo "done: amdgpu driver loaded"
else
  echo "done: no amdgpu driver on this node; nothing to do"
fi
