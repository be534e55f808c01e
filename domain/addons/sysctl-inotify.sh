#!/usr/bin/env bash
# description: Raise inotify limits (watches, instances) so file-watching tools and kubelet do not run out
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

# set_sysctl KEY VALUE: apply now through /proc/sys when possible.
set_sysctl() {
  local key="$1" value="$2" file
  file="$ROOT/proc/sys/${key//.//}"
  if [[ ! -e "$file" ]]; then
    echo "skipped: $key does not exist on this kernel"
  elif [[ "$(cat "$file")" == "$value" ]]; then
    echo "unchanged: $key = $value"
  elif { printf '%s\n' "$value" >"$file"; } 2>/dev/null; then
    echo "set: $key = $value"
  else
    echo "warning: cannot set $key now (read-only /proc/sys?); it applies at next boot"
  fi
}

declare -A settings=(
  [fs.inotify.max_user_watches]=1048576
  [fs.inotify.max_user_instances]=8192
  [fs.inotify.max_queued_events]=16384
)
conf=""
for key in $(printf '%s\n' "${!settings[@]}" | sort); do
  conf+="$key = ${settings[$key]}"$'\n'
  set_sysctl "$key" "${settings[$key]}"
done
ensure_file "$ROOT/etc/sysctl.d/90-primus-inotify.conf" "${conf%$'\n'}"
echo "done: inotify limits raised"
