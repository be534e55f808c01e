"""What the API process holds for its whole life: settings, database, Temporal client, secret box,
failed-login counters and the web shell's terminal opener."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.login_limits import LoginLimits
from db.encryption import SecretBox
from db.session import SessionFactory
from domain.webshell import TerminalOpener
from primus_safe.settings import Settings

TerminalFactory = Callable[[Settings, SessionFactory, SecretBox], TerminalOpener]
"""Builds the web shell's terminal opener once the database and secret box exist (the
composition root passes `primus_safe.webshell.DriverTerminals`; without one the web shell is 503)."""


@dataclass
class AppState:
    """Created in the app's lifespan and reached through `request.app.state.primus`."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    temporal: Client
    box: SecretBox
    login_limits: LoginLimits
    terminals: TerminalOpener | None = None
