"""Public keys: every authenticated user manages their own keys only; others' keys look missing."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.exc import IntegrityError

from api.deps import Caller, CurrentUser, Page, Session, page_params
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.public_keys import (
    CreatePublicKeyRequest,
    CreatePublicKeyResponse,
    PublicKeyView,
    UpdatePublicKeyDescriptionRequest,
    UpdatePublicKeyStatusRequest,
)
from db import public_keys as db
from db.public_keys import PublicKey, SortColumn
from domain.errors import Conflict, Invalid, NotFound
from domain.ssh_keys import SSHKeyError, parse_public_key
from domain.timefmt import format_time, utcnow

router = APIRouter(tags=["public keys"], responses=ERROR_RESPONSES)

KeyPaging = Annotated[Page, Depends(page_params(10))]
KeyId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The key's integer id")]


def public_key_view(key: PublicKey) -> PublicKeyView:
    """The API view of a key."""
    return PublicKeyView(
        id=key.id,
        user_id=key.user_id,
        description=key.description,
        public_key=key.public_key,
        status=key.status,
        create_time=format_time(key.create_time),
        update_time=format_time(key.update_time),
    )


async def _own_key(session: Session, caller: Caller, key_id: int) -> PublicKey:
    key = await db.get_user_key(session, user_id=caller.id, key_id=key_id)
    if key is None:
        raise NotFound("PublicKey", key_id)
    return key


@router.post("/publickeys", response_model=CreatePublicKeyResponse, summary="Register a public key")
async def create_public_key(
    body: CreatePublicKeyRequest, caller: CurrentUser, session: Session
) -> CreatePublicKeyResponse:
    """Validates the OpenSSH key; the same key twice for one user is a 409."""
    try:
        parsed = parse_public_key(body.public_key)
    except SSHKeyError as exc:
        raise Invalid(f"publicKey: {exc}") from None
    if await db.find_user_key(session, user_id=caller.id, fingerprint=parsed.fingerprint) is not None:
        raise Conflict(f"public key {parsed.fingerprint} is already registered")
    now = utcnow()
    key = PublicKey(
        user_id=caller.id,
        name=body.name,
        description=body.description,
        public_key=body.public_key.strip(),
        key_type=parsed.key_type,
        fingerprint=parsed.fingerprint,
        status=True,
        create_time=now,
        update_time=now,
    )
    session.add(key)
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"public key {parsed.fingerprint} is already registered") from exc
    return CreatePublicKeyResponse(id=key.id)


@router.get("/publickeys", response_model=ListResponse[PublicKeyView], summary="List the caller's keys")
async def list_public_keys(
    caller: CurrentUser,
    session: Session,
    page: KeyPaging,
    sort_by: Annotated[SortColumn, Query(alias="sortBy")] = "createTime",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> ListResponse[PublicKeyView]:
    """The caller's keys, newest first unless told otherwise."""
    total, keys = await db.list_user_keys(
        session,
        user_id=caller.id,
        sort_by=sort_by,
        descending=order == "desc",
        limit=page.limit,
        offset=page.offset,
    )
    return ListResponse[PublicKeyView](total_count=total, items=[public_key_view(k) for k in keys])


@router.delete("/publickeys/{id}", response_model=None, summary="Delete one of the caller's keys")
async def delete_public_key(id: KeyId, caller: CurrentUser, session: Session) -> None:
    """Removes the key for good."""
    await session.delete(await _own_key(session, caller, id))
    await session.commit()


@router.patch("/publickeys/{id}/status", response_model=None, summary="Enable or disable a key")
async def update_public_key_status(
    id: KeyId, body: UpdatePublicKeyStatusRequest, caller: CurrentUser, session: Session
) -> None:
    """Only enabled keys are accepted for SSH login."""
    key = await _own_key(session, caller, id)
    key.status = body.status
    key.update_time = utcnow()
    await session.commit()


@router.patch("/publickeys/{id}/description", response_model=None, summary="Describe a key")
async def update_public_key_description(
    id: KeyId, body: UpdatePublicKeyDescriptionRequest, caller: CurrentUser, session: Session
) -> None:
    """Replaces the description (at most 1024 characters)."""
    key = await _own_key(session, caller, id)
    key.description = body.description
    key.update_time = utcnow()
    await session.commit()
