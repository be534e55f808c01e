"""Request dependencies: database session, the authenticated caller, role checks, pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, WithJsonSchema
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from api.security import token_hash
from api.state import AppState
from db.users import User, UserToken
from domain.errors import Forbidden, Unauthenticated, UserNotRegistered
from domain.timefmt import utcnow
from domain.users import RESTRICTED_FROZEN, ROLE_SYSTEM_ADMIN

TOKEN_COOKIE = "Token"
LIMIT_MAX = 10000
"""The largest page of every `limit`-paged list."""
OFFSET_MAX = 2**31 - 1
"""The largest `offset`: every database's integer takes it."""
SINCE_SECONDS_MAX = 10 * 365 * 86400
"""The longest `sinceSeconds` of the log routes (ten years; far more cannot be subtracted from now)."""

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` from POST /api/v1/login")
_cookie = APIKeyCookie(name=TOKEN_COOKIE, auto_error=False, description="The `Token` cookie set by login")


def app_state(request: Request) -> AppState:
    """The process-wide state."""
    state: AppState = request.app.state.primus
    return state


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; routes commit explicitly."""
    async with app_state(request).sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]
State = Annotated[AppState, Depends(app_state)]


@dataclass
class Caller:
    """The authenticated user of a request."""

    user: User
    token_hash: str

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return ROLE_SYSTEM_ADMIN in self.user.roles


def request_token(bearer: HTTPAuthorizationCredentials | None, cookie: str | None) -> str | None:
    """The token of a request: the Authorization header first, then the cookie."""
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return cookie or None


async def authenticate(
    session: Session,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """Resolve the caller from the token; frozen users are refused everywhere."""
    return await caller_for_token(session, request_token(bearer, cookie))


def connection_token(connection: HTTPConnection, query_name: str | None = None) -> str | None:
    """The token of a connection without FastAPI's security dependencies (the web shell's
    WebSocket): `Authorization: Bearer`, then the `Token` cookie, then the `query_name` parameter."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    cookie = connection.cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie
    if query_name is None:
        return None
    return connection.query_params.get(query_name) or None


async def caller_for_token(session: AsyncSession, token: str | None) -> Caller:
    """The caller a token stands for; Unauthenticated (or Forbidden for frozen users) otherwise."""
    if token is None:
        raise Unauthenticated("token not present")
    hashed = token_hash(token)
    row = (
        await session.execute(
            select(UserToken, User)
            .join(User, User.id == UserToken.user_id)
            .where(UserToken.token_hash == hashed)
        )
    ).first()
    if row is None:
        raise Unauthenticated("The user's token is invalid, please login first")
    tok, user = row
    if tok.revoked_at is not None:
        raise Unauthenticated("The user's token is invalid, please login first")
    if tok.expires_at <= utcnow():
        raise Unauthenticated("The user's token has expired, please login again")
    if user.deleting_at is not None:
        raise UserNotRegistered(f"the user({user.id}) is not registered or invalid userId")
    if user.restricted_type >= RESTRICTED_FROZEN:
        raise Forbidden(f"The user is restricted. type: {user.restricted_type}")
    return Caller(user=user, token_hash=hashed)


CurrentUser = Annotated[Caller, Depends(authenticate)]


async def require_admin(caller: CurrentUser) -> Caller:
    """Only system administrators pass."""
    if not caller.is_admin:
        raise Forbidden("System administrator privileges are required")
    return caller


Admin = Annotated[Caller, Depends(require_admin)]


@dataclass
class Page:
    """`limit`/`offset` of a list request."""

    limit: int
    offset: int


def page_params(default_limit: int) -> object:
    """A dependency reading `limit` (1..1000, default `default_limit`) and `offset` (>= 0)."""

    def _page(
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX, description="Page size")] = default_limit,
        offset: Annotated[int, Query(ge=0, le=OFFSET_MAX, description="Items to skip")] = 0,
    ) -> Page:
        return Page(limit=limit, offset=offset)

    return _page


Paging = Annotated[Page, Depends(page_params(100))]


def _limit_or_all(value: int) -> int:
    if value != -1 and not 1 <= value <= LIMIT_MAX:
        raise ValueError(f"must be -1 (all) or between 1 and {LIMIT_MAX}")
    return value


LimitOrAll = Annotated[
    int,
    AfterValidator(_limit_or_all),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "const": -1}, {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}]}
    ),
]
"""A page size where the contract documents `-1` as "all" (the node list only)."""
