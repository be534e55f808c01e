"""What the API process holds for its whole life: settings, database, Temporal client, secret box,
failed-login counters."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.login_limits import LoginLimits
from db.encryption import SecretBox
from db.session import SessionFactory
from primus_safe.settings import Settings


@dataclass
class AppState:
    """Created in the app's lifespan and reached through `request.app.state.primus`."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    temporal: Client
    box: SecretBox
    login_limits: LoginLimits
