"""Onboarding benchmark: N nodes registered through the API until all are Ready, beside ansible.

Self-contained: starts a Temporal dev server, N sshd on 127.0.0.2.. (one host key each), the API
in-process with its worker, on a SQLite database in a temporary directory (or PostgreSQL with
`--database-url`), then stops every process it started.

Each node goes through the real steps over SSH: reach (login with a key), fact discovery, and one
real catalogue addon (`sysctl-inotify`, sandboxed with PRIMUS_ADDON_ROOT). ansible-core is
installed into the running venv when missing (it is not a project dependency) and runs `true`
on the same N hosts with its default forks and with forks=N.

    .venv/bin/python bench/onboard.py [-n 100] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import select

from api.app import create_app
from api.state import AppState
from db.migrate import upgrade
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from db.secrets import Secret
from domain.timefmt import utcnow
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, TaskQueues
from primus_safe.worker import run_workers
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


async def onboard(settings: Settings, farm: SSHFarm, hosts: list[SSHHost]) -> tuple[float, dict[str, int]]:
    """Register every host through the API; seconds until all are Ready, and the final phases."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.primus
        await ensure_admin(state.sessions, settings)
        await seed(state, farm)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(state.temporal, settings, state.sessions, stop))
        transport = httpx.ASGITransport(app=app)
        try:
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

                started = time.monotonic()
                await asyncio.gather(*(register(host) for host in hosts))
                registered = time.monotonic() - started
                print(
                    f"  {len(hosts)} nodes registered in {registered:.2f} s; waiting for Ready ...",
                    flush=True,
                )
                phases: dict[str, int] = {}
                while time.monotonic() - started < 600:
                    items = (await http.get("/api/v1/nodes", params={"limit": -1}, headers=headers)).json()[
                        "items"
                    ]
                    phases = {}
                    for item in items:
                        key = (
                            item["phase"]
                            if item["available"] or item["phase"] != "Ready"
                            else "Ready(unavailable)"
                        )
                        phases[key or "onboarding"] = phases.get(key or "onboarding", 0) + 1
                    settled = all(i["phase"] and "being onboarded" not in i["message"] for i in items)
                    if phases.get("Ready") == len(hosts) or settled:
                        break
                    await asyncio.sleep(0.1)
                elapsed = time.monotonic() - started
                await report_per_node(state)
                return elapsed, phases
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker, timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--nodes", type=int, default=100)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    ansible = ensure_ansible()
    work = Path(tempfile.mkdtemp(prefix="primus-bench-"))
    env = await start_dev_server(TEMPORAL_PORT)
    try:
        with sshd_farm(SSH_PORT) as farm:
            hosts = farm.add_hosts(args.nodes)
            print(f"{len(hosts)} sshd on {hosts[0].address}..{hosts[-1].address}:{SSH_PORT}", flush=True)
            url = args.database_url or f"sqlite+aiosqlite:///{work / 'primus.db'}"
            upgrade(url)
            run = uuid.uuid4().hex[:8]
            settings = Settings(
                data_dir=work,
                database_url=url,
                temporal_address=f"127.0.0.1:{TEMPORAL_PORT}",
                secret_key=Fernet.generate_key().decode(),
                admin_password=ADMIN_PASSWORD,
                queues=TaskQueues(
                    control=f"control-{run}",
                    ssh=f"ssh-{run}",
                    images=f"images-{run}",
                    workloads=f"workloads-{run}",
                ),
                node_commands={
                    "run_addon": ["env", f"PRIMUS_ADDON_ROOT={farm.home}/bench-sysroot", "bash", "{script}"]
                },
            )
            primus_seconds, phases = await onboard(settings, farm, hosts)
            print(f"  final phases: {phases}", flush=True)
            default_seconds = run_ansible(ansible, farm, hosts, work, None)
            forks_seconds = run_ansible(ansible, farm, hosts, work, len(hosts))
    finally:
        await env.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    n = len(hosts)
    print()
    print(f"{'what':72} {'seconds':>8}")
    label = f"primus-safe: {n} nodes registered -> all Ready (reach, facts, 1 addon)"
    print(f"{label:72} {primus_seconds:8.2f}")
    print(f"{f'ansible: `true` on {n} hosts, default forks (5)':72} {default_seconds:8.2f}")
    print(f"{f'ansible: `true` on {n} hosts, forks={n}':72} {forks_seconds:8.2f}")
    print(f"ratio primus-safe / ansible default forks: {primus_seconds / default_seconds:.2f}")
    print(f"ratio primus-safe / ansible forks={n}:    {primus_seconds / forks_seconds:.2f}")
    if phases.get("Ready") != n:
        raise SystemExit(f"not every node became Ready: {phases}")


if __name__ == "__main__":
    code = 0
    try:
        asyncio.run(main())
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # temporalio#300: Rust runtime threads can crash a normal interpreter exit
