#!/usr/bin/env bash
# description: Switch every CPU to the performance frequency governor, now and at each boot
set -euo pipefail
# @include _lib.sh

shopt -s nullglob
governors=("$ROOT"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
if ((${#governors[@]} == 0)); then
  echo "skipped: no CPU frequency scaling here (virtual machine?); nothing to do"
  exit 0
fi
available="$(cat "$ROOT/sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors" 2>/dev/null || true)"
if [[ -n "$available" && " $available " != *" performance "* ]]; then
  echo "skipped: the performance governor is not offered (available: $available)"
  exit 0
fi
changed=0
for file in "${governors[@]}"; do
  [[ "$(cat "$file")" == performance ]] && continue
  if [[ -n "$CHECK" ]]; then
    drift "$file is $(cat "$file"), not performance"
  elif { echo performance >"$file"; } 2>/dev/null; then
    changed=$((changed + 1))
  else
    echo "warning: cannot write $file"
  fi
done
if ((changed == 0)); then
  echo "unchanged: all ${#governors[@]} CPUs already use the performance governor"
else
  echo "set: performance governor on $changed of ${#governors[@]} CPUs"
fi
run_at_boot cpu-performance '#!/bin/sh
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
  [ -w "$f" ] && echo performance >"$f"
done
exit 0'
echo "done: CPUs run at full speed"
