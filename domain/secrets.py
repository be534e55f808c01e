"""Secret types and the decrypted credentials that node and image work use.

Credentials are plain frozen dataclasses whose secret fields are left out of `repr`, so a stray
log line cannot print them. They are loaded inside activities (never passed through workflow
inputs, which Temporal records in its history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

SecretType = Literal["ssh", "image", "general"]
"""`general` (upstream's console has it): free key/value params, encrypted like the others."""
SECRET_TYPES: tuple[str, ...] = get_args(SecretType)


@dataclass(frozen=True)
class SSHCredentials:
    """How to log in to a node over SSH: a password, a key pair, or both."""

    username: str
    password: str = field(default="", repr=False)
    private_key_pem: str = field(default="", repr=False)
    """The private key in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`), or ""."""
    public_key: str = ""
    """The matching OpenSSH public key line, or ""."""


@dataclass(frozen=True)
class RegistryCredential:
    """Pull credentials for one registry server."""

    server: str
    username: str
    password: str = field(repr=False)


def registry_host(server: str) -> str:
    """A server name in comparable form: lower case, no scheme, no trailing slash."""
    value = server.strip().lower()
    for scheme in ("https://", "http://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
    return value.rstrip("/")
