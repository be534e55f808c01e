"""First-run set-up: the `root` system administrator."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from api.security import hash_password
from db.session import SessionFactory
from db.users import User, get_user_by_name
from domain.passwords import password_problem
from domain.timefmt import utcnow
from domain.users import ROLE_SYSTEM_ADMIN
from primus_safe.settings import Settings, SettingsError, random_password

ADMIN_NAME = "root"
ADMIN_ID = "user-root"


@dataclass
class AdminBootstrap:
    """What `ensure_admin` did; `password` is set only when it generated one."""

    created: bool
    password: str | None = None
    password_file: Path | None = None


async def ensure_admin(sessions: SessionFactory, settings: Settings) -> AdminBootstrap:
    """Create `root` once. Its password comes from PRIMUS_ADMIN_PASSWORD, or is generated and
    written to `<data_dir>/admin-password` (mode 600). A weak PRIMUS_ADMIN_PASSWORD is refused
    (SettingsError) before anything is written."""
    async with sessions() as session:
        if await get_user_by_name(session, name=ADMIN_NAME) is not None:
            return AdminBootstrap(created=False)
        if settings.admin_password is not None:
            problem = password_problem(
                settings.admin_password, ADMIN_NAME, min_score=settings.password_min_score
            )
            if problem:
                raise SettingsError(f"PRIMUS_ADMIN_PASSWORD is too weak: {problem}")
        generated = settings.admin_password is None
        password = settings.admin_password or random_password()
        now = utcnow()
        session.add(
            User(
                id=ADMIN_ID,
                name=ADMIN_NAME,
                email="",
                type="default",
                roles=[ROLE_SYSTEM_ADMIN],
                workspaces=[],
                password_hash=hash_password(password),
                restricted_type=0,
                avatar_url="",
                created_at=now,
                updated_at=now,
            )
        )
        await session.commit()
    if not generated:
        return AdminBootstrap(created=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "admin-password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return AdminBootstrap(created=True, password=password, password_file=path)
