"""Image registry addresses: validation and normalisation of the URL an admin configures."""

from __future__ import annotations

import re

from domain.images import server_refusal

_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"^(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}))?(?P<path>(?:/[A-Za-z0-9._-]+)*)/?$")
_SCHEMES = ("http://", "https://")


def normalize_registry_url(text: str) -> str:
    """`http(s)://host[:port][/path]` or a bare `host[:port][/path]`; scheme and host lower-cased,
    no trailing slash. Raises ValueError explaining what is wrong."""
    url = text
    scheme = ""
    lowered = url.lower()
    for candidate in _SCHEMES:
        if lowered.startswith(candidate):
            scheme, url = candidate, url[len(candidate) :]
            break
    else:
        if "://" in url:
            raise ValueError("the scheme must be http:// or https:// (or none)")
    match = _ADDRESS.match(url)
    if match is None:
        raise ValueError("must look like https://host[:port][/path] or host[:port][/path]")
    port = match["port"]
    if port is not None and not 0 < int(port) <= 65535:
        raise ValueError(f"port {port} is out of range")
    address = match["host"].lower() + (f":{port}" if port else "") + match["path"]
    why = server_refusal(address)
    if why:
        raise ValueError(why)
    return scheme + address


def registry_address(url: str) -> str:
    """The registry as image references name it: the URL without its scheme (`host[:port][/path]`)."""
    for scheme in _SCHEMES:
        if url.startswith(scheme):
            return url[len(scheme) :]
    return url
