"""Secrets (ssh and image credentials), encrypted at rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class Secret(Base):
    """A credential. `params_encrypted` is the Fernet-encrypted JSON list of params."""

    __tablename__ = "secrets"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(16), index=True)
    params_encrypted: Mapped[str] = mapped_column(Text)
    bind_all_workspaces: Mapped[bool] = mapped_column(Boolean, default=False)
    resource_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
