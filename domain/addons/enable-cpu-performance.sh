#!/usr/bin/env bash
# description: Switch every CPU to the performance frequency governor, now and at each boot
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
  if { echo performance >"$file"; } 2>/dev/null; then
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
