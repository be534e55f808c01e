#!/usr/bin/env bash
# description: Enable Transparent Huge Pages (always) to cut TLB misses, now and at each boot
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

# set_choice FILE VALUE: select VALUE in a sysfs choice file such as "[always] madvise never".
set_choice() {
  local file="$1" value="$2" current
  current="$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$file")"
  [[ -n "$current" ]] || current="$(cat "$file")"
  if [[ "$current" == "$value" ]]; then
    echo "unchanged: $file = $value"
  elif { echo "$value" >"$file"; } 2>/dev/null; then
    echo "set: $file = $value (was ${current:-unknown})"
  else
    echo "warning: cannot write $file"
  fi
}

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
