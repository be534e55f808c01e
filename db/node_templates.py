"""Node templates: ordered lists of addons installed on nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class NodeTemplate(Base):
    """A template naming addons from the shipped catalogue, in install order."""

    __tablename__ = "node_templates"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(253))
    addons: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
