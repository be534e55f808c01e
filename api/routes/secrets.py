"""Secrets (ssh and image credentials): system administrators only, for every verb.

Params are stored encrypted as one JSON list; responses blank every password and private key.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, Paging, Session, State
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.secrets import (
    CreateSecretRequest,
    CreateSecretResponse,
    ImageParamView,
    SecretView,
    SSHParamView,
    UpdateSecretRequest,
    parse_params,
)
from db import secrets as db
from db.encryption import SecretBox
from db.secrets import Secret
from domain.errors import Conflict, InUse, Invalid, NotFound
from domain.secrets import SECRET_TYPES, SecretType
from domain.timefmt import format_time, utcnow

router = APIRouter(tags=["secrets"], responses=ERROR_RESPONSES)


def stored_type(secret: Secret) -> SecretType:
    """The secret's type (only validated types are ever stored)."""
    return cast(SecretType, secret.type)


def secret_view(box: SecretBox, secret: Secret) -> SecretView:
    """The API view: passwords and private keys are returned as ""."""
    stored = db.decrypt_params(box, secret)
    params: list[SSHParamView | ImageParamView | dict[str, str]]
    if secret.type == "ssh":
        params = [SSHParamView(username=p["username"], public_key=p.get("publicKey", "")) for p in stored]
    elif secret.type == "general":
        params = [dict.fromkeys(p, "") for p in stored]
    else:
        params = [ImageParamView(server=p["server"], username=p["username"]) for p in stored]
    return SecretView(
        secret_id=secret.id,
        secret_name=secret.name,
        type=stored_type(secret),
        params=params,
        creation_time=format_time(secret.created_at),
        bind_all_workspaces=secret.bind_all_workspaces,
    )


def _check_bind_flag(secret_type: str, bind_all_workspaces: bool | None) -> None:
    if bind_all_workspaces and secret_type != "image":
        raise Invalid("bindAllWorkspaces: only image secrets can be bound to all workspaces")


def _encrypted_params(box: SecretBox, secret_type: SecretType, raw: list[dict[str, Any]]) -> str:
    params = parse_params(secret_type, raw)
    return box.encrypt_json([p.model_dump(by_alias=True) for p in params])


async def _get(session: Session, secret_id: str) -> Secret:
    secret = await db.get_secret(session, secret_id=secret_id)
    if secret is None:
        raise NotFound("Secret", secret_id)
    return secret


@router.post("/secrets", response_model=CreateSecretResponse, summary="Create a secret (admin)")
async def create_secret(
    body: CreateSecretRequest, _: Admin, session: Session, state: State
) -> CreateSecretResponse:
    """The secret id is its name; a taken name is a 409."""
    _check_bind_flag(body.type, body.bind_all_workspaces)
    encrypted = _encrypted_params(state.box, body.type, body.params)
    if await db.get_secret(session, secret_id=body.name) is not None:
        raise Conflict(f"secret {body.name} already exists")
    now = utcnow()
    session.add(
        Secret(
            id=body.name,
            name=body.name,
            type=body.type,
            params_encrypted=encrypted,
            bind_all_workspaces=body.bind_all_workspaces,
            resource_version=1,
            created_at=now,
            updated_at=now,
        )
    )
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"secret {body.name} already exists") from exc
    return CreateSecretResponse(secret_id=body.name)


@router.get("/secrets", response_model=ListResponse[SecretView], summary="List secrets (admin)")
async def list_secrets(
    _: Admin,
    session: Session,
    state: State,
    page: Paging,
    secret_type: Annotated[
        str | None, Query(alias="type", max_length=64, description="Comma list of ssh,image,general")
    ] = None,
) -> ListResponse[SecretView]:
    """Secrets sorted by id, optionally of some types only."""
    types = sorted({t.strip() for t in (secret_type or "").split(",") if t.strip()})
    unknown = [t for t in types if t not in SECRET_TYPES]
    if unknown:
        raise Invalid(f"type: unknown secret type {', '.join(unknown)}; use ssh, image or general")
    total, secrets = await db.list_secrets(session, types=types, limit=page.limit, offset=page.offset)
    return ListResponse[SecretView](total_count=total, items=[secret_view(state.box, s) for s in secrets])


@router.get("/secrets/{SecretId}", response_model=SecretView, summary="Get a secret (admin)")
async def get_secret(SecretId: str, _: Admin, session: Session, state: State) -> SecretView:
    """One secret, without its passwords or private key."""
    return secret_view(state.box, await _get(session, SecretId))


@router.patch("/secrets/{SecretId}", response_model=None, summary="Update a secret (admin)")
async def update_secret(
    SecretId: str, body: UpdateSecretRequest, _: Admin, session: Session, state: State
) -> None:
    """Replace the params (checked against the secret's type) and/or the bind flag."""
    secret = await _get(session, SecretId)
    _check_bind_flag(secret.type, body.bind_all_workspaces)
    if body.params is None and body.bind_all_workspaces is None:
        return
    if body.params is not None:
        secret.params_encrypted = _encrypted_params(state.box, stored_type(secret), body.params)
    if body.bind_all_workspaces is not None:
        secret.bind_all_workspaces = body.bind_all_workspaces
    secret.resource_version += 1
    secret.updated_at = utcnow()
    await session.commit()


@router.delete("/secrets/{SecretId}", response_model=None, summary="Delete a secret (admin)")
async def delete_secret(SecretId: str, _: Admin, session: Session) -> None:
    """Refused (409) while a node or cluster uses the secret."""
    secret = await _get(session, SecretId)
    users = await db.secret_users(session, secret_id=secret.id)
    if users:
        raise InUse(f"secret {secret.id} is used by {', '.join(users)}")
    await session.delete(secret)
    await session.commit()
