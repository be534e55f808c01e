"""Node flavors: the hardware shape of a class of nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class NodeFlavor(Base):
    """A flavor; `spec` holds cpu, memory, gpu, rootDisk, dataDisk and extendedResources as sent."""

    __tablename__ = "node_flavors"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(253))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
