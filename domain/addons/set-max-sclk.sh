#!/usr/bin/env bash
# description: Cap the AMD GPU shader clock (SCLK) at PRIMUS_MAX_SCLK_MHZ (default 1800), now and at each boot
# gpu-chip: amd
set -euo pipefail
# @include _lib.sh

MHZ="${PRIMUS_MAX_SCLK_MHZ:-1800}"
if [[ ! "$MHZ" =~ ^[0-9]{3,4}$ ]]; then
  echo "error: PRIMUS_MAX_SCLK_MHZ must be a clock in MHz, got '$MHZ'"
  exit 1
fi
if [[ ! -d "$ROOT/sys/module/amdgpu" ]]; then
  echo "skipped: the amdgpu driver is not loaded (no AMD GPU); nothing to do"
  exit 0
fi
if [[ -n "$CHECK" ]]; then
  echo "skipped: the SCLK cap is not read back (rocm-smi); checking the boot unit only"
elif [[ -n "$ROOT" ]]; then
  echo "skipped: rocm-smi is not run under PRIMUS_ADDON_ROOT"
elif ! command -v rocm-smi >/dev/null 2>&1; then
  echo "skipped: rocm-smi is not installed; nothing to do"
  exit 0
else
  rocm-smi --autorespond y --setextremum max sclk "$MHZ"
  echo "set: maximum SCLK $MHZ MHz on every GPU"
fi
run_at_boot max-sclk "#!/bin/sh
command -v rocm-smi >/dev/null 2>&1 && rocm-smi --autorespond y --setextremum max sclk $MHZ
exit 0"
echo "done: SCLK capped at $MHZ MHz"
