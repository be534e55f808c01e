#!/usr/bin/env bash
# description: Load the amdgpu kernel driver now and at each boot
# gpu-chip: amd
set -euo pipefail
# @include _lib.sh

if ensure_module amdgpu; then
  ensure_file "$ROOT/etc/modules-load.d/primus-amdgpu.conf" "amdgpu"
  echo "done: amdgpu driver loaded"
else
  echo "done: no amdgpu driver on this node; nothing to do"
fi
