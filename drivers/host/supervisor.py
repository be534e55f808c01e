"""The process supervisor of a pod, and what its files say about the pod.

The supervisor is a small sh script started with `setsid` (so it leads the pod's process group)
under the marker argv `primus-pod:<pod folder>`, by which `scripts.ALIVE` tells it from a reused
pid. It records `pid` and `started_at`, runs the entry point with the pod's `env` and its output
appended to `log`, forwards TERM/INT/HUP to it, and when it ends writes `finished_at` and then
`exit_code` (atomically, by rename).
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

SUPERVISOR = """\
echo $$ > pid
date -u +%Y-%m-%dT%H:%M:%SZ > started_at
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
(
  set -a; . ./env; set +a
  if command -v bash >/dev/null 2>&1; then exec bash -o pipefail ./run.sh; fi
  exec sh ./run.sh
) >> log 2>&1 &
child=$!
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break
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
