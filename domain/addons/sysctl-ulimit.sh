#!/usr/bin/env bash
# description: Raise open-file and locked-memory limits for logins and system services (RDMA needs memlock)
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

ensure_file "$ROOT/etc/security/limits.d/90-primus.conf" "*    soft nofile   1048576
*    hard nofile   1048576
*    soft memlock  unlimited
*    hard memlock  unlimited
root soft nofile   1048576
root hard nofile   1048576
root soft memlock  unlimited
root hard memlock  unlimited"
ensure_file "$ROOT/etc/systemd/system.conf.d/90-primus-limits.conf" "[Manager]
DefaultLimitNOFILE=1048576
DefaultLimitMEMLOCK=infinity"
echo "done: limits apply to new logins, and to services after the next reboot or systemctl daemon-reexec"
