"""Failure kinds: the `type` of every `ApplicationError` an activity raises.

Workflows decide what to retry and which phase a failure leads to by these names, so activities
and workflows share one spelling. Temporal matches `non_retryable_error_types` by string; a
`StrEnum` member is a `str`, so the members go into retry policies as they are.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    """Why an activity failed."""

    NOT_FOUND = "NotFound"
    """The resource (or one it needs) is gone."""
    INVALID = "Invalid"
    """Bad input or configuration: retrying cannot help."""
    CONFLICT = "Conflict"
    """The resource is not in a state to do this (a guarded transition refused)."""
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    """SSH login or registry credentials refused."""
    HOST_KEY_CHANGED = "HostKeyChanged"
    """The node's SSH host key differs from the one trusted on first use."""
    UNREACHABLE = "Unreachable"
    """The node did not answer over SSH (retried)."""
    COMMAND_FAILED = "CommandFailed"
    """A remote command exited non-zero."""
    SSH_ERROR = "SSHError"
    """Any other SSH failure."""
    HOSTNAME_FAILED = "HostnameFailed"
    """Setting the node's host name failed."""
    ADDON_FAILED = "AddonFailed"
    """An addon script failed or is unknown."""
    PROVISION_FAILED = "ProvisionFailed"
    """A cluster provisioner step failed."""
    REGISTRY_REJECTED = "RegistryRejected"
    """A registry refused the request (4xx): retrying cannot help."""
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    """A registry could not be reached or answered 5xx (retried)."""
    DIGEST_MISMATCH = "DigestMismatch"
    """Copied bytes did not hash to the expected digest (retried)."""
    CLUSTER_UNAVAILABLE = "ClusterUnavailable"
    """The cluster's execution driver could not be built or could not reach it (retried)."""
    BUSY = "Busy"
    """The workflow cannot take the request now (an import run that is finishing): ask again."""


NON_RETRYABLE: tuple[Failure, ...] = (
    Failure.NOT_FOUND,
    Failure.INVALID,
    Failure.CONFLICT,
    Failure.AUTHENTICATION_FAILED,
)
"""Failures no activity retries, whatever it does."""

FINAL_SSH: tuple[Failure, ...] = (
    *NON_RETRYABLE,
    Failure.HOST_KEY_CHANGED,
    Failure.HOSTNAME_FAILED,
    Failure.ADDON_FAILED,
)
"""Node onboarding failures that end the step at once (only an unreachable node is retried)."""

FINAL_PROVISION: tuple[Failure, ...] = (
    *NON_RETRYABLE,
    Failure.HOST_KEY_CHANGED,
    Failure.PROVISION_FAILED,
    Failure.COMMAND_FAILED,
    Failure.SSH_ERROR,
)
"""Provisioner failures that end the step at once."""

FINAL_REGISTRY: tuple[Failure, ...] = (*NON_RETRYABLE, Failure.REGISTRY_REJECTED)
"""Registry failures that end the step at once."""
