"""Benchmark: `GET /api/v1/harbor/stats` latency with an internal registry of 1,000 repositories.

1,000 small images (one layer and a config of their own each) are pushed to a source registry and
imported through the API into the internal registry, the `system/registry-stats` check runs once,
then the stats are fetched over HTTP on loopback (uvicorn, SQLite) in several runs of many
requests. Prints the median and p95 of every run and of all requests, and checks that the
internal registry received no request during the measurements.

    .venv/bin/python bench/harbor_stats.py [--repos 1000] [--runs 5] [--requests 200]

Ports: registries 127.0.0.1:15025-15026, API 127.0.0.1:15027, Temporal dev server 127.0.0.1:17306
(override with PRIMUS_BENCH_TEMPORAL_PORT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from db.migrate import upgrade
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, TaskQueues
from primus_safe.worker import run_workers
from tests.fixtures.registry import Registry, push_repositories, refresh_registry_stats, running_registries
from tests.fixtures.temporal import start_dev_server

SOURCE_PORT, INTERNAL_PORT, API_PORT = 15025, 15026, 15027
ADMIN_PASSWORD = "bench-admin-password"


def p95(samples: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


async def import_all(http: httpx.AsyncClient, headers: dict[str, str], sources: list[str]) -> None:
    """Import every source through the API, 16 at a time, and wait until each is ready."""
    gate = asyncio.Semaphore(16)

    async def one(source: str) -> None:
        async with gate:
            answer = (
                await http.post("/api/v1/images:import", json={"source": source}, headers=headers)
            ).json()
            if answer.get("state") != 1:
                raise RuntimeError(f"import of {source} did not start: {answer}")
            while True:
                details = (
                    await http.get(f"/api/v1/images/{answer['imageId']}/importing-details", headers=headers)
                ).json()
                if details["status"] == "ready":
                    return
                if details["status"] != "importing":
                    raise RuntimeError(f"import of {source} failed: {details}")
                await asyncio.sleep(0.1)

    await asyncio.gather(*(one(s) for s in sources))


async def measure(http: httpx.AsyncClient, headers: dict[str, str], requests: int) -> list[float]:
    """Latencies (ms) of `requests` sequential stats calls."""
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        resp = await http.get("/api/v1/harbor/stats", headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        resp.raise_for_status()
    return samples


async def main(repos: int, runs: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="primus-bench-stats-") as tmp:
        root = Path(tmp)
        specs = {"source": (SOURCE_PORT, "", ""), "internal": (INTERNAL_PORT, "", "")}
        with running_registries(root / "registries", specs) as regs:
            env = await start_dev_server(int(os.environ.get("PRIMUS_BENCH_TEMPORAL_PORT", "17306")))
            try:
                await run_all(root, regs, env.client.service_client.config.target_host, repos, runs, requests)
            finally:
                await env.shutdown()


async def run_all(
    root: Path, regs: dict[str, Registry], temporal: str, repos: int, runs: int, requests: int
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
        images_internal_registry=regs["internal"].host,
        images_internal_insecure=True,
        images_allow_loopback_sources=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.primus
        await ensure_admin(state.sessions, settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(state.temporal, settings, state.sessions, stop))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=API_PORT, lifespan="off", log_config=None)
        )
        serving = asyncio.create_task(server.serve())
        try:
            for _ in range(500):
                if server.started:
                    break
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{API_PORT}", timeout=60) as http:
                token = (
                    await http.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})
                ).json()
                headers = {"Authorization": f"Bearer {token['token']}"}
                source = regs["source"]
                await http.post(
                    "/api/v1/image-registries",
                    json={"name": "bench-source", "url": f"http://{source.host}", "insecure": True},
                    headers=headers,
                )
                started = time.perf_counter()
                await push_repositories(source.host, repos, prefix="bench")
                print(f"pushed {repos} repositories to the source in {time.perf_counter() - started:.1f} s")
                started = time.perf_counter()
                await import_all(http, headers, [f"{source.host}/bench/app{i}:1" for i in range(repos)])
                print(f"imported them through the API in {time.perf_counter() - started:.1f} s")
                check = await refresh_registry_stats(state.temporal, settings)
                print(f"registry check: {check.status}, {check.repositories} repositories in its catalogue")
                served = len(regs["internal"].access_log())
                answer = (await http.get("/api/v1/harbor/stats", headers=headers)).json()
                print(f"stats: {answer}")
                if answer["public_repo_count"] != repos:
                    raise RuntimeError(f"expected {repos} repositories, the stats say {answer}")
                await measure(http, headers, 20)  # warm up
                everything: list[float] = []
                for index in range(runs):
                    samples = await measure(http, headers, requests)
                    everything += samples
                    print(
                        f"run {index + 1}: median {statistics.median(samples):.2f} ms, "
                        f"p95 {p95(samples):.2f} ms ({requests} requests)"
                    )
                print(
                    f"all {len(everything)} requests: median {statistics.median(everything):.2f} ms, "
                    f"p95 {p95(everything):.2f} ms"
                )
                extra = len(regs["internal"].access_log()) - served
                print(f"requests the internal registry received meanwhile: {extra}", flush=True)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker, 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.repos, args.runs, args.requests))
    os._exit(0)
