"""The error hierarchy. Each error carries upstream's `Primus.000NN` code and HTTP status.

Upstream's other generic codes get a class when something here raises them: 00006 (entity too
large: answered by `api/body_limit.py` before any route), 00007 (not implemented, 501),
00008 (quota insufficient, 503) and 00010 (resource processing, 409). Upstream has no code for
429, so `Primus.00012` (too many requests) is ours, the next free generic code.
"""

from __future__ import annotations


class PrimusError(Exception):
    """Base of every error the API reports as `{"errorCode", "errorMessage"}`."""

    code = "Primus.00001"
    status = 500
    prefix = "Internal error. "

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def error_message(self) -> str:
        """The message as clients see it, with upstream's prefix."""
        return f"{self.prefix}{self.message}" if self.prefix else self.message


class InternalError(PrimusError):
    """An unexpected failure (500)."""


class Invalid(PrimusError):
    """Bad request: the input is wrong (400)."""

    code = "Primus.00002"
    status = 400
    prefix = "Bad request. "


class Forbidden(PrimusError):
    """The caller may not do this (403)."""

    code = "Primus.00003"
    status = 403
    prefix = ""


class Conflict(PrimusError):
    """The resource already exists or is in a conflicting state (409)."""

    code = "Primus.00004"
    status = 409
    prefix = ""


class NotFound(PrimusError):
    """The resource does not exist, or the caller may not know it exists (404)."""

    code = "Primus.00005"
    status = 404
    prefix = ""

    def __init__(self, kind: str, name: str | int | None = None, message: str | None = None) -> None:
        super().__init__(
            message or (f"{kind} {name} not found." if name is not None else f"{kind} not found.")
        )
        self.kind = kind
        self.name = name


class Unauthenticated(PrimusError):
    """No valid credentials (401)."""

    code = "Primus.00009"
    status = 401
    prefix = ""


class UserNotRegistered(PrimusError):
    """The token names a user that no longer exists (401)."""

    code = "Primus.00011"
    status = 401
    prefix = ""


class TooManyRequests(PrimusError):
    """Too many failed attempts: try again after `retry_after` seconds (429, `Retry-After`)."""

    code = "Primus.00012"
    status = 429
    prefix = ""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InUse(Conflict):
    """The resource is referenced by another and cannot be removed (409)."""


class Busy(Conflict):
    """Another operation is processing the resource (409, upstream's resource-processing code)."""

    code = "Primus.00010"


class LimitReached(PrimusError):
    """The caller already uses as many of something as allowed at once (429, `Primus.00012`)."""

    code = "Primus.00012"
    status = 429
    prefix = ""


class Unavailable(PrimusError):
    """This process cannot serve the request now (503)."""

    status = 503
    prefix = ""


_KIND_CODES = {
    "Workload": "Primus.01001",
    "ResourceTemplate": "Primus.01002",
    "Workspace": "Primus.02001",
    "Node": "Primus.03002",
}


def not_found(kind: str, name: str | int) -> NotFound:
    """A NotFound with upstream's kind-specific code where one exists."""
    err = NotFound(kind, name)
    err.code = _KIND_CODES.get(kind, NotFound.code)
    return err
