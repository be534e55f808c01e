"""Database steps of a user's clean-up after deletion."""

from __future__ import annotations

from sqlalchemy import delete, or_
from temporalio import activity

from db.public_keys import PublicKey
from db.session import SessionFactory
from db.users import User, UserToken
from domain.timefmt import utcnow


class UserActivities:
    """Each method can run twice without harm: deleting what is already gone deletes nothing."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn(name="users.delete_public_keys")
    async def delete_public_keys(self, user_id: str) -> int:
        """Delete the user's public keys; returns how many were deleted."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(PublicKey).where(PublicKey.user_id == user_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @activity.defn(name="users.delete_tokens")
    async def delete_tokens(self, user_id: str) -> int:
        """Delete the user's tokens; returns how many were deleted."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(UserToken).where(UserToken.user_id == user_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @activity.defn(name="users.delete_user")
    async def delete_user(self, user_id: str) -> bool:
        """Delete the user row if it is marked for deletion; returns whether a row went."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(User).where(User.id == user_id, User.deleting_at.is_not(None))
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @activity.defn(name="users.purge_expired_tokens")
    async def purge_expired_tokens(self, _: None = None) -> int:
        """Delete tokens that expired or were revoked; returns how many."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(UserToken).where(
                    or_(UserToken.expires_at <= utcnow(), UserToken.revoked_at.is_not(None))
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
