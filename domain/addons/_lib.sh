# Shared helpers of the addon scripts. The catalogue pastes this file in place of each script's
# include line, so every script sent to a node is self-contained.

# PRIMUS_ADDON_ROOT prefixes every path and leaves the running system alone (tests use it).
ROOT="${PRIMUS_ADDON_ROOT:-}"

# Run with the argument `check` (the node probe's addon health check), a script changes nothing:
# every setting it would change is printed as `drift: ...` and the script exits 3 if any was.
CHECK=""
[[ "${1:-}" == "check" ]] && CHECK=1
DRIFT=0
drift() {
  echo "drift: $*"
  DRIFT=$((DRIFT + 1))
}
_check_exit() {
  local rc=$?
  if [[ -n "$CHECK" && $rc -eq 0 && $DRIFT -gt 0 ]]; then
    echo "check failed: $DRIFT setting(s) differ from what the addon applies"
    exit 3
  fi
  exit "$rc"
}
trap _check_exit EXIT

# ensure_file PATH CONTENT: write CONTENT (plus newline) to PATH unless it already holds exactly that.
ensure_file() {
  local path="$1" content="$2"
  if [[ -f "$path" && "$(cat "$path")" == "$content" ]]; then
    echo "unchanged: $path"
    return 0
  fi
  if [[ -n "$CHECK" ]]; then
    drift "$path is missing or differs"
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
  [[ -n "$CHECK" ]] || chmod 0755 "$ROOT$script"
  ensure_file "$ROOT$unit" "[Unit]
Description=Primus-SaFE addon $name

[Service]
Type=oneshot
ExecStart=/bin/sh $script
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target"
  if [[ -n "$CHECK" ]]; then
    if [[ -z "$ROOT" && -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1 \
      && ! systemctl is-enabled --quiet "primus-$name.service" 2>/dev/null; then
      drift "primus-$name.service is not enabled"
    fi
    return 0
  fi
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
  elif [[ -n "$CHECK" ]]; then
    drift "$file is $current, not $value"
  elif { echo "$value" >"$file"; } 2>/dev/null; then
    echo "set: $file = $value (was ${current:-unknown})"
  else
    echo "warning: cannot write $file"
  fi
}

# set_sysctl KEY VALUE: apply now through /proc/sys when possible.
set_sysctl() {
  local key="$1" value="$2" file
  file="$ROOT/proc/sys/${key//.//}"
  if [[ ! -e "$file" ]]; then
    echo "skipped: $key does not exist on this kernel"
  elif [[ "$(cat "$file")" == "$value" ]]; then
    echo "unchanged: $key = $value"
  elif [[ -n "$CHECK" ]]; then
    drift "$key is $(cat "$file"), not $value"
  elif { printf '%s\n' "$value" >"$file"; } 2>/dev/null; then
    echo "set: $key = $value"
  else
    echo "warning: cannot set $key now (read-only /proc/sys?); it applies at next boot"
  fi
}

# ensure_module NAME: load kernel module NAME; returns 1 when it cannot be loaded here.
ensure_module() {
  local name="$1"
  if [[ -d "$ROOT/sys/module/$name" ]]; then
    echo "unchanged: module $name is loaded"
    return 0
  fi
  if [[ -n "$ROOT" ]] || ! command -v modprobe >/dev/null 2>&1 || ! modinfo "$name" >/dev/null 2>&1; then
    echo "skipped: module $name is not available on this node"
    return 1
  fi
  if [[ -n "$CHECK" ]]; then
    drift "module $name is not loaded"
    return 0
  fi
  modprobe "$name" || { echo "error: modprobe $name failed"; exit 1; }
  echo "loaded: module $name"
}
