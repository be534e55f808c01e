"""The process supervisor of a pod, and what its files say about the pod.

The supervisor is a small sh script started with `setsid` (so it leads the pod's process group)
under the marker argv `primus-pod:<pod folder>`, by which `scripts.ALIVE` tells it from a reused
pid. It records `pid` and `started_at`, runs the entry point with the pod's `env`, forwards
TERM/INT/HUP to it, and when it ends writes `finished_at` and then `exit_code` (atomically, by
rename).

Output: the entry point's stdout and stderr go through two fifos to two stampers that append
each line as `<unix seconds> <text>` to `stdout.log` and `stderr.log` (perl with microseconds
where it has Time::HiRes, else POSIX awk with whole seconds; lines are cut at `LINE_LIMIT`
bytes). The stampers ignore TERM, so they write what the pod printed while it was being stopped,
and the supervisor waits for them (at most `DRAIN_SECONDS`) before it writes `exit_code`: once a
pod has ended, its output files are complete.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import datetime
from typing import Any

from domain.pods import ContainerStatus, PodStatus

KILLED_EXIT_CODE = 137
"""Exit code reported when the supervisor itself was killed (SIGKILL or a reboot)."""

LINE_LIMIT = 65536
"""Bytes of one output line that are kept (the rest of a longer line is dropped)."""
DRAIN_SECONDS = 5
"""How long the supervisor waits, after the entry point ended, for its output to be written (a
background process the entry point left behind may keep the output open for longer)."""
STAMP_PERL = (
    "perl -MTime::HiRes=time -ne "
    f"'BEGIN {{ $| = 1 }} chomp; printf \"%.6f %s\\n\", time, substr($_, 0, {LINE_LIMIT})'"
)
STAMP_AWK = (
    f"LC_ALL=C awk '{{ srand(); t = srand(); print t \".000000 \" substr($0, 1, {LINE_LIMIT}); fflush() }}'"
)

SUPERVISOR = f"""\
echo $$ > pid
date -u +%Y-%m-%dT%H:%M:%SZ > started_at
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
if command -v perl >/dev/null 2>&1 && perl -MTime::HiRes -e 1 2>/dev/null; then
  stamp() {{ {STAMP_PERL}; }}
else
  stamp() {{ {STAMP_AWK}; }}
fi
rm -f .stdout.pipe .stderr.pipe .stdout.done .stderr.done
mkfifo .stdout.pipe .stderr.pipe
for s in stdout stderr; do
  ( trap '' TERM INT HUP; stamp < ".$s.pipe" >> "$s.log"; : > ".$s.done" ) &
done
(
  set -a; . ./env; set +a
  if command -v bash >/dev/null 2>&1; then exec bash -o pipefail ./run.sh; fi
  exec sh ./run.sh
) > .stdout.pipe 2> .stderr.pipe &
child=$!
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break
done
i=0
while [ $i -lt {DRAIN_SECONDS * 20} ] && ! {{ [ -f .stdout.done ] && [ -f .stderr.done ]; }}; do
  sleep 0.05; i=$((i + 1))
done
date -u +%Y-%m-%dT%H:%M:%SZ > finished_at
echo "$code" > exit_code.tmp && mv exit_code.tmp exit_code
"""


def parse_time(text: str) -> datetime | None:
    """A time the supervisor wrote (`-` or garbage: none)."""
    if not text or text == "-":
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None


def pod_status(fields: list[str]) -> PodStatus:
    """The pod described by one line of `scripts.STATUS`: name, state, exit code, times, meta."""
    name, state, exit_text, started, finished, meta_b64 = fields
    meta: dict[str, Any] = json.loads(base64.b64decode(meta_b64) or b"{}")
    container = ContainerStatus(name=meta.get("container", "main"))
    phase = "Pending"
    if exit_text.strip().lstrip("-").isdigit():
        code = int(exit_text)
        phase = "Succeeded" if code == 0 else "Failed"
        container.state, container.exit_code = "terminated", code
        container.reason = "Completed" if code == 0 else "Error"
    elif state == "running":
        phase, container.state = "Running", "running"
    elif state == "gone":  # the supervisor itself was killed (SIGKILL or reboot)
        phase, container.state = "Failed", "terminated"
        container.exit_code, container.reason = KILLED_EXIT_CODE, "Killed"
    else:
        container.state, container.reason = "waiting", "ContainerCreating"
    address = meta.get("address", "")
    return PodStatus(
        name=name,
        phase=phase,
        node=meta.get("node", ""),
        host_ip=address,
        pod_ip=address,
        rank=meta.get("rank", ""),
        start_time=parse_time(started),
        end_time=parse_time(finished),
        containers=[container],
        labels=meta.get("labels", {}),
    )
