"""Secrets (ssh and image credentials), encrypted at rest, and their decryption for activities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.clusters import cluster_ids_using_secret
from db.encryption import DecryptionError, SecretBox
from db.nodes import node_ids_using
from domain.errors import Invalid, NotFound
from domain.secrets import RegistryCredential, SSHCredentials
from domain.ssh_keys import decode_base64, openssh_private_key


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


async def get_secret(session: AsyncSession, *, secret_id: str) -> Secret | None:
    """The secret with `secret_id`, or None."""
    return await session.get(Secret, secret_id)


async def list_secrets(
    session: AsyncSession, *, types: Sequence[str] = (), limit: int, offset: int
) -> tuple[int, list[Secret]]:
    """(total matches, one page) of secrets of the given types (all when empty), sorted by id."""
    condition = Secret.type.in_(list(types)) if types else true()
    total = (await session.execute(select(func.count()).select_from(Secret).where(condition))).scalar_one()
    query = select(Secret).where(condition).order_by(Secret.id).limit(limit).offset(offset)
    page = await session.execute(query)
    return int(total), list(page.scalars())


async def secret_users(session: AsyncSession, *, secret_id: str) -> list[str]:
    """Ids of the nodes and clusters that reference the secret (a secret in use cannot be deleted).

    Nodes by `sshSecretId`; clusters by their ssh and image secret ids.
    """
    nodes = await node_ids_using(session, "ssh_secret_id", secret_id)
    return nodes + await cluster_ids_using_secret(session, secret_id=secret_id)


def decrypt_params(box: SecretBox, secret: Secret) -> list[dict[str, Any]]:
    """The stored params as validated on write (camelCase keys; base64 fields still encoded)."""
    params = box.decrypt_json(secret.params_encrypted)
    if not isinstance(params, list):
        raise DecryptionError(f"secret {secret.id} holds malformed params")
    return [dict(p) for p in params]


def _b64text(value: str) -> str:
    return decode_base64(value, field="secret field").decode() if value else ""


def load_ssh_credentials(box: SecretBox, secret: Secret) -> SSHCredentials:
    """Decrypt an ssh secret into login credentials (the private key re-encoded in OpenSSH format)."""
    if secret.type != "ssh":
        raise Invalid(f"secret {secret.id} is of type {secret.type}, not ssh")
    param = decrypt_params(box, secret)[0]
    private = param.get("privateKey", "")
    return SSHCredentials(
        username=param["username"],
        password=param.get("password", ""),
        private_key_pem=openssh_private_key(decode_base64(private, field="privateKey")) if private else "",
        public_key=_b64text(param.get("publicKey", "")).strip(),
    )


def load_image_credentials(box: SecretBox, secret: Secret) -> list[RegistryCredential]:
    """Decrypt an image secret into one credential per registry server."""
    if secret.type != "image":
        raise Invalid(f"secret {secret.id} is of type {secret.type}, not image")
    return [
        RegistryCredential(server=p["server"], username=p["username"], password=_b64text(p["password"]))
        for p in decrypt_params(box, secret)
    ]


async def ssh_credentials(session: AsyncSession, box: SecretBox, *, secret_id: str) -> SSHCredentials:
    """The login credentials of ssh secret `secret_id`; NotFound when it does not exist."""
    secret = await get_secret(session, secret_id=secret_id)
    if secret is None:
        raise NotFound("Secret", secret_id)
    return load_ssh_credentials(box, secret)


async def image_credentials(
    session: AsyncSession, box: SecretBox, *, secret_id: str
) -> list[RegistryCredential]:
    """The registry credentials of image secret `secret_id`; NotFound when it does not exist."""
    secret = await get_secret(session, secret_id=secret_id)
    if secret is None:
        raise NotFound("Secret", secret_id)
    return load_image_credentials(box, secret)
