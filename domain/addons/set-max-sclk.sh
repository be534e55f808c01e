#!/usr/bin/env bash
# description: Cap the AMD GPU shader clock (SCLK) at PRIMUS_MAX_SCLK_MHZ (default 1800), now and at each boot
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

# run_at_boot NAME BODY: install BODY as a boot-time oneshot unit primus-NAME.service and enable it.
run_at_boot() {
  local name="$1" body="$2"
  local script="/usr/local/lib/primus-safe/$name.sh" unit="/etc/systemd/system/primus-$name.service"
  ensure_file "$ROOT$script" "$body"
  chmod 0755 "$ROOT$script"
  ensure_file "$ROOT$unit" "[Unit]
Description=Primus-SaFE addon $name

[Service]
Type=oneshot
ExecStart=/bin/sh $script
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target"
  if [[ -n "$ROOT" || ! -d /run/systemd/system ]] || ! command -v systemctl >/dev/null 2>&1; then
    echo "skipped: enabling primus-$name.service (systemd is not running here)"
    return 0
  fi
  systemctl daemon-reload
  systemctl enable "primus-$name.service" >/dev/null 2>&1
  echo "enabled: primus-$name.service (re-applies at boot)"
}

MHZ="${PRIMUS_MAX_SCLK_MHZ:-1800}"
if [[ ! "$MHZ" =~ ^[0-9]{3,4}$ ]]; then
  echo "error: PRIMUS_MAX_SCLK_MHZ must be a clock in MHz, got '$MHZ'"
  exit 1
fi
if [[ ! -d "$ROOT/sys/module/amdgpu" ]]; then
  echo "skipped: the amdgpu driver is not loaded (no AMD GPU); nothing to do"
  exit 0
fi
if [[ -n "$ROOT" ]]; then
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
