#!/usr/bin/env bash
# description: Raise inotify limits (watches, instances) so file-watching tools and kubelet do not run out
set -euo pipefail
# @include _lib.sh

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
