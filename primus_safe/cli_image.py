"""`primus-safe image ...`: image commands that talk to the API (import with live layer progress).

The API address and credentials come from options or `PRIMUS_API_URL`, `PRIMUS_TOKEN`, or
`PRIMUS_USER` + `PRIMUS_PASSWORD` (a login is made when no token is given).
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

image_app = typer.Typer(help="Images in the internal registry.", no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ServerOption = typer.Option(
    "http://127.0.0.1:8088", "--server", envvar="PRIMUS_API_URL", help="API base URL."
)
TokenOption = typer.Option(None, "--token", envvar="PRIMUS_TOKEN", help="API token (from login).")
UserOption = typer.Option(None, "--user", envvar="PRIMUS_USER", help="User name to log in with.")
PasswordOption = typer.Option(None, "--password", envvar="PRIMUS_PASSWORD", help="Password to log in with.")


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _client(server: str, token: str | None, user: str | None, password: str | None) -> httpx.Client:
    """An API client carrying a bearer token (logging in with user and password if needed)."""
    client = httpx.Client(base_url=server.rstrip("/"), timeout=30)
    if not token:
        if not (user and password):
            _fail(
                "give --token (or PRIMUS_TOKEN), or --user and --password (or PRIMUS_USER/PRIMUS_PASSWORD)", 2
            )
        resp = client.post("/api/v1/login", json={"name": user, "password": password})
        if resp.status_code != 200:
            _fail(f"login failed: {_error(resp)}")
        token = str(resp.json()["token"])
        client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _error(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("errorMessage") or resp.text)
    except ValueError:
        return f"HTTP {resp.status_code}"


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def follow_import(client: httpx.Client, image_id: int, interval: float = 0.5) -> dict[str, Any]:
    """Show one progress bar per layer until the import ends; returns the final details."""
    bars: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.fields[state]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        while True:
            resp = client.get(f"/api/v1/images/{image_id}/importing-details")
            if resp.status_code != 200:
                _fail(f"cannot read the import's progress: {_error(resp)}")
            details: dict[str, Any] = resp.json()
            for digest, layer in details["layersDetail"].items():
                if digest not in bars:
                    bars[digest] = progress.add_task(_short(digest), total=100, state="")
                progress.update(bars[digest], completed=layer["progress"], state=layer["status"])
            if details["status"] != "importing":
                return details
            time.sleep(interval)


@image_app.command("import")
def import_image(
    source: str = typer.Argument(..., help="Source image, e.g. docker.io/library/busybox:1.36"),
    source_registry: str | None = typer.Option(
        None, "--source-registry", help="Image registry (name or host) for a source without host."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow the import with a progress bar per layer."
    ),
    server: str = ServerOption,
    token: str | None = TokenOption,
    user: str | None = UserOption,
    password: str | None = PasswordOption,
) -> None:
    """Import SOURCE into the internal registry, showing each layer's progress."""
    body: dict[str, str] = {"source": source}
    if source_registry:
        body["sourceRegistry"] = source_registry
    with _client(server, token, user, password) as client:
        resp = client.post("/api/v1/images:import", json=body)
        if resp.status_code != 200:
            _fail(_error(resp), 2 if resp.status_code == 400 else 1)
        answer = resp.json()
        if answer["state"] == 2:
            console.print(f"Already imported: image {answer['alreadyImageId']}.")
            return
        if answer["state"] != 1:
            _fail(answer.get("message") or "the import could not be started")
        image_id = int(answer["imageId"])
        console.print(f"Importing {source} as image {image_id} (workflow image-import/{image_id}).")
        if not wait:
            return
        details = follow_import(client, image_id)
    if details["status"] != "ready":
        _fail(f"import failed: {details.get('message') or 'see the workflow in the Temporal UI'}")
    console.print(f"[bold green]Imported[/] image {image_id}.")


@image_app.command("list")
def list_images(
    server: str = ServerOption,
    token: str | None = TokenOption,
    user: str | None = UserOption,
    password: str | None = PasswordOption,
) -> None:
    """List images (id, status, full tag)."""
    with _client(server, token, user, password) as client:
        resp = client.get("/api/v1/images", params={"page_size": 1000})
        if resp.status_code != 200:
            _fail(_error(resp))
        for group in resp.json().get("images", []):
            for art in group["artifacts"]:
                reference = f"{group['registryHost']}/{group['repo']}:{art['imageTag']}"
                console.print(f"{art['id']:>5}  {art['status']:<9} {reference}")
