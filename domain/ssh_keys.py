"""OpenSSH keys: parse and validate public and private keys, match key pairs, compute fingerprints.

Pure functions over text and bytes (no I/O). Supported key types: RSA (at least 1024 bits),
ECDSA on NIST P-256/P-384/P-521 and Ed25519. Every problem raises `SSHKeyError` with a message
that can be shown to the client as is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PUBLIC_KEY_TYPES = (
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-ed25519",
)
MIN_RSA_BITS = 1024
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_OPENSSH_PRIVATE_HEADER = b"-----BEGIN OPENSSH PRIVATE KEY-----"

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class SSHKeyError(ValueError):
    """A key cannot be used; the message says why."""


@dataclass(frozen=True)
class PublicKeyInfo:
    """A parsed OpenSSH public key."""

    key_type: str
    """The OpenSSH type name, e.g. `ssh-ed25519`."""
    blob: bytes
    """The decoded key body (the wire-format key, which starts with the type name)."""
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """The SHA256 fingerprint exactly as `ssh-keygen -l` prints it: `SHA256:<unpadded base64>`."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def openssh(self) -> str:
        """`<type> <base64 body>` without the comment (one authorized_keys entry)."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    def same_key(self, other: PublicKeyInfo) -> bool:
        """True when both describe the same key (comments are ignored)."""
        return self.key_type == other.key_type and self.blob == other.blob


def decode_base64(text: str, *, field: str) -> bytes:
    """Decode standard base64 (whitespace and line breaks allowed); SSHKeyError naming `field`."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SSHKeyError(f"{field} is not valid base64") from exc


def _check_rsa_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise SSHKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits (this one has {bits})")


def parse_public_key(text: str) -> PublicKeyInfo:
    """Parse one OpenSSH public key line `<type> <base64> [comment]`.

    The body must decode, be of the declared type and be a valid key of a supported type.
    """
    line = text.strip()
    if not line:
        raise SSHKeyError("the public key is empty")
    if "\n" in line or "\r" in line:
        raise SSHKeyError("the public key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise SSHKeyError("the public key must look like '<type> <base64 key> [comment]'")
    key_type, body = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if key_type not in PUBLIC_KEY_TYPES:
        raise SSHKeyError(
            f"unsupported public key type {key_type[:40]!r}; supported: {', '.join(PUBLIC_KEY_TYPES)}"
        )
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SSHKeyError("the public key body is not valid base64") from exc
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {body}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SSHKeyError(f"the public key is not a valid {key_type} key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key.key_size)
    return PublicKeyInfo(key_type=key_type, blob=blob, comment=comment)


def parse_private_key(data: bytes) -> PrivateKey:
    """Load an unencrypted private key in OpenSSH or PEM (PKCS#1, SEC1, PKCS#8) format."""
    text = data.strip()
    if not text:
        raise SSHKeyError("the private key is empty")
    key: object
    try:
        if text.startswith(_OPENSSH_PRIVATE_HEADER):
            key = serialization.load_ssh_private_key(text, password=None)
        else:
            key = serialization.load_pem_private_key(text, password=None)
    except TypeError as exc:
        raise SSHKeyError("the private key is protected by a passphrase; provide an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SSHKeyError("the private key is not a valid OpenSSH or PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_size(key.key_size)
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise SSHKeyError(f"unsupported ECDSA curve {key.curve.name}; use P-256, P-384 or P-521")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise SSHKeyError("unsupported private key type; use RSA, ECDSA or Ed25519")


def public_key_of(private_key: PrivateKey) -> PublicKeyInfo:
    """The OpenSSH public key belonging to `private_key`."""
    line = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return parse_public_key(line.decode())


def check_key_pair(private_key_data: bytes, public_key_text: str) -> PublicKeyInfo:
    """Parse both keys and insist they form a pair; returns the public key."""
    private_key = parse_private_key(private_key_data)
    public = parse_public_key(public_key_text)
    if not public_key_of(private_key).same_key(public):
        raise SSHKeyError("the public key does not match the private key")
    return public


def openssh_private_key(private_key_data: bytes) -> str:
    """The key re-encoded in the OpenSSH private key format (readable by paramiko for every type)."""
    key = parse_private_key(private_key_data)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
