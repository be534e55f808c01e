"""Users: register, login, logout, list, get (`self` too), patch, delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import IntegrityError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api import login_body
from api.deps import (
    TOKEN_COOKIE,
    Caller,
    CurrentUser,
    Paging,
    Session,
    State,
    _bearer,
    _cookie,
    authenticate,
    request_token,
)
from api.schemas.common import ERROR_RESPONSES, ErrorResponse, ListResponse
from api.schemas.users import (
    CreateUserRequest,
    CreateUserResponse,
    LoginRequest,
    LoginResponse,
    UpdateUserRequest,
    UserView,
    WorkspaceRef,
)
from api.security import hash_password_async, new_token, password_matches, token_hash
from api.state import AppState
from db import users as db
from db import workspaces as workspace_db
from db.users import User, UserToken
from db.workspaces import Workspace
from domain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, not_found
from domain.names import random_suffix
from domain.passwords import password_problem
from domain.timefmt import format_time, unix_seconds, utcnow
from domain.users import RESTRICTED_FROZEN, ROLE_DEFAULT, ROLE_SYSTEM_ADMIN, normalize_roles
from workflows.common import RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.user_cleanup import UserCleanupInput, UserCleanupWorkflow, workflow_id

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)

LIMITED: dict[int | str, dict[str, object]] = {
    429: {"model": ErrorResponse, "description": "Too many failed logins from this client: see `Retry-After`"}
}
NAME_UNAVAILABLE = "the user name cannot be registered: choose another one"
"""What non-admins are told of a taken name: it does not say that the name is a user's."""


def client_address(request: Request) -> str | None:
    """The address failed logins are counted against (uvicorn applies trusted proxy headers)."""
    return request.client.host if request.client else None


def check_password_strength(state: AppState, password: str, user_name: str, email: str) -> None:
    """400 with the reason when `password` is too weak for `user_name`."""
    problem = password_problem(password, user_name, min_score=state.settings.password_min_score, email=email)
    if problem:
        raise Invalid(problem)


async def user_view(session: Session, user: User) -> UserView:
    """The API view of a user: the workspaces they may use (granted, managed, default) and those
    they manage, with display names. Admins need no workspace grants, so theirs are empty."""
    admin = ROLE_SYSTEM_ADMIN in user.roles
    usable = (
        [] if admin else await workspace_db.accessible_ids(session, user_id=user.id, granted=user.workspaces)
    )
    managed = [] if admin else await workspace_db.managed_by(session, user_id=user.id)
    names = await workspace_db.names(session, [*usable, *managed])
    return UserView(
        id=user.id,
        name=user.name,
        email=user.email,
        type=user.type,
        roles=list(user.roles),
        workspaces=[WorkspaceRef(id=w, name=names.get(w, w)) for w in usable],
        managed_workspaces=[WorkspaceRef(id=w, name=names.get(w, w)) for w in managed],
        creation_time=format_time(user.created_at),
        restricted_type=user.restricted_type,
        avatar_url=user.avatar_url,
    )


async def _check_workspaces(session: Session, ids: list[str]) -> None:
    """404 naming the first workspace id that does not exist."""
    known = await workspace_db.existing_ids(session, ids)
    for workspace_id in ids:
        if workspace_id not in known:
            raise not_found("Workspace", workspace_id)


async def optional_caller(
    session: Session,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller | None:
    """The caller when a token is presented (registration is public, but admins may set more)."""
    if request_token(bearer, cookie) is None:
        return None
    return await authenticate(session, bearer, cookie)


@router.post(
    "/users", response_model=CreateUserResponse, summary="Register a user (public)", responses=LIMITED
)
async def create_user(
    body: CreateUserRequest,
    request: Request,
    session: Session,
    state: State,
    caller: Annotated[Caller | None, Depends(optional_caller)],
) -> CreateUserResponse:
    """Anyone may register; only a system admin may set `type` or `workspaces`. Others are not
    told that a name is taken by a user, and each such refusal counts as a failed login of
    their address (so names cannot be probed faster than passwords)."""
    admin = caller is not None and caller.is_admin
    if (body.type is not None or body.workspaces is not None) and not admin:
        raise Forbidden("only a system administrator may set type or workspaces when registering a user")
    check_password_strength(state, body.password, body.name, body.email)
    address = client_address(request)
    if not admin:
        await state.login_limits.admit(address)
    if await db.get_user_by_name(session, name=body.name) is not None:
        if not admin:
            await state.login_limits.failed(address)
            raise Conflict(NAME_UNAVAILABLE)
        raise Conflict(f"user {body.name} already exists")
    await _check_workspaces(session, list(body.workspaces or []))
    now = utcnow()
    user = User(
        id=f"user-{body.name[:60]}-{random_suffix(6)}",
        name=body.name,
        email=body.email,
        type=body.type or "default",
        roles=[ROLE_DEFAULT],
        workspaces=sorted(set(body.workspaces or [])),
        password_hash=await hash_password_async(body.password),
        restricted_type=0,
        avatar_url=body.avatar_url,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"user {body.name} already exists" if admin else NAME_UNAVAILABLE) from exc
    return CreateUserResponse(id=user.id)


@router.post(
    "/login",
    response_model=LoginResponse,
    summary="Log in (JSON or form body); sets the Token, userId and userType cookies too",
    responses=LIMITED,
    openapi_extra=login_body.OPENAPI_BODY,
)
async def login(
    body: Annotated[LoginRequest, Depends(login_body.login_body)],
    request: Request,
    session: Session,
    state: State,
    response: Response,
) -> LoginResponse:
    """Password login. Frozen users are refused. An unknown name costs the same argon2
    verification as a wrong password; too many failures are refused (429, `api/login_limits.py`)."""
    if body.type != "default":
        raise Invalid(f"login type {body.type} is not supported")
    address = client_address(request)
    await state.login_limits.admit(address, body.name)
    user = await db.get_user_by_name(session, name=body.name)
    if user is not None and user.deleting_at is not None:
        user = None
    matches = await password_matches(user.password_hash if user else None, body.password)
    if user is None or not matches:
        await state.login_limits.failed(address)
        raise Unauthenticated("the user name or password is incorrect")
    await state.login_limits.succeeded(address, body.name)
    if user.restricted_type >= RESTRICTED_FROZEN:
        raise Forbidden(f"The user is restricted. type: {user.restricted_type}")
    token = new_token()
    now = utcnow()
    lifetime = state.settings.token_lifetime_seconds
    expires = now + timedelta(seconds=lifetime)
    session.add(UserToken(token_hash=token_hash(token), user_id=user.id, created_at=now, expires_at=expires))
    await session.commit()
    secure = state.settings.cookie_secure
    response.set_cookie(TOKEN_COOKIE, token, max_age=lifetime, httponly=True, samesite="lax", secure=secure)
    response.set_cookie("userId", user.id, max_age=lifetime, httponly=True, samesite="lax", secure=secure)
    response.set_cookie("userType", user.type, max_age=lifetime, httponly=True, samesite="lax", secure=secure)
    view = await user_view(session, user)
    return LoginResponse(**view.model_dump(), token=token, expire=unix_seconds(expires))


@router.post("/logout", response_model=None, summary="Log out: revoke the token, clear the cookies")
async def logout(
    session: Session,
    response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> None:
    """Revokes the presented token (if any) and clears the cookies. Needs no valid token."""
    token = request_token(bearer, cookie)
    if token is not None:
        row = await session.get(UserToken, token_hash(token))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
            await session.commit()
    response.delete_cookie(TOKEN_COOKIE)
    response.delete_cookie("userId")
    response.delete_cookie("userType")


@router.get("/users", response_model=ListResponse[UserView])
async def list_users(
    caller: CurrentUser,
    session: Session,
    page: Paging,
    name: Annotated[str | None, Query(max_length=63, description="Exact user name")] = None,
    email: Annotated[str | None, Query(max_length=254, description="Exact email")] = None,
    workspace_id: Annotated[str | None, Query(alias="workspaceId", max_length=63)] = None,
) -> ListResponse[UserView]:
    """Users the caller may see, oldest first; `workspaceId` keeps the users who may use that
    workspace (granted, managers, everyone for a default one), shown to admins and its members."""
    users = await db.list_users(session, name=name, email=email)
    if workspace_id:
        workspace = await workspace_db.get_workspace(session, workspace_id=workspace_id)
        if workspace is None:
            raise not_found("Workspace", workspace_id)
        members = [u for u in users if _uses(workspace, u)]
        allowed = caller.is_admin or _uses(workspace, caller.user)
        users = members if allowed else []
    else:
        users = [u for u in users if await _shares_workspace(session, caller, u)]
    items = users[page.offset : page.offset + page.limit]
    return ListResponse[UserView](total_count=len(users), items=[await user_view(session, u) for u in items])


def _uses(workspace: Workspace, user: User) -> bool:
    """Whether `user` is a member of `workspace`: granted, manager, or everyone for a default one.
    Admins use every workspace without being members."""
    return ROLE_SYSTEM_ADMIN not in user.roles and (
        workspace.is_default or workspace.id in user.workspaces or user.id in workspace.manager_ids
    )


async def _visible_user(session: Session, caller: Caller, user_id: str) -> User:
    user = caller.user if user_id == "self" else await db.get_user(session, user_id=user_id)
    if user is None or not await _shares_workspace(session, caller, user):
        raise NotFound("User", user_id)
    return user


async def _shares_workspace(session: Session, caller: Caller, user: User) -> bool:
    """Admins see everyone; others themselves and the users of a workspace they may use too
    (granted, managed or default, on both sides)."""
    if caller.is_admin or caller.id == user.id:
        return True
    mine = await workspace_db.accessible_ids(session, user_id=caller.id, granted=caller.user.workspaces)
    theirs = await workspace_db.accessible_ids(session, user_id=user.id, granted=user.workspaces)
    return bool(set(mine) & set(theirs))


@router.get("/users/{name}", response_model=UserView, summary="Get a user by id, or `self`")
async def get_user(name: str, caller: CurrentUser, session: Session) -> UserView:
    """`self` is the caller. Users the caller may not see are reported missing."""
    return await user_view(session, await _visible_user(session, caller, name))


@router.patch("/users/{UserId}", response_model=None, responses=LIMITED)
async def update_user(
    UserId: str,
    body: UpdateUserRequest,
    request: Request,
    caller: CurrentUser,
    session: Session,
    state: State,
) -> None:
    """Owners change their password, email and avatar; admins also roles, workspaces, restriction.
    Workspace managers grant and revoke access: they may change `workspaces` when they manage
    every workspace added or removed."""
    managed = set(await workspace_db.managed_by(session, user_id=caller.id))
    grant_only = body.model_fields_set <= {"workspaces"} and body.workspaces is not None and bool(managed)
    if grant_only and not caller.is_admin and UserId != "self":
        user = await db.get_user(session, user_id=UserId)  # managers grant to users outside their workspaces
        if user is None:
            raise NotFound("User", UserId)
    else:
        user = await _visible_user(session, caller, UserId)
    if not caller.is_admin:
        if body.roles is not None or body.restricted_type is not None:
            raise Forbidden("only a system administrator may change roles or restrictedType")
        if body.workspaces is not None:
            changed = set(body.workspaces) ^ set(user.workspaces)
            if not changed <= managed:
                others = ", ".join(sorted(changed - managed))
                raise Forbidden(
                    f"only a manager of workspace {others} (or an administrator) may grant or revoke it"
                )
        elif user.id != caller.id:
            raise Forbidden("The user is not allowed to update user")
        if user.id != caller.id and body.model_fields_set - {"workspaces"}:
            raise Forbidden("The user is not allowed to update user")
    if body.workspaces is not None:
        await _check_workspaces(session, list(body.workspaces))
    if body.password:
        check_password_strength(state, body.password, user.name, body.email or user.email)
        if user.id == caller.id:
            await _prove_current_password(state, request, user, body.current_password)
    if body.roles is not None:
        roles = normalize_roles(list(body.roles))
        if ROLE_SYSTEM_ADMIN in user.roles and ROLE_SYSTEM_ADMIN not in roles:
            await _keep_one_admin(session, user)
        user.roles = roles
    if body.restricted_type is not None:
        if body.restricted_type >= RESTRICTED_FROZEN and ROLE_SYSTEM_ADMIN in user.roles:
            await _keep_one_admin(session, user)
        user.restricted_type = body.restricted_type
    if body.workspaces is not None:
        user.workspaces = sorted(set(body.workspaces))
    if body.password:
        user.password_hash = await hash_password_async(body.password)
    if body.email is not None:
        user.email = body.email
    if body.avatar_url is not None:
        user.avatar_url = body.avatar_url
    user.updated_at = utcnow()
    if body.password or (body.restricted_type or 0) >= RESTRICTED_FROZEN:
        await db.revoke_tokens(session, user_id=user.id, now=user.updated_at)
    await session.commit()


async def _prove_current_password(state: AppState, request: Request, user: User, current: str | None) -> None:
    """A self-change of the password needs the current one (counted like a login attempt)."""
    if current is None:
        raise Invalid("currentPassword is required to change your own password")
    address = client_address(request)
    await state.login_limits.admit(address, user.name)
    if not await password_matches(user.password_hash, current):
        await state.login_limits.failed(address)
        raise Forbidden("the current password is incorrect")
    await state.login_limits.succeeded(address, user.name)


async def _keep_one_admin(session: Session, user: User) -> None:
    if await db.count_admins(session) <= 1:
        raise Conflict(f"user {user.name} is the last system administrator")


@router.delete("/users/{UserId}", response_model=None)
async def delete_user(
    UserId: str,
    caller: CurrentUser,
    session: Session,
    state: State,
) -> None:
    """System admins only. Tokens are revoked at once; a workflow removes keys, tokens and the record."""
    if not caller.is_admin:
        user = await db.get_user(session, user_id=UserId)
        if user is None or not await _shares_workspace(session, caller, user):
            raise NotFound("User", UserId)
        raise Forbidden("System administrator privileges are required")
    user = await db.get_user(session, user_id=UserId, include_deleting=True)
    if user is None:
        raise NotFound("User", UserId)
    if user.deleting_at is None:
        if ROLE_SYSTEM_ADMIN in user.roles:
            await _keep_one_admin(session, user)
        user.deleting_at = utcnow()
        await db.revoke_tokens(session, user_id=user.id, now=user.deleting_at)
    await session.commit()  # on a retry too: no transaction stays open across the Temporal call
    await state.temporal.start_workflow(
        UserCleanupWorkflow.run,
        UserCleanupInput(user_id=user.id, step_timeout_seconds=state.settings.user_cleanup_timeout_seconds),
        id=workflow_id(user.id),
        task_queue=state.settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(RESOURCE_TYPE, "user"),
                SearchAttributePair(RESOURCE_ID, user.id),
                SearchAttributePair(USER, caller.id),
            ]
        ),
    )
