"""Submission benchmark: N tiny workloads through the API on the local node, beside raw Temporal.

Self-contained: starts a Temporal dev server, then for each run a fresh database (SQLite in a
temporary directory, or a scratch database on PostgreSQL), the API in-process with its worker
(as `primus-safe up` runs them: one event loop), a `hosts` cluster of one local node
(`local: true`, 127.0.0.1) whose flavor fits every workload at once, and a workspace over it.
Prints figures, asserts nothing.

1. **Submit**: N PyTorchJobs of one pod (cpu 1, memory 16Mi, entry point `true`,
   `ttlSecondsAfterFinished: 0`) are created through `POST /api/v1/workloads`, `--concurrency` in
   flight; the HostDriver runs each pod as a local process under `$HOME/.primus-safe/pods/<node>`.
   Prints create p50/p99, the time from the first create to all admitted (the scheduler's
   AdminScheduled, or dispatched), to all Running (or beyond) and to all Succeeded, and the
   submit-to-Running throughput (N / time to all Running).
2. **Reads at 10,000**: 10,000 Succeeded workloads are inserted directly, then
   `GET /api/v1/workloads` (the default page and filtered pages) and `GET /api/v1/workloads/{id}`
   are timed, one request at a time, p50/p99 (the goal is p99 under 50 ms).
3. **Raw Temporal**: on the same dev server, in the same process, N workflows of one trivial
   activity (defined here, on their own worker and task queue) are started with the same
   concurrency; prints the start rate and the start-to-all-completed rate, and the ratio of the
   submit-to-Running throughput to each (the goal is at least 0.8x the raw rate).

    .venv/bin/python bench/submit.py [--workloads 1000] [--runs 3] [--database sqlite|postgresql]

PostgreSQL: the server in PRIMUS_BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test); each run creates and drops its own database.
Every process, temporary directory and pod folder it made is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

if not workflow.unsafe.in_sandbox():  # the sandbox re-imports this module for each raw workflow
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with workflow.unsafe.imports_passed_through():
    import httpx
    from cryptography.fernet import Fernet
    from sqlalchemy import case, func, insert, select
    from temporalio.client import Client
    from temporalio.worker import Worker

    from api.app import create_app
    from api.state import AppState
    from db.clusters import Cluster
    from db.migrate import upgrade
    from db.node_flavors import NodeFlavor
    from db.node_templates import NodeTemplate
    from db.nodes import Node
    from db.scheduling import QueueEntry
    from db.workloads import Workload
    from domain import workload_lifecycle as life
    from domain.nodes import READY
    from domain.scheduling import ADMITTED, scheduler_workflow_id
    from domain.timefmt import utcnow
    from domain.workspaces import workspace_workflow_id
    from primus_safe.bootstrap import ensure_admin
    from primus_safe.settings import Settings, TaskQueues
    from primus_safe.worker import run_workers
    from tests.fixtures import postgres
    from tests.fixtures.temporal import start_dev_server

TEMPORAL_PORT = 17345
ADMIN_PASSWORD = "bench-admin-password"
WL = "/api/v1/workloads"
SEEDED = 10_000
READS = 200
POLL = 0.1
FLAVOR = {
    "cpu": {"product": "", "quantity": "100000"},
    "memory": "100Ti",
    "extendedResources": {"ephemeral-storage": "10Pi"},
}
"""Room for every tiny pod at once (1 cpu, 16Mi, the default 50Gi of ephemeral storage each)."""


# --- the raw Temporal baseline -------------------------------------------------------------------


@activity.defn(name="bench.noop")
async def noop(index: int) -> int:
    """The one activity of the raw workflow."""
    return index


@workflow.defn(name="BenchOneActivity")
class OneActivityWorkflow:
    """Start, one activity, complete: what Temporal costs without the platform."""

    @workflow.run
    async def run(self, index: int) -> int:
        result: int = await workflow.execute_activity(
            noop, index, start_to_close_timeout=timedelta(seconds=60)
        )
        return result


# --- helpers -------------------------------------------------------------------------------------


def pods_root() -> Path:
    """Where the HostDriver keeps a local node's pods (its default root)."""
    return Path.home() / ".primus-safe" / "pods"


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`, in the values' unit."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def entry_point(script: str) -> str:
    return base64.b64encode(script.encode()).decode()


async def bounded(items: Sequence[Any], limit: int, call: Callable[[Any], Awaitable[None]]) -> None:
    """Run `call` on every item, `limit` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Any) -> None:
        async with gate:
            await call(item)

    await asyncio.gather(*(one(i) for i in items))


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    """A migrated, empty database of `kind`, removed afterwards; yields its URL."""
    if kind == "sqlite":
        path = work / f"primus-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        yield url
        return
    server = os.environ.get("PRIMUS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with postgres.scratch_database(server) as url:
        upgrade(url)
        yield url


@dataclass
class RunFigures:
    """What one run measured (seconds unless named _ms)."""

    n: int
    create_ms: list[float] = field(default_factory=list)
    submit_s: float = 0.0
    admitted_s: float = float("nan")
    running_s: float = float("nan")
    succeeded_s: float = float("nan")
    final: dict[str, int] = field(default_factory=dict)
    reads_ms: dict[str, list[float]] = field(default_factory=dict)
    failed_creates: int = 0
    raw_start_s: float = 0.0
    raw_done_s: float = 0.0

    @property
    def running_rate(self) -> float:
        return self.n / self.running_s

    @property
    def raw_start_rate(self) -> float:
        return self.n / self.raw_start_s

    @property
    def raw_rate(self) -> float:
        return self.n / self.raw_done_s


# --- one run -------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One run's platform: the app state, a client with the admin's headers, the run's ids."""

    settings: Settings
    state: AppState
    http: httpx.AsyncClient
    headers: dict[str, str]
    run: str
    node_id: str = ""
    workspace_id: str = ""

    async def seed_local_cluster(self) -> None:
        """Flavor, template, one Ready local node and a Ready `hosts` cluster of it (as
        tests/fixtures/workloads.py does for sshd hosts); then a workspace through the API."""
        now = utcnow()
        run = self.run
        self.node_id = f"bench-{run}"
        async with self.state.sessions() as session, session.begin():
            session.add(
                NodeFlavor(id=f"f{run}", display_name="bench", spec=FLAVOR, created_at=now, updated_at=now)
            )
            session.add(NodeTemplate(id=f"t{run}", display_name="bench", addons=[], created_at=now))
            session.add(
                Cluster(
                    id=f"c{run}",
                    provisioner="hosts",
                    control_plane_nodes=[],
                    ssh_secret_id="",
                    kube_spray_image="",
                    kube_pods_subnet="",
                    kube_service_address="",
                    kube_network_plugin="flannel",
                    kube_version="",
                    phase="Ready",
                    created_at=now,
                    updated_at=now,
                )
            )
            session.add(
                Node(
                    id=self.node_id,
                    node_name=self.node_id,
                    private_ip="127.0.0.1",
                    port=22,
                    flavor_id=f"f{run}",
                    template_id=f"t{run}",
                    ssh_secret_id="",
                    cluster_id=f"c{run}",
                    local=True,
                    phase=READY,
                    onboarded=True,
                    addons_template_id=f"t{run}",
                    addons_installed=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        body = {"name": "bench", "clusterId": f"c{run}", "flavorId": f"f{run}", "replica": 1}
        resp = await self.http.post("/api/v1/workspaces", json=body, headers=self.headers)
        resp.raise_for_status()
        self.workspace_id = str(resp.json()["workspaceId"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            detail = (
                await self.http.get(f"/api/v1/workspaces/{self.workspace_id}", headers=self.headers)
            ).json()
            if detail["phase"] == "Running":
                return
            await asyncio.sleep(0.2)
        raise SystemExit(f"workspace {self.workspace_id} is not Running: {detail}")

    def body(self) -> dict[str, Any]:
        return {
            "displayName": "tiny",
            "workspaceId": self.workspace_id,
            "groupVersionKind": {"kind": "PyTorchJob", "version": "v1"},
            "image": "none",
            "entryPoint": entry_point("true"),
            "resource": {"cpu": "1", "memory": "16Mi", "replica": 1},
            "ttlSecondsAfterFinished": 0,
        }

    async def counts(self) -> tuple[int, int, int, dict[str, int]]:
        """(admitted, Running or beyond, Succeeded, phases) over the run's workloads."""
        pending = Workload.phase == life.PENDING
        admitted_entry = (
            select(QueueEntry.workload_id)
            .where(QueueEntry.workload_id == Workload.id, QueueEntry.state == ADMITTED)
            .exists()
        )
        async with self.state.sessions() as session:
            row = (
                await session.execute(
                    select(
                        func.sum(
                            case(((Workload.dispatch_count >= 1) | ~pending | admitted_entry, 1), else_=0)
                        ),
                        func.sum(case((Workload.phase.in_([life.RUNNING, *life.ENDED_PHASES]), 1), else_=0)),
                        func.sum(case((Workload.phase == life.SUCCEEDED, 1), else_=0)),
                    ).where(Workload.workspace_id == self.workspace_id)
                )
            ).one()
            phases = dict(
                (
                    await session.execute(
                        select(Workload.phase, func.count())
                        .where(Workload.workspace_id == self.workspace_id)
                        .group_by(Workload.phase)
                    )
                ).all()
            )
        return (
            int(row[0] or 0),
            int(row[1] or 0),
            int(row[2] or 0),
            {str(k): int(v) for k, v in phases.items()},
        )

    async def submit(self, figures: RunFigures, concurrency: int, wait_limit: float) -> None:
        """Create N workloads, then watch the database until all Succeeded (or `wait_limit`)."""
        body = self.body()

        async def create(_: int) -> None:
            started = time.perf_counter()
            try:  # the in-process transport raises what the app did not handle (a 500)
                resp = await self.http.post(WL, json=body, headers=self.headers)
                failure = "" if resp.status_code == 200 else f"{resp.status_code} {resp.text[:300]}"
            except Exception as exc:
                failure = f"500 {type(exc).__name__}: {str(exc)[:300]}"
            figures.create_ms.append((time.perf_counter() - started) * 1000)
            if failure:
                figures.failed_creates += 1
                print(f"  create failed: {failure}", flush=True)

        began = time.monotonic()
        watcher = asyncio.create_task(self._watch(figures, began, wait_limit))
        await bounded(range(figures.n), concurrency, create)
        figures.submit_s = time.monotonic() - began
        print(f"  {figures.n} created in {figures.submit_s:.2f} s; waiting for Succeeded ...", flush=True)
        await watcher

    async def _watch(self, figures: RunFigures, began: float, wait_limit: float) -> None:
        last_print = 0.0
        while True:
            n = figures.n - figures.failed_creates
            admitted, running, succeeded, phases = await self.counts()
            now = time.monotonic() - began
            if admitted >= n and figures.admitted_s != figures.admitted_s:
                figures.admitted_s = now
            if running >= n and figures.running_s != figures.running_s:
                figures.running_s = now
            if succeeded >= n:
                figures.succeeded_s = now
            figures.final = phases
            if succeeded >= n or now > wait_limit:
                return
            if now - last_print >= 10:
                last_print = now
                print(
                    f"  {now:6.1f} s: admitted {admitted}, running+ {running}, "
                    f"succeeded {succeeded}, {phases}",
                    flush=True,
                )
            await asyncio.sleep(POLL)

    async def seed_finished(self, count: int) -> list[str]:
        """`count` Succeeded workloads inserted directly (the spec of a real one); their ids."""
        body = self.body()
        async with self.state.sessions() as session:
            template = (
                await session.execute(
                    select(Workload).where(Workload.workspace_id == self.workspace_id).limit(1)
                )
            ).scalar_one()
            spec, user_id, user_name = dict(template.spec), template.user_id, template.user_name
        now = utcnow()
        ids = [f"seeded-{self.run}-{i:05d}" for i in range(count)]
        rows = [
            {
                "id": wid,
                "display_name": body["displayName"],
                "description": "",
                "workspace_id": self.workspace_id,
                "cluster_id": f"c{self.run}",
                "user_id": user_id,
                "user_name": user_name,
                "kind": "PyTorchJob",
                "priority": 0,
                "spec": spec,
                "gpu_resource_name": "amd.com/gpu",
                "phase": life.SUCCEEDED,
                "message": "the workload succeeded",
                "dispatch_count": 1,
                "conditions": [],
                "pods": [],
                "nodes": [[self.node_id]],
                "ranks": [],
                "created_at": now - timedelta(seconds=count - i),
                "updated_at": now,
                "start_time": now - timedelta(seconds=count - i),
                "end_time": now - timedelta(seconds=count - i - 0.5),
                "is_deleted": False,
            }
            for i, wid in enumerate(ids)
        ]
        async with self.state.sessions() as session, session.begin():
            for start in range(0, len(rows), 1000):
                await session.execute(insert(Workload), rows[start : start + 1000])
        return ids

    async def reads(self, figures: RunFigures, ids: Sequence[str]) -> None:
        """p50/p99 of the list (default page and filtered) and of the detail, one at a time."""
        real = (
            await self.http.get(
                WL, params={"limit": 1, "phase": "Succeeded", "userName": "root"}, headers=self.headers
            )
        ).json()
        total = real["totalCount"]
        print(f"  {total} workloads in the database; {READS} requests per read ...", flush=True)
        cases: dict[str, tuple[str, dict[str, Any]]] = {
            "list: default page (100)": (WL, {}),
            "list: workspace + phase": (WL, {"workspaceId": self.workspace_id, "phase": "Succeeded"}),
            "list: userName + kind, 20": (WL, {"userName": "roo", "kind": "PyTorchJob", "limit": 20}),
            "list: page 50 by start_time asc": (WL, {"offset": 5000, "sortBy": "start_time", "order": "asc"}),
            "list: workloadId fuzzy": (WL, {"workloadId": "-0042"}),
        }
        for name, (path, params) in cases.items():
            figures.reads_ms[name] = await self._time_gets([(path, params)] * READS)
        step = max(1, len(ids) // READS)
        details = [(f"{WL}/{ids[i * step % len(ids)]}", {}) for i in range(READS)]
        figures.reads_ms["get: one workload"] = await self._time_gets(details)

    async def _time_gets(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[float]:
        """Milliseconds of each GET, one at a time, after one uncounted warm-up request."""
        await self.http.get(requests[0][0], params=requests[0][1], headers=self.headers)
        times: list[float] = []
        for path, params in requests:
            started = time.perf_counter()
            resp = await self.http.get(path, params=params, headers=self.headers)
            times.append((time.perf_counter() - started) * 1000)
            if resp.status_code != 200:
                raise SystemExit(f"GET {path} {params}: {resp.status_code} {resp.text[:300]}")
        return times

    async def raw_temporal(self, figures: RunFigures, concurrency: int) -> None:
        """N one-activity workflows on their own queue of the same dev server."""
        client: Client = self.state.temporal
        queue = f"bench-raw-{self.run}"
        handles: list[Any] = []
        async with Worker(client, task_queue=queue, workflows=[OneActivityWorkflow], activities=[noop]):

            async def start(index: int) -> None:
                handles.append(
                    await client.start_workflow(
                        OneActivityWorkflow.run, index, id=f"bench-raw/{self.run}/{index}", task_queue=queue
                    )
                )

            began = time.monotonic()
            await bounded(range(figures.n), concurrency, start)
            figures.raw_start_s = time.monotonic() - began
            await asyncio.gather(*(h.result() for h in handles))
            figures.raw_done_s = time.monotonic() - began

    async def stop_run_workflows(self) -> None:
        """The workspace's own workflows never end by themselves: end them with the run."""
        for workflow_id in (
            scheduler_workflow_id(self.workspace_id),
            workspace_workflow_id(self.workspace_id),
        ):
            with contextlib.suppress(Exception):
                await self.state.temporal.get_workflow_handle(workflow_id).terminate("benchmark run over")


@contextlib.asynccontextmanager
async def platform(url: str, work: Path) -> AsyncIterator[Bench]:
    """The API in-process with its worker (as `up` runs them), logged in as the admin."""
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        data_dir=work,
        database_url=url,
        temporal_address=f"127.0.0.1:{TEMPORAL_PORT}",
        secret_key=Fernet.generate_key().decode(),
        admin_password=ADMIN_PASSWORD,
        queues=TaskQueues(
            control=f"control-{run}", ssh=f"ssh-{run}", images=f"images-{run}", workloads=f"workloads-{run}"
        ),
        workload_poll_seconds=0.5,
        scheduler_period_seconds=5,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.primus
        await ensure_admin(state.sessions, settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(state.temporal, settings, state.sessions, stop))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as http:
                resp = await http.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})
                resp.raise_for_status()
                http.cookies.clear()
                headers = {"Authorization": f"Bearer {resp.json()['token']}"}
                yield Bench(settings=settings, state=state, http=http, headers=headers, run=run)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker, timeout=30)


async def one_run(index: int, args: argparse.Namespace, work: Path) -> RunFigures:
    figures = RunFigures(n=args.workloads)
    print(f"run {index + 1}/{args.runs} ({args.database}):", flush=True)
    node_id = ""
    try:
        with database(args.database, work) as url:
            async with platform(url, work) as bench:
                node_id = f"bench-{bench.run}"
                await bench.seed_local_cluster()
                await bench.submit(figures, args.concurrency, wait_limit=max(300.0, args.workloads * 1.0))
                if figures.succeeded_s != figures.succeeded_s:
                    print(f"  NOT all Succeeded after the wait: {figures.final}", flush=True)
                ids = await bench.seed_finished(SEEDED)
                await bench.reads(figures, ids)
                await bench.raw_temporal(figures, args.concurrency)
                await bench.stop_run_workflows()
    finally:  # after the worker stopped: a running activity could recreate the folder before
        if node_id:
            shutil.rmtree(pods_root() / node_id, ignore_errors=True)
    print_run(figures)
    return figures


def print_run(f: RunFigures) -> None:
    print(f"  N = {f.n}; creates done in {f.submit_s:.2f} s, {f.failed_creates} failed")
    print(f"  create p50 {pct(f.create_ms, 50):7.1f} ms   p99 {pct(f.create_ms, 99):7.1f} ms")
    print(f"  all admitted   {f.admitted_s:7.2f} s after the first create")
    print(f"  all Running+   {f.running_s:7.2f} s   -> submit-to-Running {f.running_rate:7.1f} workloads/s")
    print(f"  all Succeeded  {f.succeeded_s:7.2f} s   final phases {f.final}")
    for name, times in f.reads_ms.items():
        print(f"  {name:34} p50 {pct(times, 50):7.1f} ms   p99 {pct(times, 99):7.1f} ms")
    print(
        f"  raw Temporal: {f.n} started in {f.raw_start_s:.2f} s ({f.raw_start_rate:.1f}/s), "
        f"all completed in {f.raw_done_s:.2f} s ({f.raw_rate:.1f}/s)"
    )
    print(
        f"  ratio submit-to-Running / raw start+complete {f.running_rate / f.raw_rate:.2f}, "
        f"/ raw start {f.running_rate / f.raw_start_rate:.2f}",
        flush=True,
    )


def print_median(runs: Sequence[RunFigures]) -> None:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    print(f"\nmedian of {len(runs)} runs (N = {runs[0].n}):")
    rows: list[tuple[str, float, str]] = [
        ("create p50", med([pct(r.create_ms, 50) for r in runs]), "ms"),
        ("create p99", med([pct(r.create_ms, 99) for r in runs]), "ms"),
        ("all admitted", med([r.admitted_s for r in runs]), "s"),
        ("all Running+", med([r.running_s for r in runs]), "s"),
        ("all Succeeded", med([r.succeeded_s for r in runs]), "s"),
        ("submit-to-Running", med([r.running_rate for r in runs]), "workloads/s"),
    ]
    for name in runs[0].reads_ms:
        rows.append((f"{name} p50", med([pct(r.reads_ms[name], 50) for r in runs]), "ms"))
        rows.append((f"{name} p99", med([pct(r.reads_ms[name], 99) for r in runs]), "ms"))
    rows += [
        ("raw Temporal start", med([r.raw_start_rate for r in runs]), "workflows/s"),
        ("raw Temporal start+complete", med([r.raw_rate for r in runs]), "workflows/s"),
        ("ratio to raw start+complete", med([r.running_rate / r.raw_rate for r in runs]), "x (goal >= 0.8)"),
        ("ratio to raw start", med([r.running_rate / r.raw_start_rate for r in runs]), "x"),
    ]
    for name, value, unit in rows:
        print(f"  {name:44} {value:9.2f} {unit}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workloads", "-n", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=16, help="creates (and raw starts) in flight")
    args = parser.parse_args()
    if sys.dont_write_bytecode:
        print(
            "note: PYTHONDONTWRITEBYTECODE is set: the workflow sandbox compiles each workflow module "
            "from source for every workflow instance (run with PYTHONDONTWRITEBYTECODE= "
            "PYTHONPYCACHEPREFIX=/tmp/pyc to measure what a deployment with bytecode does)",
            flush=True,
        )
    made_root = [p for p in (pods_root().parent, pods_root()) if not p.exists()]
    work = Path(tempfile.mkdtemp(prefix="primus-bench-submit-"))
    env = await start_dev_server(TEMPORAL_PORT)
    runs: list[RunFigures] = []
    try:
        for index in range(args.runs):
            runs.append(await one_run(index, args, work))
    finally:
        await env.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        for path in reversed(made_root):  # only what this run created, and only when empty
            with contextlib.suppress(OSError):
                path.rmdir()
    if runs:
        print_median(runs)


def entry() -> None:
    code = 1
    try:
        asyncio.run(main())
        code = 0
    except SystemExit as exc:
        print(exc, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # temporalio#300: Rust runtime threads can crash a normal interpreter exit


if __name__ == "__main__":
    from bench import submit  # this file as `bench.submit`: the sandbox imports the raw workflow by name

    submit.entry()
