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
: > stdout.log
: > stderr.log
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

# $1 ns, $2 pod, $3 tail lines ("" = all), $4 since seconds ("" = all) -> the text, stdout and
# stderr merged by time, without the times; exit 3 when the pod is not on this node
LOG = (
    PRELUDE
    + """\
for d in "$root/$node/$1"/*/"$2"; do
  [ -f "$d/launched" ] || continue
  cd "$d" || exit 1
  if [ ! -f stdout.log ]; then
    if [ -n "$3" ]; then tail -n "$3" log; else cat log; fi
    exit 0
  fi
  if [ -n "$3" ] && [ -z "$4" ]; then
    { tail -n "$3" stdout.log; tail -n "$3" stderr.log; } | LC_ALL=C sort -s -n -k1,1 | tail -n "$3"
  else
    cutoff=0
    [ -z "$4" ] || cutoff=$(( $(date +%s) - $4 ))
    LC_ALL=C sort -m -s -n -k1,1 stdout.log stderr.log | LC_ALL=C awk -v c="$cutoff" '$1 + 0 >= c + 0' |
      if [ -n "$3" ]; then tail -n "$3"; else cat; fi
  fi | cut -d ' ' -f 2-
  exit 0
done
exit 3
"""
)

# $1 ns, $2 workload, $3 max bytes per stream, then per stream: pod, stream, byte offset (-1:
# after `seq` lines), seq -> per stream found: `@ <pod> <stream> <offset> <size> <dispatch>`, the
# next bytes as base64 lines, and a line `.`
COLLECT = (
    PRELUDE
    + """\
base="$root/$node/$1/$2"; max=$3; shift 3
while [ $# -ge 4 ]; do
  pod=$1; s=$2; off=$3; seq=$4; shift 4
  f="$base/$pod/$s.log"
  [ -f "$base/$pod/launched" ] && [ -f "$f" ] || continue
  [ "$off" -ge 0 ] || off=$(( $(head -n "$seq" "$f" | wc -c) ))
  size=$(( $(wc -c < "$f") ))
  printf '@ %s %s %s %s %s\\n' "$pod" "$s" "$off" "$size" "$(cat "$base/$pod/dispatch" 2>/dev/null)"
  tail -c +$((off + 1)) "$f" | head -c "$max" | base64
  echo .
done
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
