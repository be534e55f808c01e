"""`primus-safe workload ...`: submit, list, inspect, follow and end workloads through the API.

Every command uses the login saved by `primus-safe login`. Ids and tables go to standard output,
live status lines and errors to standard error, so `id=$(primus-safe workload submit ...)` works.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import yaml

from domain.timefmt import parse_time, utcnow
from domain.workload_lifecycle import format_duration
from primus_safe.cli_login import ApiClient, api_client, api_error, err_console, fail

workload_app = typer.Typer(help="Workloads: submit, list, get, logs, stop, delete.", no_args_is_help=True)

WL = "/api/v1/workloads"
ENDED = ("Succeeded", "Failed", "Stopped")
POLL_SECONDS = 1.0
LOG_WINDOW = 5000
"""Lines asked for on each `logs -f` poll (new lines are found by overlap with the last answer)."""


# --- submit --------------------------------------------------------------------------------------


def read_body(path: Path) -> dict[str, Any]:
    """The create body from a YAML or JSON file (JSON is YAML)."""
    try:
        body = yaml.safe_load(path.read_text())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", code=2)
    except yaml.YAMLError as exc:
        fail(f"{path} is not YAML or JSON: {exc}", code=2)
    if not isinstance(body, dict):
        fail(f"{path} must hold one mapping: the body of POST {WL}", code=2)
    return body


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """`K=V` strings as a mapping."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--env {pair!r} is not NAME=VALUE", code=2)
        env[name] = value
    return env


def default_name(command: str) -> str:
    """A display name (lower-case DNS label) from the command's program, e.g. `python-train`."""
    words = [w.rsplit("/", 1)[-1].split(".")[0] for w in command.split()[:2]]
    name = "-".join("".join(c for c in w.lower() if c.isalnum() or c == "-") for w in words)
    name = "-".join(part for part in name.split("-") if part)[:40].strip("-")
    return name or "workload"


def command_body(
    command: str,
    workspace: str,
    *,
    name: str | None,
    kind: str,
    image: str,
    cpu: str,
    memory: str,
    gpu: str,
    replica: int,
    env: dict[str, str],
) -> dict[str, Any]:
    """The create body of `submit --command`."""
    return {
        "displayName": name or default_name(command),
        "workspaceId": workspace,
        "groupVersionKind": {"kind": kind, "version": "v1"},
        "image": image,
        "entryPoint": base64.b64encode(command.encode()).decode(),
        "resource": {"cpu": cpu, "memory": memory, "gpu": "" if gpu == "0" else gpu, "replica": replica},
        "env": env,
    }


def status_line(detail: dict[str, Any]) -> str:
    """`Pending | queue 2 | <pending reason> | step: ...` of a workload's detail."""
    parts = [str(detail.get("phase") or "?")]
    if detail.get("schedulerOrder"):
        parts.append(f"queue {detail['schedulerOrder']}")
    if detail.get("message"):
        parts.append(str(detail["message"]))
    if detail.get("currentStep"):
        parts.append(f"step: {detail['currentStep']}")
    return " | ".join(parts)


class StatusLine:
    """One line rewritten in place on a terminal; elsewhere printed each time it changes."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, line: str) -> None:
        if line == self.last:
            return
        self.last = line
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def wait_started(client: ApiClient, workload_id: str) -> dict[str, Any]:
    """Poll until the workload runs or ends, showing its status line; returns the detail."""
    line = StatusLine()
    try:
        while True:
            detail: dict[str, Any] = client.call("GET", f"{WL}/{workload_id}").json()
            line.show(status_line(detail))
            if detail["phase"] == "Running" or detail["phase"] in ENDED:
                return detail
            time.sleep(POLL_SECONDS)
    finally:
        line.close()


@workload_app.command("submit")
def submit(
    file: Path | None = typer.Argument(None, help="YAML or JSON file with the create body (camelCase)."),
    command: str | None = typer.Option(None, "--command", help="Start command, e.g. 'python train.py'."),
    workspace: str | None = typer.Option(None, "--workspace", help="Workspace id (overrides the file's)."),
    replica: int = typer.Option(1, "--replica", min=1, help="Pods (PyTorchJob: 1 master + N-1 workers)."),
    kind: str = typer.Option("PyTorchJob", "--kind", help="PyTorchJob, Deployment, StatefulSet, Authoring."),
    cpu: str = typer.Option("1", "--cpu", help="CPU per pod."),
    memory: str = typer.Option("1Gi", "--memory", help="Memory per pod."),
    gpu: str = typer.Option("0", "--gpu", help="GPUs per pod."),
    image: str = typer.Option("none", "--image", help="Image (hosts clusters run without one)."),
    name: str | None = typer.Option(None, "--name", help="Display name (default: from the command)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE, repeatable."),
    wait: bool = typer.Option(False, "--wait", help="Show the status until it runs or ends."),
) -> None:
    """Submit a workload from FILE or from --command; prints its id."""
    if (file is None) == (command is None):
        fail("give either FILE or --command", code=2)
    if file is not None:
        body = read_body(file)
        if workspace:
            body["workspaceId"] = workspace
        if name:
            body["displayName"] = name
    else:
        if not workspace:
            fail("--command needs --workspace", code=2)
        body = command_body(
            command or "",
            workspace,
            name=name,
            kind=kind,
            image=image,
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            replica=replica,
            env=parse_env(env),
        )
    with api_client() as client:
        workload_id = str(client.call("POST", WL, json=body).json()["workloadId"])
        detail = wait_started(client, workload_id) if wait else None
    print(workload_id, flush=True)
    if detail is not None and detail["phase"] in ("Failed", "Stopped"):
        fail(f"{workload_id} {detail['phase']}: {detail.get('message') or 'no message'}")


# --- list and get --------------------------------------------------------------------------------


def age(created: str) -> str:
    """How long ago `created` was, as `1h2m3s`."""
    try:
        return format_duration((utcnow() - parse_time(created)).total_seconds())
    except ValueError:
        return ""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is never padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def list_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One table row per listed workload."""
    return [
        [
            w["workloadId"],
            w["groupVersionKind"]["kind"],
            w["phase"],
            w["workspaceId"],
            str(w["resource"]["replica"]),
            age(w["creationTime"]),
            w["runtime"] if w.get("startTime") else "-",
            (f"#{w['schedulerOrder']} " if w.get("schedulerOrder") else "") + (w.get("message") or ""),
        ]
        for w in items
    ]


@workload_app.command("list")
def list_workloads(
    workspace: str | None = typer.Option(None, "--workspace", help="Only this workspace."),
    phase: str | None = typer.Option(None, "--phase", help="Only these phases (comma-separated)."),
    limit: int = typer.Option(100, "--limit", min=1, max=10000, help="At most this many, newest first."),
) -> None:
    """A table of workloads: id, kind, phase, workspace, replicas, age, runtime, message."""
    params: dict[str, str | int] = {"limit": limit}
    if workspace:
        params["workspaceId"] = workspace
    if phase:
        params["phase"] = phase
    with api_client() as client:
        body = client.call("GET", WL, params=params).json()
    header = ["ID", "KIND", "PHASE", "WORKSPACE", "REPLICAS", "AGE", "RUNTIME", "MESSAGE"]
    print(table(header, list_rows(body["items"])))
    if body["totalCount"] > len(body["items"]):
        err_console.print(f"({len(body['items'])} of {body['totalCount']}; use --limit for more)")


@workload_app.command("get")
def get(
    workload_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="JSON as the API answers."),
) -> None:
    """A workload's detail: phase, pending reason, queue position, pods, conditions, step."""
    with api_client() as client:
        detail = client.call("GET", f"{WL}/{workload_id}").json()
    if as_json:
        sys.stdout.write(json.dumps(detail, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(detail, sort_keys=False, allow_unicode=True, width=1000))


# --- logs ----------------------------------------------------------------------------------------


def default_pod(pods: Sequence[dict[str, Any]]) -> str | None:
    """The master (rank 0) when there is one, else the first pod."""
    for pod in pods:
        if "-master-" in pod["podId"] or pod.get("rank") == "0":
            return str(pod["podId"])
    return str(pods[0]["podId"]) if pods else None


class LogFollower:
    """Finds the lines not yet printed in successive tail windows of one pod's log.

    While the log is known from its first line (an answer shorter than asked), new lines are
    counted; otherwise the new window is aligned on the longest overlap with the previous one.
    """

    def __init__(self) -> None:
        self.previous: list[str] = []
        self.total: int | None = None

    def new_lines(self, lines: list[str], asked: int) -> list[str]:
        complete = len(lines) < asked
        if complete and self.total is not None:
            fresh = lines if len(lines) < self.total else lines[self.total :]  # shorter: a new run
        else:
            fresh = lines[self._overlap(lines) :]
        self.total = len(lines) if complete else None
        self.previous = lines
        return fresh

    def _overlap(self, lines: list[str]) -> int:
        """The end in `lines` of the last previous line: the longest prefix that is a suffix."""
        prev = self.previous
        for end in range(len(lines), 0, -1):
            size = min(end, len(prev))
            if size and lines[end - size : end] == prev[len(prev) - size :]:
                return end
        return 0


def fetch_logs(client: ApiClient, workload_id: str, pod: str, tail: int) -> list[str] | None:
    """The pod's last `tail` lines, or None when the pod has no log (yet or any more)."""
    resp = client.request("GET", f"{WL}/{workload_id}/pods/{pod}/logs", params={"tailLines": tail})
    if resp.status_code in (404, 409):
        return None
    if not resp.is_success:
        fail(api_error(resp))
    return [str(line) for line in resp.json()["logs"]]


def print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def follow(client: ApiClient, workload_id: str, pod: str | None, tail: int) -> str:
    """Print new log lines every second until the workload ends; returns its final phase."""
    follower = LogFollower()
    asked = tail
    while True:
        detail = client.call("GET", f"{WL}/{workload_id}").json()
        ended = detail["phase"] in ENDED
        chosen = pod or default_pod(detail["pods"])
        if chosen is not None:
            lines = fetch_logs(client, workload_id, chosen, asked)
            if lines is not None:
                print_lines(follower.new_lines(lines, asked))
                asked = max(tail, LOG_WINDOW)
        if ended:
            return str(detail["phase"])
        time.sleep(POLL_SECONDS)


@workload_app.command("logs")
def logs(
    workload_id: str = typer.Argument(..., metavar="ID"),
    pod: str | None = typer.Argument(None, metavar="[POD]", help="Pod id (default: the master or first)."),
    follow_: bool = typer.Option(False, "-f", "--follow", help="Print new lines until the workload ends."),
    tail: int = typer.Option(1000, "--tail", min=1, max=100000, help="Lines to show first."),
) -> None:
    """A pod's log; with -f, new lines every second until the workload ends."""
    with api_client() as client:
        if follow_:
            phase = follow(client, workload_id, pod, tail)
            if phase != "Succeeded":
                fail(f"{workload_id} {phase}")
            return
        if pod is None:
            pod = default_pod(client.call("GET", f"{WL}/{workload_id}").json()["pods"])
            if pod is None:
                fail(f"{workload_id} has no pods yet")
        resp = client.call("GET", f"{WL}/{workload_id}/pods/{pod}/logs", params={"tailLines": tail})
    print_lines(resp.json()["logs"])


# --- stop and delete -----------------------------------------------------------------------------


@workload_app.command("stop")
def stop(workload_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Stop a pending or running workload (it becomes Stopped)."""
    with api_client() as client:
        client.call("POST", f"{WL}/{workload_id}/stop")
    print(f"Stopped {workload_id}.")


@workload_app.command("delete")
def delete(workload_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Stop the workload if it runs, then delete it (it is no longer listed)."""
    with api_client() as client:
        client.call("DELETE", f"{WL}/{workload_id}")
    print(f"Deleted {workload_id}.")
