"""Benchmark: image import through the API versus `skopeo copy`, between two loopback registries.

A ~200 MB image of 8 incompressible layers is imported (a) into an empty target, (b) into a
target that already holds half of the layers and (c) into one that holds all of them (only the
manifests are copied), `--runs` runs each, alternating the two tools.
Every run copies into a fresh repository of a freshly emptied target registry, so neither tool
profits from an earlier run. Prints the medians, the ratio API / skopeo and
the peak RSS of the process holding the API and the worker.

    .venv/bin/python bench/image_import.py [--runs 3] [--mb 200]

Ports: registries 127.0.0.1:15015-15016, Temporal dev server 127.0.0.1:17305 (override with
PRIMUS_BENCH_TEMPORAL_PORT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from bench.worker_process import profile_summary, worker_process
from db.migrate import upgrade
from domain.images import TARGET_NAMESPACE, host_component
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, TaskQueues
from tests.fixtures.registry import (
    SKOPEO_BIN,
    Registry,
    build_manifest,
    restart_empty,
    running_registries,
    skopeo_digest,
    skopeo_push,
    write_layout,
)
from tests.fixtures.temporal import start_dev_server

SOURCE_PORT, TARGET_PORT = 15015, 15016
LAYERS = 8
EMPTY, HALF, ALL = "empty target", "target holds half the layers", "target holds every layer"
ADMIN_PASSWORD = "bench-admin-password"


def build_images(root: Path, total_mb: int) -> tuple[str, str]:
    """OCI layouts of the full image (8 random layers) and of one holding its first 4 layers."""
    size = total_mb * 1024 * 1024 // LAYERS
    layers = [{f"data{i}.bin": os.urandom(size)} for i in range(LAYERS)]
    full = write_layout(root / "full", "full", build_manifest(root / "full", layers, compress=False))
    half = write_layout(
        root / "half", "half", build_manifest(root / "half", layers[: LAYERS // 2], compress=False)
    )
    return full, half


def skopeo_copy(source: Registry, target: Registry, src_repo: str, dst_repo: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            SKOPEO_BIN,
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{source.host}/{src_repo}:1",
            f"docker://{target.host}/{dst_repo}:1",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


async def api_import(http: httpx.AsyncClient, headers: dict[str, str], source: Registry, repo: str) -> float:
    start = time.perf_counter()
    resp = await http.post(
        "/api/v1/images:import", json={"source": f"{source.host}/{repo}:1"}, headers=headers
    )
    answer = resp.json()
    if answer.get("state") != 1:
        raise RuntimeError(f"import did not start: {answer}")
    while True:
        details = (
            await http.get(f"/api/v1/images/{answer['imageId']}/importing-details", headers=headers)
        ).json()
        if details["status"] != "importing":
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    if details["status"] != "ready":
        raise RuntimeError(f"import failed: {details}")
    return elapsed


async def main(runs: int, total_mb: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="primus-bench-") as tmp:
        root = Path(tmp)
        print(f"building a {total_mb} MB image of {LAYERS} incompressible layers ...", flush=True)
        full, half = build_images(root, total_mb)
        specs = {"source": (SOURCE_PORT, "", ""), "target": (TARGET_PORT, "", "")}
        with running_registries(root / "registries", specs) as regs:
            env = await start_dev_server(int(os.environ.get("PRIMUS_BENCH_TEMPORAL_PORT", "17305")))
            try:
                await run_all(
                    root, regs, env.client.service_client.config.target_host, full, half, runs, profile
                )
            finally:
                await env.shutdown()


async def run_all(
    root: Path,
    regs: dict[str, Registry],
    temporal: str,
    full: str,
    half: str,
    runs: int,
    profile: Path | None,
) -> None:
    db_url = f"sqlite+aiosqlite:///{root / 'primus.db'}"
    upgrade(db_url)
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=root / "data",
        database_url=db_url,
        temporal_address=temporal,
        secret_key=Fernet.generate_key().decode(),
        admin_password=ADMIN_PASSWORD,
        queues=TaskQueues(
            control=f"control-{run}", ssh=f"ssh-{run}", images=f"images-{run}", workloads=f"workloads-{run}"
        ),
        images_internal_registry=regs["target"].host,
        images_internal_insecure=True,
        images_allow_loopback_sources=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.primus
        await ensure_admin(state.sessions, settings)
        with worker_process(
            settings,
            root,
            profile=profile,
            images_internal_registry=regs["target"].host,
            images_internal_insecure="true",
            images_allow_loopback_sources="true",
        ) as worker:
            await run_scenarios(app, regs, full, half, runs)
            print(f"\nworker peak RSS: {worker.peak_rss_mb():.0f} MiB (pid {worker.pid})")
            threads = ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(worker.thread_cpu().items())[:6])
            print(f"worker CPU seconds by thread: {threads}", flush=True)
    if profile is not None:
        print(profile_summary(profile, 40))


async def run_scenarios(app: FastAPI, regs: dict[str, Registry], full: str, half: str, runs: int) -> None:
    """Log in as the administrator, register the source registry, time every scenario."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as http:
        token = (await http.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})).json()
        headers = {"Authorization": f"Bearer {token['token']}"}
        registry = {"name": "bench-source", "url": f"http://{regs['source'].host}", "insecure": True}
        await http.post("/api/v1/image-registries", json=registry, headers=headers)
        for scenario in (EMPTY, HALF, ALL):
            await scenario_runs(http, headers, regs, full, half, runs, scenario)


async def scenario_runs(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    regs: dict[str, Registry],
    full: str,
    half: str,
    runs: int,
    scenario: str,
) -> None:
    api_times: list[float] = []
    skopeo_times: list[float] = []
    for index in range(runs):
        for tool in ("api", "skopeo"):
            regs["target"] = restart_empty(regs["target"])
            repo = f"bench/{tool}-{index}-{uuid.uuid4().hex[:6]}"
            skopeo_push(full, regs["source"], f"{repo}:1")
            target_repo = f"{TARGET_NAMESPACE}/{host_component(regs['source'].host)}/{repo}"
            if scenario == HALF:
                skopeo_push(half, regs["target"], f"{target_repo}:half")
            elif scenario == ALL:
                skopeo_push(full, regs["target"], f"{target_repo}:full")
            if tool == "api":
                api_times.append(await api_import(http, headers, regs["source"], repo))
            else:
                skopeo_times.append(
                    await asyncio.to_thread(skopeo_copy, regs["source"], regs["target"], repo, target_repo)
                )
            if skopeo_digest(regs["target"], f"{target_repo}:1") != skopeo_digest(
                regs["source"], f"{repo}:1"
            ):
                raise RuntimeError(f"{tool}: the target image differs from the source")
    api_median, skopeo_median = statistics.median(api_times), statistics.median(skopeo_times)
    print(f"\n== {scenario} ({runs} runs each) ==")
    print(f"API import  : median {api_median:.2f} s   runs {', '.join(f'{t:.2f}' for t in api_times)}")
    print(f"skopeo copy : median {skopeo_median:.2f} s   runs {', '.join(f'{t:.2f}' for t in skopeo_times)}")
    print(f"ratio API / skopeo: {api_median / skopeo_median:.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the worker into FILE")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.mb, args.profile))
    os._exit(0)
