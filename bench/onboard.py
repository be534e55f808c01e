"""Onboarding benchmark: N nodes registered through the API until all are Ready, beside ansible.

Self-contained: starts a Temporal dev server, N sshd on 127.0.0.2.. (one host key each), the API
in-process and `primus-safe worker` in its own process (as in production), on a fresh SQLite
database per run (or PostgreSQL with `--database-url`, emptied per run), then stops every
process it started. Each of `--runs` runs is followed by ansible `true` with forks=N and by plain
paramiko (log in + `true`) on the same hosts; the medians, the worker's CPU time and its peak RSS
are printed. `--profile DIR` runs the worker under cProfile and prints its busiest functions.

Each node goes through the real steps over SSH: reach (login with a key), fact discovery, and one
real catalogue addon (`sysctl-inotify`, sandboxed with PRIMUS_ADDON_ROOT). ansible-core is
installed into the running venv when missing (`pip install -e '.[bench]'` installs it and py-spy).

    .venv/bin/python bench/onboard.py [-n 100] [--runs 5] [--profile DIR] [--default-forks]
        [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import paramiko
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select, text

from api.app import create_app
from api.state import AppState
from bench.worker_process import profile_summary, worker_process
from db.migrate import upgrade
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from db.secrets import Secret
from db.urls import sync_url
from domain.timefmt import utcnow
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, TaskQueues
from tests.fixtures.nodes import this_machine_flavor
from tests.fixtures.sshd import SSHFarm, SSHHost, sshd_farm
from tests.fixtures.temporal import start_dev_server

TEMPORAL_PORT = 17344
SSH_PORT = 22344
ADMIN_PASSWORD = "bench-admin-password"
REGISTER_CONCURRENCY = 16
"""Registration requests in flight at once, as a script registering a rack would send them."""
BIN = Path(sysconfig.get_path("scripts"))


def ensure_ansible() -> Path:
    """The venv's `ansible` binary, pip-installing ansible-core into the venv when missing."""
    ansible = BIN / "ansible"
    if not ansible.exists():
        print("installing ansible-core into the venv (not a project dependency) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "ansible-core"], check=True)
    return ansible


def run_ansible(ansible: Path, farm: SSHFarm, hosts: list[SSHHost], work: Path, forks: int | None) -> float:
    """Seconds ansible takes to run `true` on every host (fails loudly when a host fails)."""
    key = work / "ansible_key"
    key.write_text(farm.private_key_pem)
    key.chmod(0o600)
    inventory = work / "inventory.ini"
    inventory.write_text(
        "[nodes]\n"
        + "".join(f"n{i} ansible_host={h.address} ansible_port={h.port}\n" for i, h in enumerate(hosts))
        + f"[nodes:vars]\nansible_user={farm.user}\nansible_ssh_private_key_file={key}\n"
        + "ansible_python_interpreter=/usr/bin/python3\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "ansible-cp"),
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
    }
    argv = [str(ansible), "nodes", "-i", str(inventory), "-m", "ansible.builtin.command", "-a", "true"]
    if forks is not None:
        argv += ["--forks", str(forks)]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    stop_ssh_masters(work / "ansible-cp")
    if result.returncode != 0:
        raise RuntimeError(
            f"ansible failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return elapsed


def stop_ssh_masters(control_dir: Path) -> None:
    """Ask every ControlPersist master ansible left behind to exit (they would linger 60 s)."""
    if not control_dir.is_dir():
        return
    for socket_path in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "unused"],
            capture_output=True,
            check=False,
        )


async def seed(state: AppState, farm: SSHFarm) -> None:
    """Flavor = this machine, a template with one real addon, an ssh key secret."""
    now = utcnow()
    param = {
        "username": farm.user,
        "privateKey": base64.b64encode(farm.private_key_pem.encode()).decode(),
        "publicKey": base64.b64encode(farm.public_key.encode()).decode(),
    }
    async with state.sessions() as session, session.begin():
        session.add(
            NodeFlavor(
                id="bench", display_name="bench", spec=this_machine_flavor(), created_at=now, updated_at=now
            )
        )
        session.add(NodeTemplate(id="bench", display_name="bench", addons=["sysctl-inotify"], created_at=now))
        session.add(
            Secret(
                id="bench-key",
                name="bench-key",
                type="ssh",
                params_encrypted=state.box.encrypt_json([param]),
                bind_all_workspaces=False,
                resource_version=1,
                created_at=now,
                updated_at=now,
            )
        )


async def report_per_node(state: AppState) -> None:
    """Print how long single nodes took from registration to their final phase."""
    async with state.sessions() as session:
        rows = (await session.execute(select(Node.created_at, Node.phase_changed_at))).all()
    spans = sorted((changed - created).total_seconds() for created, changed in rows if changed)
    if spans:
        print(
            f"  per node, registration -> final phase: min {spans[0]:.2f} s, "
            f"median {statistics.median(spans):.2f} s, max {spans[-1]:.2f} s",
            flush=True,
        )


async def report_temporal_steps(state: AppState) -> None:
    """Per activity type, from the node workflows' histories: time from scheduled to started (the
    wait for a worker slot) and from started to completed (the run); workflow tasks the same;
    and the events per workflow."""
    async with state.sessions() as session:
        node_ids = list((await session.scalars(select(Node.id))).all())
    waits: dict[str, list[float]] = {}
    runs: dict[str, list[float]] = {}
    events: list[int] = []
    for node_id in node_ids:
        history = await state.temporal.get_workflow_handle(f"node/{node_id}").fetch_history()
        scheduled: dict[int, tuple[str, datetime]] = {}
        started: dict[int, datetime] = {}
        events.append(len(history.events))
        for event in history.events:
            at = event.event_time.ToDatetime()
            kind = event.WhichOneof("attributes")
            if kind == "activity_task_scheduled_event_attributes":
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = (name, at)
            elif kind == "workflow_task_scheduled_event_attributes":
                scheduled[event.event_id] = ("workflow task", at)
            elif kind == "activity_task_started_event_attributes":
                sid = event.activity_task_started_event_attributes.scheduled_event_id
                name, when = scheduled[sid]
                waits.setdefault(name, []).append((at - when).total_seconds())
                started[sid] = at
            elif kind == "workflow_task_started_event_attributes":
                sid = event.workflow_task_started_event_attributes.scheduled_event_id
                name, when = scheduled[sid]
                waits.setdefault(name, []).append((at - when).total_seconds())
                started[sid] = at
            elif kind == "activity_task_completed_event_attributes":
                sid = event.activity_task_completed_event_attributes.scheduled_event_id
                runs.setdefault(scheduled[sid][0], []).append((at - started[sid]).total_seconds())
            elif kind == "workflow_task_completed_event_attributes":
                sid = event.workflow_task_completed_event_attributes.scheduled_event_id
                runs.setdefault("workflow task", []).append((at - started[sid]).total_seconds())
    print(f"  events per node workflow: median {statistics.median(events)}", flush=True)
    for name in sorted(waits, key=lambda n: -statistics.median(waits[n])):
        wait, run = sorted(waits[name]), sorted(runs.get(name, [0.0]))
        print(
            f"  {name:22} x{len(wait) / len(node_ids):.0f}/node: scheduled->started median "
            f"{statistics.median(wait) * 1000:6.0f} ms (max {wait[-1] * 1000:5.0f}), started->completed "
            f"median {statistics.median(run) * 1000:6.0f} ms (max {run[-1] * 1000:5.0f})",
            flush=True,
        )


async def node_items(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every node, as GET /nodes lists them."""
    resp = await http.get("/api/v1/nodes", params={"limit": -1}, headers=headers)
    return list(resp.json()["items"])


def settled(items: list[dict[str, Any]]) -> bool:
    """Every node has a phase and none is being onboarded (some may have failed)."""
    return all(i["phase"] and "being onboarded" not in i["message"] for i in items)


def phase_counts(items: list[dict[str, Any]]) -> dict[str, int]:
    """How many nodes are in each phase (Ready but unavailable counted apart)."""
    phases: dict[str, int] = {}
    for item in items:
        key = item["phase"] if item["available"] or item["phase"] != "Ready" else "Ready(unavailable)"
        phases[key or "onboarding"] = phases.get(key or "onboarding", 0) + 1
    return phases


async def onboard(
    settings: Settings, farm: SSHFarm, hosts: list[SSHHost], work: Path, profile: Path | None
) -> Run:
    """Register every host through the API, with the worker in its own process; the run's figures."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.primus
        await ensure_admin(state.sessions, settings)
        await seed(state, farm)
        commands = json.dumps(settings.node_commands)
        with worker_process(
            settings,
            work,
            profile=profile,
            node_commands=commands,
            node_probe_interval_seconds=str(settings.node_probe_interval_seconds),
        ) as worker:
            cpu_before = worker.cpu_seconds()
            machine_before, api_before = machine_cpu_seconds(), time.process_time()
            others_before = others_cpu_seconds(farm)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as http:
                resp = await http.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})
                headers = {"Authorization": f"Bearer {resp.json()['token']}"}
                http.cookies.clear()
                gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

                async def register(host: SSHHost) -> None:
                    body = {
                        "privateIP": host.address,
                        "port": host.port,
                        "flavorId": "bench",
                        "templateId": "bench",
                        "sshSecretId": "bench-key",
                    }
                    async with gate:
                        resp = await http.post("/api/v1/nodes", json=body, headers=headers)
                    resp.raise_for_status()

                api_profile = cProfile.Profile() if profile is not None else None
                started = time.monotonic()
                if api_profile is not None:
                    api_profile.enable()
                await asyncio.gather(*(register(host) for host in hosts))
                registered = time.monotonic() - started
                if api_profile is not None and profile is not None:
                    api_profile.disable()
                    api_profile.dump_stats(profile.with_suffix(".api.pstats"))
                # a light poll (a count) every 0.1 s; the whole list, to notice nodes that failed,
                # every 2 s: the poll itself must not take the CPU the onboarding needs
                last_full = started
                while time.monotonic() - started < 600:
                    ready = (
                        await http.get(
                            "/api/v1/nodes",
                            params={"phase": "Ready", "available": "true", "brief": "true", "limit": 1},
                            headers=headers,
                        )
                    ).json()["totalCount"]
                    if ready == len(hosts):
                        break
                    if time.monotonic() - last_full > 2:
                        last_full = time.monotonic()
                        if settled(await node_items(http, headers)):
                            break
                    await asyncio.sleep(0.1)
                elapsed = time.monotonic() - started
                phases = phase_counts(await node_items(http, headers))
            result = Run(
                seconds=elapsed,
                registered_seconds=registered,
                phases=phases,
                worker_peak_mb=worker.peak_rss_mb(),
                worker_cpu_seconds=worker.cpu_seconds() - cpu_before,
                worker_threads=worker.thread_cpu(),
                machine_cpu_seconds=machine_cpu_seconds() - machine_before,
                api_cpu_seconds=time.process_time() - api_before,
                others_cpu_seconds={
                    name: cpu - others_before[name] for name, cpu in others_cpu_seconds(farm).items()
                },
            )
        await report_per_node(state)
        await report_temporal_steps(state)
        return result


@dataclass
class Run:
    """One onboarding run's figures."""

    seconds: float
    registered_seconds: float
    phases: dict[str, int]
    worker_peak_mb: float
    worker_cpu_seconds: float
    worker_threads: dict[str, float]
    machine_cpu_seconds: float
    """Every process's CPU time during the run (both cores busy the whole run = 2 x its length)."""
    api_cpu_seconds: float
    """The benchmark's own process: the API and the HTTP client that registers and polls."""
    others_cpu_seconds: dict[str, float]

    @property
    def unaccounted_cpu_seconds(self) -> float:
        """What other processes of the machine used meanwhile (noise, when not near zero)."""
        ours = self.worker_cpu_seconds + self.api_cpu_seconds + sum(self.others_cpu_seconds.values())
        return self.machine_cpu_seconds - ours


def machine_cpu_seconds() -> float:
    """CPU time used on this machine so far, all processes (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time of one process (with `children`, also of the children it has reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def others_cpu_seconds(farm: SSHFarm) -> dict[str, float]:
    """CPU time so far of the Temporal dev server and of every sshd of the farm (with the
    sessions they served)."""
    temporal = subprocess.run(
        ["pgrep", "-f", f"temporal server start-dev --port {TEMPORAL_PORT}"], capture_output=True, text=True
    ).stdout.split()
    sshd = [int(f.read_text()) for f in farm.root.glob("*.pid") if f.read_text().strip().isdigit()]
    return {
        "Temporal server": sum(process_cpu_seconds(int(pid), children=True) for pid in temporal),
        "sshd": sum(process_cpu_seconds(pid, children=True) for pid in sshd),
    }


def paramiko_pass(farm: SSHFarm, hosts: list[SSHHost]) -> float:
    """Seconds for plain paramiko to log in and run `true` on every host at once (the floor)."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(farm.private_key_pem))

    def one(host: SSHHost) -> None:
        with paramiko.SSHClient() as client:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.connect(
                host.address,
                port=host.port,
                username=farm.user,
                pkey=key,
                allow_agent=False,
                look_for_keys=False,
                timeout=30,
            )
            _, out, _ = client.exec_command("true")
            out.channel.recv_exit_status()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.monotonic() - started


def bench_settings(work: Path, url: str, farm: SSHFarm) -> Settings:
    """Settings of one run: its own task queues, the farm's sandboxed addon root."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=work,
        database_url=url,
        temporal_address=f"127.0.0.1:{TEMPORAL_PORT}",
        secret_key=Fernet.generate_key().decode(),
        admin_password=ADMIN_PASSWORD,
        queues=TaskQueues(
            control=f"control-{run}", ssh=f"ssh-{run}", images=f"images-{run}", workloads=f"workloads-{run}"
        ),
        node_commands={
            "run_addon": ["env", f"PRIMUS_ADDON_ROOT={farm.home}/bench-sysroot", "bash", "{script}"]
        },
        node_probe_interval_seconds=86400,  # the periodic health check is not part of onboarding
    )


def fresh_database(work: Path, run: int, database_url: str | None) -> str:
    """A new SQLite file per run, or the given PostgreSQL database emptied and migrated."""
    if database_url is None:
        url = f"sqlite+aiosqlite:///{work / f'primus-{run}.db'}"
    else:
        url = database_url
        engine = create_engine(sync_url(url))
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    upgrade(url)
    return url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--nodes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="onboarding and ansible forks=N runs")
    parser.add_argument("--default-forks", action="store_true", help="also time ansible's default forks")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the worker into DIR")
    args = parser.parse_args()
    ansible = ensure_ansible()
    work = Path(tempfile.mkdtemp(prefix="primus-bench-"))
    env = await start_dev_server(TEMPORAL_PORT)
    runs: list[Run] = []
    forks: list[float] = []
    floor: list[float] = []
    defaults: list[float] = []
    failures: list[str] = []
    try:
        with sshd_farm(SSH_PORT) as farm:
            hosts = farm.add_hosts(args.nodes)
            print(f"{len(hosts)} sshd on {hosts[0].address}..{hosts[-1].address}:{SSH_PORT}", flush=True)
            for index in range(args.runs):
                url = fresh_database(work, index, args.database_url)
                profile = None
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profile = args.profile / f"onboard-worker-{index + 1}.pstats"
                run = await onboard(bench_settings(work, url, farm), farm, hosts, work, profile)
                runs.append(run)
                if run.phases.get("Ready") != len(hosts):
                    failures.append(f"run {index + 1}: not every node became Ready: {run.phases}")
                forks.append(run_ansible(ansible, farm, hosts, work, len(hosts)))
                floor.append(paramiko_pass(farm, hosts))
                if args.default_forks:
                    defaults.append(run_ansible(ansible, farm, hosts, work, None))
                print(
                    f"run {index + 1}/{args.runs}: primus-safe {run.seconds:.2f} s "
                    f"(registrations {run.registered_seconds:.2f} s, "
                    f"worker CPU {run.worker_cpu_seconds:.1f} s, "
                    f"worker peak RSS {run.worker_peak_mb:.0f} MiB), ansible forks=N {forks[-1]:.2f} s, "
                    f"paramiko {floor[-1]:.2f} s",
                    flush=True,
                )
                threads = ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(run.worker_threads.items())[:6])
                print(f"  worker CPU seconds by thread: {threads}", flush=True)
                print(
                    f"  CPU seconds during the run: machine {run.machine_cpu_seconds:.1f} "
                    f"(of {os.cpu_count() or 1} x {run.seconds:.1f}), worker {run.worker_cpu_seconds:.1f}, "
                    f"API and bench client {run.api_cpu_seconds:.1f}, "
                    + ", ".join(f"{name} {cpu:.1f}" for name, cpu in run.others_cpu_seconds.items())
                    + f", the rest (kernel, other processes) {run.unaccounted_cpu_seconds:.1f}",
                    flush=True,
                )
                if profile is not None:
                    print("worker:", profile_summary(profile, 25), flush=True)
                    print("API, while registering:", profile_summary(profile.with_suffix(".api.pstats"), 25))
    finally:
        await env.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    n = len(hosts)

    def row(label: str, values: list[float]) -> None:
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:66} {statistics.median(values):8.2f}   ({each})")

    print()
    print(f"{f'what (median of {args.runs} runs)':66} {'seconds':>8}")
    row(f"primus-safe: {n} nodes registered -> all Ready (reach, facts, 1 addon)", [r.seconds for r in runs])
    row(f"primus-safe: the {n} registration requests answered", [r.registered_seconds for r in runs])
    row(f"ansible: `true` on {n} hosts, forks={n}", forks)
    if defaults:
        row(f"ansible: `true` on {n} hosts, default forks (5)", defaults)
    row(f"paramiko: log in + `true` on {n} hosts at once", floor)
    row("worker CPU seconds per run", [r.worker_cpu_seconds for r in runs])
    ratios = [r.seconds / f for r, f in zip(runs, forks, strict=True)]
    print(f"ratio primus-safe / ansible forks={n}: median {statistics.median(ratios):.2f}")
    print(f"worker peak RSS: max {max(r.worker_peak_mb for r in runs):.0f} MiB")
    if failures:
        raise SystemExit("; ".join(failures))


if __name__ == "__main__":
    code = 0
    try:
        asyncio.run(main())
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # temporalio#300: Rust runtime threads can crash a normal interpreter exit
