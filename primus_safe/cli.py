"""The `primus-safe` command: `up` (everything embedded), `api`, `worker` and `db` for deployments."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from db import migrate
from db.session import create_engine, session_factory
from primus_safe.bootstrap import AdminBootstrap, ensure_admin
from primus_safe.cli_image import image_app
from primus_safe.cli_login import login
from primus_safe.cli_workload import workload_app
from primus_safe.embedded import (
    EmbeddedPorts,
    EmbeddedService,
    EmbeddedServiceError,
    embedded_services,
    ensure_port_free,
)
from primus_safe.local_node import run_local_node
from primus_safe.serve import api_server, connections, run_until_stopped
from primus_safe.settings import Settings, SettingsError
from primus_safe.temporal import ensure_search_attributes

log = logging.getLogger("primus_safe")

app = typer.Typer(
    name="primus-safe",
    help="Primus-SaFE control plane for AI GPU clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(image_app, name="image")
app.add_typer(workload_app, name="workload")
app.command("login")(login)

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a readable error (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter finalisation: the Temporal SDK's threads can abort it (sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from PRIMUS_* with the command-line overrides that were given."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        fail(f"invalid PRIMUS_* setting: {exc}")


def ensure_data_dir(settings: Settings) -> None:
    """Create the data directory (private) when the SQLite default database lives there."""
    if settings.database_url is None or settings.dev_mode:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


CONSOLE_OPTION_HELP = (
    "Serve a web console build (upstream's) from DIR at /, its /api/<path> calls answered as /api/v1/<path>."
)


def require_console(settings: Settings) -> None:
    """Refuse a --console directory that is not a console build (no index.html)."""
    if settings.console_dir is not None and not (settings.console_dir / "index.html").is_file():
        fail(f"--console {settings.console_dir}: no index.html there (build the console first)")


def require_secret_key(settings: Settings) -> None:
    """Refuse to start without a usable PRIMUS_SECRET_KEY (dev mode generates one)."""
    try:
        settings.encryption_key()
    except SettingsError as exc:
        fail(str(exc))


def run_migrations(settings: Settings, revision: str = "head") -> None:
    """Upgrade the schema; a failure is reported without a traceback."""
    try:
        migrate.upgrade(settings.sqlalchemy_url, revision)
    except Exception as exc:
        fail(f"database migration failed: {type(exc).__name__}: {exc}", code=1)


def install_stop_signals(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: graceful stop. A second one: immediate exit."""
    loop = asyncio.get_running_loop()

    def _on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            err_console.print(f"{sig.name} again: exiting immediately")
            exit_now(130)
        err_console.print(f"{sig.name} received: stopping (again to force)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, sig)


@app.callback()
def _configure(
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Primus-SaFE: run `primus-safe up` for the embedded platform."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(name)s: %(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=log_level.upper(), format=fmt, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # a line per request


# --- up -------------------------------------------------------------------------------------------


def report_admin(result: AdminBootstrap) -> None:
    """Say how to log in the first time; say nothing once `root` exists."""
    if not result.created:
        return
    if result.password is None:
        console.print("Created the administrator [bold]root[/] with the password from PRIMUS_ADMIN_PASSWORD.")
        return
    console.print(
        f"Created the administrator [bold]root[/] with password [bold]{escape(result.password)}[/] "
        f"(also written to {escape(str(result.password_file))}; it is shown only once)."
    )


def print_urls(settings: Settings, ports: EmbeddedPorts, services: list[EmbeddedService]) -> None:
    """Where everything is, one line each (lines are never wrapped, so URLs stay whole in logs)."""
    base = f"http://127.0.0.1:{ports.api}"
    rows = {"API": f"{base}/api/v1", "OpenAPI docs": f"{base}/docs"}
    if settings.console_dir is not None:
        rows["Web console"] = f"{base}/"
    for service in services:
        rows.update(service.urls())
    rows["Data"] = str(settings.data_dir)
    width = max(map(len, rows))
    console.print("[bold green]Primus-SaFE is running[/]")
    for label, url in rows.items():
        console.print(f"  [bold]{escape(label.ljust(width))}[/]  {escape(url)}", highlight=False)
    console.print("Press Ctrl-C to stop.")


def say(line: str) -> None:
    """One progress line of a background step of `up`."""
    console.print(escape(line), highlight=False)


async def _cancel_on(stop: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Cancel `task` as soon as `stop` is set (before the API it calls shuts down)."""
    await stop.wait()
    task.cancel()


async def run_embedded(settings: Settings, ports: EmbeddedPorts) -> int:
    """Start the embedded services, the worker and the API; stop them in reverse on a signal."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    services = embedded_services(settings, ports)
    started: list[EmbeddedService] = []
    try:
        ensure_port_free("127.0.0.1", ports.api, "the API")
        for service in services:
            await service.start()
            started.append(service)
        async with connections(settings) as conn:
            await ensure_search_attributes(conn.temporal, settings.temporal_namespace)
            report_admin(await ensure_admin(conn.sessions, settings))
            server = api_server(settings, "127.0.0.1", ports.api)
            background: list[asyncio.Task[Any]] = []

            def ready() -> None:
                print_urls(settings, ports, services)
                if not settings.local_node:
                    console.print("Local node: off (--no-local-node or PRIMUS_LOCAL_NODE=false).")
                    return
                setup = asyncio.create_task(run_local_node(server.config.app, conn.sessions, settings, say))
                background.extend([setup, asyncio.create_task(_cancel_on(stop, setup))])

            try:
                await run_until_stopped(stop, api=server, worker=conn.worker(), on_ready=ready)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
        return 0
    except (EmbeddedServiceError, SettingsError) as exc:  # a weak PRIMUS_ADMIN_PASSWORD, for one
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 1
    except Exception:
        log.exception("primus-safe up failed")
        return 1
    finally:
        for service in reversed(started):
            await service.stop()
        console.print("Stopped.")


@app.command()
def up(
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where everything is kept (default: PRIMUS_DATA_DIR or ~/.local/share)."
    ),
    api_port: int = typer.Option(8088, "--api-port", help="API port on 127.0.0.1."),
    temporal_port: int = typer.Option(7233, "--temporal-port", help="Temporal frontend (gRPC) port."),
    ui_port: int = typer.Option(8233, "--ui-port", help="Temporal UI port."),
    registry_port: int = typer.Option(5000, "--registry-port", help="Embedded image registry port."),
    local_node: bool | None = typer.Option(
        None,
        "--local-node/--no-local-node",
        help="Register this machine as node `local` with a hosts cluster and a default workspace "
        "(default: PRIMUS_LOCAL_NODE, true).",
    ),
    console_dir: Path | None = typer.Option(None, "--console", metavar="DIR", help=CONSOLE_OPTION_HELP),
) -> None:
    """Run everything in one process tree: Temporal dev server, migrations, worker and API."""
    settings = load_settings(
        dev_mode=True,
        local_node=local_node,
        data_dir=data_dir.resolve() if data_dir else None,
        temporal_address=f"127.0.0.1:{temporal_port}",
        api_host="127.0.0.1",
        api_port=api_port,
        console_dir=console_dir.resolve() if console_dir else None,
    )
    require_console(settings)
    ensure_data_dir(settings)
    require_secret_key(settings)
    run_migrations(settings)
    ports = EmbeddedPorts(api=api_port, temporal=temporal_port, ui=ui_port, registry=registry_port)
    exit_now(asyncio.run(run_embedded(settings, ports)))


# --- deployment commands --------------------------------------------------------------------------


async def serve_api(settings: Settings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    server = api_server(settings, settings.api_host, settings.api_port)

    def _ready() -> None:
        log.info("API listening on %s:%s", settings.api_host, server.bound_port)

    try:
        await run_until_stopped(stop, api=server, on_ready=_ready)
    except Exception as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 1
    return 0


async def serve_worker(settings: Settings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        async with connections(settings) as conn:
            try:
                await ensure_search_attributes(conn.temporal, settings.temporal_namespace)
            except Exception as exc:  # e.g. no operator permission: register them out of band
                log.warning("could not register search attributes: %s", exc)
            await run_until_stopped(stop, worker=conn.worker())
    except Exception as exc:
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
        return 1
    return 0


@app.command()
def api(
    host: str | None = typer.Option(None, "--host", help="Bind address (default PRIMUS_API_HOST)."),
    port: int | None = typer.Option(None, "--port", help="Port (default PRIMUS_API_PORT)."),
    run_migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the schema first."),
    console_dir: Path | None = typer.Option(None, "--console", metavar="DIR", help=CONSOLE_OPTION_HELP),
) -> None:
    """Serve the REST API against an external Temporal and database."""
    settings = load_settings(
        api_host=host, api_port=port, console_dir=console_dir.resolve() if console_dir else None
    )
    require_console(settings)
    require_secret_key(settings)
    ensure_data_dir(settings)
    if run_migrate:
        run_migrations(settings)
    exit_now(asyncio.run(serve_api(settings)))


@app.command()
def worker() -> None:
    """Run the Temporal worker (every task queue) and the system schedules."""
    settings = load_settings()
    require_secret_key(settings)
    ensure_data_dir(settings)
    exit_now(asyncio.run(serve_worker(settings)))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Upgrade the schema of PRIMUS_DATABASE_URL (default: SQLite in the data dir)."""
    settings = load_settings()
    ensure_data_dir(settings)
    run_migrations(settings, revision)
    console.print(f"Database upgraded to {revision}.")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. `base` or `-1`.")) -> None:
    """Downgrade the schema (destroys the data of the dropped tables)."""
    settings = load_settings()
    try:
        migrate.downgrade(settings.sqlalchemy_url, revision)
    except Exception as exc:
        fail(f"database downgrade failed: {type(exc).__name__}: {exc}", code=1)
    console.print(f"Database downgraded to {revision}.")


async def _create_admin(settings: Settings) -> AdminBootstrap:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        return await ensure_admin(session_factory(engine), settings)
    finally:
        await engine.dispose()


@app.command("create-admin")
def create_admin() -> None:
    """Create the `root` administrator once (password: PRIMUS_ADMIN_PASSWORD, else generated)."""
    settings = load_settings()
    ensure_data_dir(settings)
    try:
        result = asyncio.run(_create_admin(settings))
    except Exception as exc:
        fail(f"could not create the administrator: {type(exc).__name__}: {exc}", code=1)
    if not result.created:
        console.print("The administrator root already exists.")
    report_admin(result)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
