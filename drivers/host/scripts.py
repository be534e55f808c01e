"""The shell scripts the driver runs on a node, and how their arguments are encoded.

Every script gets `$1` = root (`""` = `$HOME/.primus-safe/pods`), `$2` = node, then its own
arguments (listed above each one). They are plain POSIX sh, so a node needs no agent.
"""

from __future__ import annotations

import base64

PRELUDE = 'root=$1; [ -n "$root" ] || root=$HOME/.primus-safe/pods; node=$2; shift 2\n'
ALIVE = (
    'alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && '
    'tr "\\000" " " < "/proc/$1/cmdline" 2>/dev/null | grep -qF "primus-pod:$2"; }\n'
)
# A zombie (ended, not yet reaped by init) has an empty command line: it counts as ended.
RUNNING = (
    'running() { kill -0 "$1" 2>/dev/null && tr -d "\\000" < "/proc/$1/cmdline" 2>/dev/null | grep -q .; }\n'
)

# $1 ns, $2 workload, $3 pod, $4 dispatch count, $5 run.sh b64, $6 env b64, $7 meta b64, $8 supervisor
LAUNCH = (
    PRELUDE
    + ALIVE
    + """\
set -e
dir="$root/$node/$1/$2/$3"
if [ -f "$dir/launched" ]; then
  if [ "$(cat "$dir/dispatch" 2>/dev/null)" = "$4" ]; then echo existing; exit 0; fi
  old=$(cat "$dir/pid" 2>/dev/null || true)
  if alive "$old" "$dir"; then kill -KILL -"$old" 2>/dev/null || true; fi
  rm -rf "$dir"
fi
mkdir -p "$dir"
cd "$dir"
printf %s "$5" | base64 -d > run.sh
printf %s "$6" | base64 -d > env
printf %s "$7" | base64 -d > meta.json
printf %s "$4" > dispatch
: > log
: > launched
setsid sh -c "$8" "primus-pod:$dir" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s pid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo launched
"""
)

# $1 ns, $2 workload
STATUS = (
    PRELUDE
    + ALIVE
    + """\
base="$root/$node/$1/$2"
[ -d "$base" ] || exit 0
for d in "$base"/*/; do
  d=${d%/}
  [ -f "$d/launched" ] || continue
  pid=$(cat "$d/pid" 2>/dev/null || true)
  state=pending
  if alive "$pid" "$d"; then state=running; elif [ -n "$pid" ]; then state=gone; fi
  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "${d##*/}" "$state" \\
    "$(cat "$d/exit_code" 2>/dev/null || echo -)" "$(cat "$d/started_at" 2>/dev/null || echo -)" \\
    "$(cat "$d/finished_at" 2>/dev/null || echo -)" "$(base64 < "$d/meta.json" | tr -d '\\n')"
done
"""
)

# $1 ns, $2 workload, $3 grace seconds
STOP = (
    PRELUDE
    + ALIVE
    + RUNNING
    + """\
base="$root/$node/$1/$2"
[ -d "$base" ] || exit 0
groups=""
for d in "$base"/*/; do
  d=${d%/}
  pid=$(cat "$d/pid" 2>/dev/null || true)
  if alive "$pid" "$d"; then kill -TERM -"$pid" 2>/dev/null || true; groups="$groups $pid"; fi
done
ticks=$(( $3 * 10 ))
left=$groups
while [ -n "$left" ] && [ "$ticks" -gt 0 ]; do
  still=""
  for p in $left; do running "$p" && still="$still $p"; done
  left=$still
  if [ -n "$left" ]; then sleep 0.1; ticks=$((ticks - 1)); fi
done
for p in $groups; do kill -KILL -"$p" 2>/dev/null || true; done
rm -rf "$base"
"""
)

# $1 ns, $2 pod -> prints the pod folder, exit 3 when it is not on this node
LOCATE = (
    PRELUDE
    + """\
for d in "$root/$node/$1"/*/"$2"; do
  if [ -f "$d/launched" ]; then echo "$d"; exit 0; fi
done
exit 3
"""
)

# $1 ns, $2 pod, $3 tail lines ("" = all)
LOG = (
    PRELUDE
    + """\
for d in "$root/$node/$1"/*/"$2"; do
  [ -f "$d/launched" ] || continue
  if [ -n "$3" ]; then tail -n "$3" "$d/log"; else cat "$d/log"; fi
  exit 0
done
exit 3
"""
)

# $1 namespace
MKDIR = PRELUDE + 'mkdir -p "$root/$node/$1"\n'
# $1 namespace: every pod in it is killed (TERM, then KILL a second later), then the folder goes
RMDIR = (
    PRELUDE
    + ALIVE
    + """\
groups=""
for d in "$root/$node/$1"/*/*/; do
  d=${d%/}
  pid=$(cat "$d/pid" 2>/dev/null || true)
  if alive "$pid" "$d"; then kill -TERM -"$pid" 2>/dev/null || true; groups="$groups $pid"; fi
done
[ -z "$groups" ] || sleep 1
for p in $groups; do kill -KILL -"$p" 2>/dev/null || true; done
rm -rf "$root/$node/$1"
"""
)

# Run as `sh -c SHELL primus-shell <pod folder> <command...>`: the command in the pod's folder and env.
SHELL = 'cd "$1" || exit 1; shift; set -a; . ./env; set +a; exec "$@"'


def b64(text: str) -> str:
    """`text` as one base64 argument (scripts decode it with `base64 -d`)."""
    return base64.b64encode(text.encode()).decode()
