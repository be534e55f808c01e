"""Encryption of secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class DecryptionError(RuntimeError):
    """Stored ciphertext cannot be read with the configured key."""


class SecretBox:
    """Encrypts and decrypts text and JSON values with one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext for `plaintext` (empty stays empty, so absent passwords cost nothing)."""
        if plaintext == "":
            return ""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """Plaintext for `ciphertext`."""
        if ciphertext == "":
            return ""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("stored secret cannot be decrypted with the configured key") from exc

    def encrypt_json(self, value: Any) -> str:
        """Ciphertext for a JSON-serialisable value."""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def decrypt_json(self, ciphertext: str) -> Any:
        """The JSON value behind `ciphertext`."""
        try:
            return json.loads(self._fernet.decrypt(ciphertext.encode()))
        except InvalidToken as exc:
            raise DecryptionError("stored secret cannot be decrypted with the configured key") from exc
