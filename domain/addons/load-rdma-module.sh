#!/usr/bin/env bash
# description: Load the RDMA (InfiniBand/RoCE) user-space access modules now and at each boot
set -euo pipefail
# @include _lib.sh

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
