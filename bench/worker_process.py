"""The worker as the benchmarks run it: `primus-safe worker` in its own process, as in production.

Its peak resident memory is the kernel's high-water mark (`VmHWM`), read before it stops; its CPU
time is split by thread name (the Temporal core's Rust threads, Python's threads). With `profile`
the worker runs under cProfile (the event loop's thread: activities, workflow code, database and
SDK calls) and `profile_summary` prints its busiest functions; for the other threads, attach
py-spy (`py-spy dump --pid` / `record`) to the printed PID.
"""

from __future__ import annotations

import collections
import compileall
import contextlib
import io
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from primus_safe.settings import Settings  # noqa: E402
from tests.fixtures.worker_processes import worker_env  # noqa: E402

READY_LINE = "worker running on"


class WorkerProcess:
    """A running `primus-safe worker`."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        """The highest resident set size the process has had so far, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread name (threads that ended are not counted)."""
        ticks = os.sysconf("SC_CLK_TCK")
        totals: dict[str, float] = collections.defaultdict(float)
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                name, fields = (task / "stat").read_text().rsplit(")", 1)
                comm = name.split("(", 1)[1]
                if task.name == str(self.pid):
                    comm = "event loop"
                elif comm == "python":
                    comm = "other Python threads"
                values = fields.split()
                totals[comm] += (int(values[11]) + int(values[12])) / ticks
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if READY_LINE in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the worker did not start: {log.read_text(errors='replace')[-3000:]}")


PACKAGES = ("api", "activities", "db", "domain", "drivers", "primus_safe", "workflows")
WORKER = "from primus_safe.cli import main; main()"
PROFILED_WORKER = """
import asyncio, cProfile, logging, os, sys
logging.basicConfig(level="INFO")
logging.getLogger("httpx").setLevel("WARNING")
from primus_safe.cli import load_settings, serve_worker
profile = cProfile.Profile()
profile.enable()
code = asyncio.run(serve_worker(load_settings()))
profile.disable()
profile.dump_stats(sys.argv[1])
os._exit(code)
"""


def compile_bytecode() -> None:
    """Bytecode for this checkout's packages, as `make` installs it: the workflow sandbox
    imports the workflow modules afresh for every workflow, and compiles them from source each
    time when the .pyc is missing or stale (PYTHONDONTWRITEBYTECODE is set on CI machines)."""
    for package in PACKAGES:
        compileall.compile_dir(str(ROOT / package), quiet=1)


@contextlib.contextmanager
def worker_process(
    settings: Settings, work: Path, *, profile: Path | None = None, **extra: str
) -> Iterator[WorkerProcess]:
    """Start `primus-safe worker` on `settings` (plus `extra` PRIMUS_* settings), ready to poll
    (under cProfile, stats to `profile`, when given); stop it with SIGTERM at the end."""
    compile_bytecode()
    log = work / f"worker-{time.monotonic_ns()}.log"
    env = worker_env(settings, data_dir=str(settings.data_dir), **extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever the venv's editable install points at
    argv = [sys.executable, "-c", WORKER, "worker"]
    if profile is not None:
        argv = [sys.executable, "-c", PROFILED_WORKER, str(profile)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    try:
        _wait_ready(proc, log)
        yield WorkerProcess(proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _package(filename: str, function: str) -> str:
    """Where a profiled function lives: a top-level package, or what a built-in does."""
    if filename == "~":
        if "poll" in function or "select" in function:
            return "(idle: waiting in epoll)"
        return "(built-ins and C extensions)"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if len(parts) > 2 and parts[-2] in PACKAGES:
        return f"primus-safe {parts[-2]}/"
    return "(standard library)" if "python3" in filename else "(other)"


def profile_summary(stats: Path, count: int = 25) -> str:
    """A cProfile dump of the worker's event-loop thread: own time per package, then the
    functions with the most own time."""
    out = io.StringIO()
    loaded = pstats.Stats(str(stats), stream=out)
    by_package: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    for (filename, _, function), (_, _, own, _, _) in loaded.stats.items():  # type: ignore[attr-defined]
        by_package[_package(filename, function)] += own
        total += own
    print(f"event-loop thread: {total:.1f} s profiled; own time by package:", file=out)
    for package, own in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {own:6.2f} s  {100 * own / total:5.1f}%  {package}", file=out)
    loaded.sort_stats("tottime").print_stats(count)
    return out.getvalue()


if __name__ == "__main__":
    print(profile_summary(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 30))
