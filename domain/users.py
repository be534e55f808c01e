"""User roles, types and restriction levels."""

from __future__ import annotations

from typing import Literal

ROLE_SYSTEM_ADMIN = "system-admin"
ROLE_DEFAULT = "default"
Role = Literal["system-admin", "default"]
UserType = Literal["default", "other"]
RESTRICTED_NONE = 0
RESTRICTED_FROZEN = 1
RESERVED_USER_NAMES = frozenset({"self", "system"})


def normalize_roles(roles: list[str]) -> list[str]:
    """Upstream's rule: system-admin stands alone; everyone else has `default`."""
    if ROLE_SYSTEM_ADMIN in roles:
        return [ROLE_SYSTEM_ADMIN]
    return [ROLE_DEFAULT]
