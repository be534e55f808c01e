"""Identifier rules: DNS-1123 names, normalisation and generated suffixes."""

from __future__ import annotations

import re
import secrets

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DISPLAY_NAME = re.compile(r"^[a-z][-a-z0-9.]{0,43}[a-z0-9]$")
MAX_NAME_LEN = 63
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def normalize_name(name: str) -> str:
    """Upstream's NormalizeName: trim, lower-case, `_` to `-`."""
    return name.strip().lower().replace("_", "-")


def is_dns1123_label(name: str) -> bool:
    """True for a valid DNS-1123 label (lower-case alphanumerics and '-', at most 63 chars)."""
    return len(name) <= MAX_NAME_LEN and bool(DNS1123_LABEL.match(name))


def dns1123_error(name: str) -> str | None:
    """Why `name` is not a DNS-1123 label, or None when it is one."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LEN:
        return f"must be at most {MAX_NAME_LEN} characters"
    if not DNS1123_LABEL.match(name):
        return (
            "must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character"
        )
    return None


def random_suffix(length: int = 5) -> str:
    """Random characters from the Kubernetes name-generation alphabet."""
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(length))
