#!/usr/bin/env bash
# description: Enable Transparent Huge Pages (always) to cut TLB misses, now and at each boot
set -euo pipefail
# @include _lib.sh

thp="$ROOT/sys/kernel/mm/transparent_hugepage"
if [[ ! -e "$thp/enabled" ]]; then
  echo "skipped: this kernel has no transparent huge pages; nothing to do"
  exit 0
fi
set_choice "$thp/enabled" always
[[ -e "$thp/defrag" ]] && set_choice "$thp/defrag" always
run_at_boot huge-pages '#!/bin/sh
echo always >/sys/kernel/mm/transparent_hugepage/enabled
[ -e /sys/kernel/mm/transparent_hugepage/defrag ] && echo always >/sys/kernel/mm/transparent_hugepage/defrag
exit 0'
echo "done: transparent huge pages enabled"
