"""`primus-safe login`: keeps the API address and a token in `~/.config/primus-safe/login.json`.

The other API commands (`primus-safe workload ...`) read that file through `api_client()`.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_API = "http://127.0.0.1:8088"
TIMEOUT_SECONDS = 30.0

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a readable error and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def api_error(resp: httpx.Response) -> str:
    """The API's `errorMessage`, else the body, else the status."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip() or f"HTTP {resp.status_code}"
    if isinstance(body, dict) and body.get("errorMessage"):
        return str(body["errorMessage"])
    return resp.text.strip() or f"HTTP {resp.status_code}"


def login_file() -> Path:
    """`$XDG_CONFIG_HOME/primus-safe/login.json` (default `~/.config`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "primus-safe" / "login.json"


@dataclass(frozen=True)
class Login:
    """Where the API is and the token to present to it."""

    api: str
    token: str


def save_login(login: Login) -> Path:
    """Write the login file readable by its owner only (0600, also when it already existed)."""
    path = login_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"api": login.api, "token": login.token}, out)
        out.write("\n")
    return path


def load_login() -> Login:
    """The saved login; exits with a hint when there is none."""
    path = login_file()
    try:
        data = json.loads(path.read_text())
        return Login(api=str(data["api"]), token=str(data["token"]))
    except FileNotFoundError:
        fail("not logged in: run primus-safe login first")
    except (ValueError, KeyError, TypeError):
        fail(f"{path} is not a login file: run primus-safe login first")


class ApiClient:
    """An httpx client on the saved login that turns transport failures into readable errors."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self.http = httpx.Client(
            base_url=login.api.rstrip("/"),
            timeout=TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {login.token}"},
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """Send; exit 1 when the API cannot be reached or the login is no longer valid."""
        try:
            resp = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            fail(f"no answer from the API at {self.login.api} within {TIMEOUT_SECONDS:g} s")
        except httpx.HTTPError as exc:
            fail(f"cannot reach the API at {self.login.api}: {exc}")
        if resp.status_code == 401:
            fail(f"{api_error(resp)}: run primus-safe login again")
        return resp

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """`request`, exiting 1 with the API's errorMessage on any non-2xx answer."""
        resp = self.request(method, path, **kwargs)
        if not resp.is_success:
            fail(api_error(resp))
        return resp


def api_client() -> ApiClient:
    """A client for the saved login."""
    return ApiClient(load_login())


def login(
    api: str = typer.Option(DEFAULT_API, "--api", help="API base URL."),
    user: str | None = typer.Option(None, "--user", help="User name (asked when not given)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of standard input."
    ),
) -> None:
    """Log in and keep the token in ~/.config/primus-safe/login.json (mode 0600)."""
    if password_stdin and not user:
        fail("--password-stdin needs --user", code=2)
    name = user or typer.prompt("User")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else getpass.getpass("Password: ")
    if not password:
        fail("no password given", code=2)
    base = api.rstrip("/")
    try:
        resp = httpx.post(
            f"{base}/api/v1/login", json={"name": name, "password": password}, timeout=TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the API at {base}: {exc}")
    if not resp.is_success:
        fail(f"login failed: {api_error(resp)}")
    path = save_login(Login(api=base, token=str(resp.json()["token"])))
    console.print(f"Logged in to {escape(base)} as {escape(name)} (saved in {escape(str(path))}).")
