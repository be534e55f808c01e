#!/usr/bin/env bash
# description: Turn off automatic NUMA balancing, which migrates pages and stalls GPU training processes
set -euo pipefail
# @include _lib.sh

if [[ ! -e "$ROOT/proc/sys/kernel/numa_balancing" ]]; then
  echo "skipped: this kernel has no NUMA balancing (single NUMA node?); nothing to do"
  exit 0
fi
set_sysctl kernel.numa_balancing 0
ensure_file "$ROOT/etc/sysctl.d/90-primus-numa-balancing.conf" "kernel.numa_balancing = 0"
echo "done: NUMA balancing disabled"
